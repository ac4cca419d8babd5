"""The one result type every method returns: :class:`Attribution`.

Everything spatial in an :class:`Attribution` is in the **input frame** (the image
the caller passed in, native pixels). It is immutable (arrays are read-only),
round-trips losslessly through JSON (arrays are stored as zlib-compressed
little-endian bytes in base64, with dtype and shape), renders an overlay PNG and
hands Captum's visualisers what they accept.

Example::

    >>> result = attribute("phantom-qwen", "cxr.png", "Is there evidence of nodule in the image?",
    ...                    method="occlusion")                      # doctest: +SKIP
    >>> result.heatmap.shape == result.image.shape                   # doctest: +SKIP
    True
    >>> result.save("overlay.png"); result.save("result.json")      # doctest: +SKIP
    >>> Attribution.load("result.json") == result                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from .errors import CxrAttribError, DataError
from .typing import GreyImage, Heatmap, TokenGrid

__all__ = ["Attribution", "Box", "Concept", "Target", "TokenScore", "Meta"]

Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in input-frame pixels, exclusive ends."""


def _frozen_array(array: Any, dtype: Any) -> np.ndarray | None:
    if array is None:
        return None
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _encode_array(array: np.ndarray | None) -> dict[str, Any] | None:
    if array is None:
        return None
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {
        "dtype": array.dtype.str.lstrip("<>|="),
        "shape": list(array.shape),
        "encoding": "zlib+base64",
        "data": base64.b64encode(zlib.compress(data.tobytes(), 6)).decode("ascii"),
    }


MAX_ARRAY_BYTES = 1 << 30
"""Largest array (bytes once inflated) a result file may hold: 1 GiB, far above a
100-megapixel float32 heatmap (400 MB). Checked before and while inflating."""

_ARRAY_DTYPES = ("f4", "u1")


def _decode_array(obj: Mapping[str, Any] | None, name: str = "array") -> np.ndarray | None:
    if obj is None:
        return None
    if obj.get("encoding") != "zlib+base64":
        raise CxrAttribError(f"unknown array encoding {obj.get('encoding')!r}; expected 'zlib+base64'")
    dtype, shape = obj.get("dtype"), obj.get("shape")
    if dtype not in _ARRAY_DTYPES:
        raise CxrAttribError(f"{name}: array dtype {dtype!r} is not one of {_ARRAY_DTYPES}")
    if not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                              for v in shape):
        raise CxrAttribError(f"{name}: array shape {shape!r} is not a list of non-negative whole numbers")
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > MAX_ARRAY_BYTES:
        raise CxrAttribError(
            f"{name}: the array claims shape {shape} ({size:,} bytes), more than the limit of "
            f"{MAX_ARRAY_BYTES:,} bytes; the result file is corrupt or hostile"
        )
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(base64.b64decode(obj["data"], validate=True), size + 1)
    except (zlib.error, ValueError, TypeError) as error:
        raise CxrAttribError(f"{name}: the array data is not valid zlib+base64 ({error})") from None
    if len(raw) != size or not inflater.eof or inflater.unconsumed_tail:
        raise CxrAttribError(
            f"{name}: the array data inflates to {'more than ' if len(raw) > size else ''}{len(raw):,} "
            f"bytes; shape {shape} of {dtype} needs exactly {size:,}"
        )
    return np.frombuffer(raw, dtype=np.dtype("<" + dtype)).reshape(shape).astype(dtype)


@contextmanager
def _field(source: str, name: str) -> Iterator[None]:
    """Turn any problem while reading field ``name`` of ``source`` into one DataError."""
    try:
        yield
    except KeyError as exc:
        raise DataError(f"{source}: field {name!r} is missing key {exc.args[0]!r}") from exc
    except (CxrAttribError, TypeError, ValueError, AttributeError, zlib.error, binascii.Error) as exc:
        raise DataError(f"{source}: field {name!r} is malformed ({type(exc).__name__}: {exc})") from exc


def _boxes(boxes: Any) -> tuple[Box, ...]:
    out = tuple(tuple(float(v) for v in box) for box in boxes)
    for box in out:
        if len(box) != 4:
            raise ValueError(f"box {list(box)} has {len(box)} values; expected 4 (x1, y1, x2, y2)")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Target:
    """What was explained.

    Attributes:
        text (str): the assistant response that was teacher-forced.
        policy (str): span policy (``answer``, ``response`` or ``turn``).
        mode (str): prompt mode (``direct`` or ``reasoning``).
        token_ids (tuple[int, ...]): ids of the target tokens.
        tokens (tuple[str, ...]): the target tokens as strings.
    """

    text: str
    policy: str
    mode: str
    token_ids: tuple[int, ...] = ()
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class Concept:
    """A concept's score and region(s).

    Attributes:
        name (str): e.g. ``"left_lung"`` or ``"bilateral_lungs"``.
        score (float): its attribution (MedFocus: log-prob drop in nats).
        boxes (tuple[Box, ...]): its boxes in the input frame.
    """

    name: str
    score: float
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class TokenScore:
    """One target token's attribution score."""

    token: str
    token_id: int
    score: float


@dataclass(frozen=True)
class Meta:
    """How a result was made.

    Attributes:
        method (str): method name.
        model (str): model reference (registry key, id or folder).
        params (Mapping[str, Any]): every hyper-parameter used (defaults included).
        seed (int): the seed.
        question (str): the base question.
        prompt (str): the user turn sent to the model.
        unit (str): what the heatmap / scores measure.
        image_size (tuple[int, int]): input (H, W).
        working_size (int): side S of the working frame.
        wall_time_s (float): seconds spent in the method.
        passes (Mapping[str, int]): forward / backward calls and sequences.
        versions (Mapping[str, str]): library versions.
        info (Mapping[str, Any]): method-specific facts.
        warnings (tuple[str, ...]): what may make the result misleading, e.g. an
            input image that loading left constant.
    """

    method: str
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    question: str = ""
    prompt: str = ""
    unit: str = ""
    image_size: tuple[int, int] = (0, 0)
    working_size: int = 224
    wall_time_s: float = 0.0
    passes: Mapping[str, int] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("params", "passes", "versions", "info"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))


def _plain(value: Any) -> Any:
    """JSON-ready copy of nested mappings / sequences."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True, eq=False)
class Attribution:
    """One attribution of one answer of one model for one image.

    Attributes:
        answer (str): the model's answer (given or generated).
        target (Target): the explained tokens and the span policy.
        heatmap (np.ndarray | None): (H, W) float32 scores in the input frame.
        grid (np.ndarray | None): (gh, gw) float32 raw scores on the image-token grid.
        boxes (tuple[Box, ...]): evidence boxes in the input frame, most important first.
        concepts (Mapping[str, Concept]): concept name -> concept (may be empty).
        tokens (tuple[TokenScore, ...]): per-target-token scores (may be empty).
        meta (Meta): method, model, parameters, seed, timing, passes, versions.
        image (np.ndarray | None): (H, W) uint8 grey input image, for overlays.
    """

    schema_version: ClassVar[int] = 1

    answer: str
    target: Target
    meta: Meta
    heatmap: Heatmap | None = None
    grid: TokenGrid | None = None
    boxes: tuple[Box, ...] = ()
    concepts: Mapping[str, Concept] = field(default_factory=dict)
    tokens: tuple[TokenScore, ...] = ()
    image: GreyImage | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "heatmap", _frozen_array(self.heatmap, np.float32))
        set_(self, "grid", _frozen_array(self.grid, np.float32))
        set_(self, "image", _frozen_array(self.image, np.uint8))
        set_(self, "boxes", _boxes(self.boxes))
        set_(self, "tokens", tuple(self.tokens))
        set_(self, "concepts", MappingProxyType(dict(self.concepts)))
        if self.heatmap is not None and self.image is not None and self.heatmap.shape != self.image.shape:
            raise CxrAttribError(
                f"heatmap shape {self.heatmap.shape} differs from image shape {self.image.shape}; "
                "both must be in the input frame"
            )

    # -- equality ------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attribution):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    # -- convenience ---------------------------------------------------------------
    @property
    def peak(self) -> tuple[int, int] | None:
        """(x, y) input-frame pixel of the heatmap's maximum (first in row-major order)."""
        if self.heatmap is None:
            return None
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(x), int(y)

    def with_image(self, image: GreyImage | None) -> Attribution:
        """A copy holding ``image`` (or none: ``None`` keeps results small)."""
        from dataclasses import replace

        return replace(self, image=image)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into an equal result."""
        return {
            "schema_version": self.schema_version,
            "answer": self.answer,
            "target": _plain(vars(self.target)),
            "meta": _plain({f.name: getattr(self.meta, f.name) for f in fields(self.meta)}),
            "heatmap": _encode_array(self.heatmap),
            "grid": _encode_array(self.grid),
            "boxes": [list(b) for b in self.boxes],
            "concepts": [
                {"name": c.name, "score": c.score, "boxes": [list(b) for b in c.boxes]}
                for c in self.concepts.values()
            ],
            "tokens": [vars(t) for t in self.tokens],
            "image": _encode_array(self.image),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "result") -> Attribution:
        """Rebuild a result from :meth:`to_dict` output.

        Args:
            data: the dict.
            source: where it came from, for messages (e.g. the file name).

        Raises:
            DataError: not an object, an unknown ``schema_version``, or a missing or
                malformed field (the message names ``source`` and the field).
        """
        if not isinstance(data, Mapping):
            raise DataError(f"{source}: expected a JSON object (an attribution result), got {type(data).__name__}")
        version = data.get("schema_version")
        if version != cls.schema_version:
            raise DataError(
                f"{source}: attribution schema_version {version!r} is not supported; expected {cls.schema_version}"
            )
        values: dict[str, Any] = {}
        readers = {
            "answer": lambda raw: _checked(raw, str),
            "target": lambda raw: Target(
                text=_checked(raw["text"], str), policy=_checked(raw["policy"], str), mode=_checked(raw["mode"], str),
                token_ids=tuple(int(i) for i in raw["token_ids"]), tokens=tuple(_checked(t, str) for t in raw["tokens"]),
            ),
            "meta": lambda raw: Meta(**{**raw, "image_size": tuple(raw["image_size"])}),
            "heatmap": lambda raw: _decode_array(raw, "heatmap"),
            "grid": lambda raw: _decode_array(raw, "grid"),
            "boxes": _boxes,
            "concepts": lambda raw: {
                c["name"]: Concept(_checked(c["name"], str), float(c["score"]), _boxes(c["boxes"])) for c in raw
            },
            "tokens": lambda raw: tuple(
                TokenScore(_checked(t["token"], str), int(t["token_id"]), float(t["score"])) for t in raw
            ),
            "image": lambda raw: _decode_array(raw, "image"),
        }
        for name, read in readers.items():
            with _field(source, name):
                values[name] = read(data[name])
        with _field(source, "heatmap"):
            return cls(**values)

    def to_json(self) -> str:
        """The result as a JSON string (non-finite floats are written as null)."""
        return json.dumps(_finite(self.to_dict()), allow_nan=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "result JSON") -> Attribution:
        """Inverse of :meth:`to_json`.

        Raises:
            DataError: not JSON, or a missing or malformed field (names ``source``).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source} is not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike, *more: str | os.PathLike, overwrite: bool = True) -> list[str]:
        """Write ``.json`` (the whole result) and / or ``.png`` (an overlay) files.

        Several paths (e.g. ``save("a.png", "a.json")``) are written as one unit with
        :func:`cxr_attrib.outputs.write_files`: every file is complete in a temporary
        file before any is moved into place, and a failure or interruption leaves
        the old files (or none) rather than a new / old mix.

        Args:
            path: destination; its suffix picks the format.
            *more: further destinations written together with ``path``.
            overwrite: replace existing files (atomically). Default: True.

        Returns:
            list[str]: the destinations that existed and were replaced.

        Raises:
            CxrAttribError: unknown suffix or a PNG requested from a result without its image.
            OutputError: an existing file with ``overwrite=False``, or a folder.
        """
        from .outputs import write_files

        payloads: dict[str, bytes] = {}
        for target in (path, *more):
            target = os.fspath(target)
            suffix = os.path.splitext(target)[1].lower()
            if suffix not in (".json", ".png"):
                raise CxrAttribError(f"cannot save to {target!r}: expected a .json or .png file name")
            payloads[target] = self.to_json().encode("utf-8") if suffix == ".json" else self._overlay_png()
        return [os.fspath(p) for p in write_files(payloads, overwrite=overwrite)]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Attribution:
        """Read a result written by :meth:`save` (``.json``).

        Raises:
            DataError: unreadable, not UTF-8 JSON, or a missing or malformed field
                (names the file and the field).
        """
        from .safeio import read_text

        text = read_text(path, what="result file")
        return cls.from_json(text, source=repr(os.fspath(path)))

    # -- rendering -----------------------------------------------------------------
    def render(self, truth: Any = ()):  # -> PIL.Image.Image
        """The overlay: grey image, heatmap, evidence boxes, the ground truth when
        given, the answer as a caption and a legend strip
        (:func:`~cxr_attrib.render.render_overlay`).

        Args:
            truth (array-like): ``(M, 4)`` ground-truth boxes in the input frame, exclusive
                ends. Default: none.

        Raises:
            CxrAttribError: the result holds no image (it was dropped).
        """
        from .render import render_overlay

        if self.image is None:
            raise CxrAttribError("this result holds no image; use result.with_image(pixels) first")
        caption = f"{self.meta.method} | {self.meta.model} | answer: {self.answer.strip()[:60]}"
        return render_overlay(self.image, self.heatmap, self.boxes, caption, truth=truth, legend=True)

    def _overlay_png(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.render().save(buffer, format="PNG")
        return buffer.getvalue()

    # -- notebook display ------------------------------------------------------------
    def _repr_png_(self) -> bytes | None:
        """The overlay PNG, for Jupyter (None, i.e. not shown, without an image)."""
        return None if self.image is None else self._overlay_png()

    def _repr_html_(self) -> str:
        """The overlay with the answer, boxes, method, passes and time, every text escaped, for Jupyter."""
        from .display import attribution_html

        facts = [("question", self.meta.question), ("answer", self.answer.strip()),
                 ("boxes", ", ".join("(" + ", ".join(f"{v:g}" for v in box) + ")" for box in self.boxes) or "-"),
                 ("method", self.meta.method), ("model", self.meta.model),
                 ("passes", ", ".join(f"{k} {v}" for k, v in self.meta.passes.items()) or "-"),
                 ("time", f"{self.meta.wall_time_s:.2f} s"), *(("warning", w) for w in self.meta.warnings)]
        png = None if self.image is None else self._overlay_png()
        return attribution_html(png, f"{self.meta.method} on {self.meta.model}", facts)

    def plot(self, ax: Any = None, truth: Any = ()) -> Any:
        """Draw the overlay (heatmap, evidence boxes, ``truth`` when given) on a matplotlib axis.

        Args:
            ax (matplotlib.axes.Axes | None): the axis. Default: None (``plt.gca()``).
            truth (array-like): ``(M, 4)`` ground-truth boxes, input frame. Default: none.

        Returns:
            matplotlib.axes.Axes: the axis, in input-frame pixel coordinates.

        Raises:
            CxrAttribError: the result holds no image.
        """
        from .display import plot_overlay

        if self.image is None:
            raise CxrAttribError("this result holds no image; use result.with_image(pixels) first")
        title = f"{self.meta.method} | {self.meta.model} | answer: {self.answer.strip()[:60]}"
        return plot_overlay(self.image, self.heatmap, np.reshape(self.boxes, (-1, 4)), truth=np.reshape(truth, (-1, 4)),
                            title=title, ax=ax)

    def to_captum(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Arrays for ``captum.attr.visualization.visualize_image_attr``.

        Returns:
            ``(attr, original)``: attr (H, W, 1) float32 heatmap; original (H, W, 3)
            float32 image in [0, 1] (None without an image).

        Raises:
            CxrAttribError: the result has no heatmap.
        """
        if self.heatmap is None:
            raise CxrAttribError(f"method {self.meta.method!r} produced no heatmap to visualise")
        original = None
        if self.image is not None:
            original = np.repeat(self.image[..., None].astype(np.float32) / 255.0, 3, axis=2)
        return self.heatmap[..., None].astype(np.float32), original


def _checked(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
