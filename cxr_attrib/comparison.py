"""``compare()``: several methods on one image and one answer, side by side and scored.

The model is loaded once and answers once (greedy, or the given answer); every method
explains that answer. With a ground-truth box each result gets its IoU and pointing
game; with a model each gets its deletion gain (``score()``'s
``random_auc - deletion_auc``, positive = removing the method's pixels first hurts
the answer more than removing random pixels). A method that fails becomes an error
panel; the others still run. :meth:`Comparison.save` writes ``compare.png`` (one
panel per method), ``index.html`` (the same panels, a table and the said-vs-used
line, self-contained) and ``result-<method>.json`` per method.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .adapter import LoadOptions, Scorer
from .api import DEFAULT_METHOD, ImageSource, attribute, check_argument_types
from .errors import CxrAttribError, DataError, OutputError
from .frames import ResizePad
from .imageio import LoadedImage, load_image
from .models import load_adapter
from .registry import get_method
from .result import Attribution
from .scoring.localisation import region_metrics
from .scoring.score import Scores, score
from .targets import Mode, build_prompt
from .typing import BoxArray, GreyImage

__all__ = ["COMPARE_METHODS", "Comparison", "Panel", "SaidVsUsed", "check_truth", "compare"]

COMPARE_METHODS: tuple[str, ...] = (
    DEFAULT_METHOD, "occlusion", "integrated_gradients", "attention_rollout", "lrp", "prompting",
)
"""The default panel set: MedFocus and the strongest method of each family on the phantom
leaderboard (docs/phantom-methods.md; why each, in docs/user-guide.md#compare-methods)."""

SAID, USED = "prompting", (DEFAULT_METHOD, "occlusion")
"""The default said-vs-used pair: the box the model states when asked, and the regions its
answer causally depends on."""


@dataclass(frozen=True)
class Panel:
    """One method's outcome in a comparison.

    Attributes:
        method (str): the method name.
        result (Attribution | None): its result (input frame); None when it failed.
        scores (Scores | None): ``score()`` of the result (None when it failed).
        error (str | None): the one-line error of a failed method.
    """

    method: str
    result: Attribution | None
    scores: Scores | None
    error: str | None = None

    def metric(self, name: str) -> float | None:
        """A metric of :attr:`scores` (``iou``, ``pointing_game``, ``deletion_gain``, ...), or None."""
        return None if self.scores is None else getattr(self.scores, name)


@dataclass(frozen=True)
class SaidVsUsed:
    """The box a model states against the region its answer depends on (input frame).

    Attributes:
        said (str): the box-stating method; ``said_box`` is its first box.
        used (str): the method whose boxes (union) are the region used.
        said_box (tuple[float, ...] | None): the stated box, None when none was stated.
        iou (float): IoU of the stated box with the used region.
        said_truth (float | None): IoU of the stated box with the truth (None without truth).
        used_truth (float | None): IoU of the used region with the truth.
    """

    said: str
    used: str
    said_box: tuple[float, float, float, float] | None
    iou: float
    said_truth: float | None
    used_truth: float | None

    def line(self) -> str:
        """One sentence for people, e.g. ``said (10, 20, 90, 120) vs used by medfocus: IoU 0.41``."""
        box = "no box" if self.said_box is None else "(" + ", ".join(f"{v:g}" for v in self.said_box) + ")"
        text = f"the model says {box} ({self.said}); its answer depends on {self.used}'s region: IoU {self.iou:.2f}"
        if self.said_truth is not None:
            text += f"; said vs truth IoU {self.said_truth:.2f}, used vs truth IoU {self.used_truth:.2f}"
        return text


@dataclass(frozen=True, eq=False)
class Comparison:
    """Every method's result on one image, question and answer.

    Attributes:
        model (str): the model reference.
        question (str): the base question.
        answer (str): the answer every method explains.
        image (GreyImage): (H, W) uint8 input image.
        truth (BoxArray | None): (N, 4) ground-truth boxes, input pixels, exclusive ends.
        panels (tuple[Panel, ...]): one per method, in the order asked.
        said_vs_used (tuple[SaidVsUsed, ...]): the stated box against each used region
            (empty unless the said method and a used method both ran).
    """

    model: str
    question: str
    answer: str
    image: GreyImage
    truth: BoxArray | None
    panels: tuple[Panel, ...]
    said_vs_used: tuple[SaidVsUsed, ...] = ()

    def ranked(self) -> list[Panel]:
        """Panels by IoU, best first (no IoU, or failed, last; ties keep the asked order)."""
        return sorted(self.panels, key=lambda p: (p.metric("iou") is None, -(p.metric("iou") or 0.0)))

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``compare.png``, ``index.html`` and ``result-<method>.json`` into ``out_dir``.

        Args:
            out_dir (str | PathLike): the folder (created; it must not be a file).

        Returns:
            list[Path]: the files written.

        Raises:
            OutputError: ``out_dir`` is a file, or an output cannot be written.
        """
        from .compare_page import save_comparison

        return save_comparison(self, Path(check_out_dir(out_dir)))


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, refused when it exists and is not a folder."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {os.fspath(path)!r} is a file; name a folder (it is created)")
    return path


def check_truth(truth: Any, shape: tuple[int, int]) -> BoxArray:
    """Ground-truth boxes checked against the image: inside it and not inverted.

    Args:
        truth (array-like): (N, 4) or one (4,) box ``x1, y1, x2, y2``, input pixels.
        shape (tuple[int, int]): the image's (H, W).

    Returns:
        BoxArray: (N, 4) float64.

    Raises:
        DataError: not numbers, inverted or empty, or outside the image (names the box).
    """
    try:
        boxes = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        raise DataError(f"truth must be x1,y1,x2,y2 numbers, got {truth!r}") from None
    height, width = shape
    for box in boxes:
        x1, y1, x2, y2 = box
        text = ",".join(f"{v:g}" for v in box)
        if not np.isfinite(box).all() or x2 <= x1 or y2 <= y1:
            raise DataError(f"truth box {text} is inverted or empty: need x1 < x2 and y1 < y2")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise DataError(f"truth box {text} lies outside the {width} x {height} image (x in [0, {width}], "
                            f"y in [0, {height}])")
    return boxes


def _check_methods(names: Sequence[str]) -> list[str]:
    """Every method registered and its defaults valid, before anything loads (an unknown
    name raises :class:`UnknownMethodError` naming it and the closest registered names)."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise DataError("no methods to compare: name one or more (cxr-attrib methods lists them)")
    if len(set(names)) != len(names):
        raise DataError(f"methods repeat a name: {', '.join(names)}")
    for name in names:
        get_method(name).check_params({})
    return names


def _said_vs_used(panels: Sequence[Panel], truth: BoxArray | None, said: str,
                  used: Sequence[str]) -> tuple[SaidVsUsed, ...]:
    done = {p.method: p.result for p in panels if p.result is not None}
    if said not in done:
        return ()
    first = np.reshape(done[said].boxes, (-1, 4))[:1]
    out = []
    for name in used:
        if name not in done or name == said:
            continue
        region = np.reshape(done[name].boxes, (-1, 4))
        out.append(SaidVsUsed(
            said=said, used=name, said_box=tuple(float(v) for v in first[0]) if len(first) else None,
            iou=float(region_metrics(first, region).iou),
            said_truth=None if truth is None else float(region_metrics(first, truth).iou),
            used_truth=None if truth is None else float(region_metrics(region, truth).iou)))
    return tuple(out)


def compare(
    model: str | os.PathLike | Scorer,
    image: ImageSource,
    question: str,
    methods: Sequence[str] = COMPARE_METHODS,
    *,
    truth: Any = None,
    answer: str | None = None,
    mode: Mode = "direct",
    seed: int = 0,
    faithfulness: bool = True,
    load_options: LoadOptions | None = None,
    said: str = SAID,
    used: Sequence[str] = USED,
) -> Comparison:
    """Run several methods on one image and answer, and score each.

    Args:
        model (str | PathLike | Scorer): registry key, Hugging Face id, local folder or
            a loaded adapter (loaded once for every method).
        image: path (PNG/JPEG/TIFF/DICOM), bytes, PIL image or (H, W) array.
        question (str): the base question.
        methods (Sequence[str]): method names. Default: :data:`COMPARE_METHODS`.
        truth (array-like | None): (N, 4) or one (4,) ground-truth box in the image's
            own pixels (a DICOM's pixel frame), exclusive ends; None skips IoU and the
            pointing game. Default: None.
        answer (str | None): the answer to explain; None generates it once. Default: None.
        mode (str): ``"direct"`` or ``"reasoning"``. Default: ``"direct"``.
        seed (int): seed of every method and of the deletion curves. Default: 0.
        faithfulness (bool): score the deletion gain with the model. Default: True.
        load_options (LoadOptions | None): dtype / device settings. Default: None.
        said (str): the box-stating method of the said-vs-used line. Default: ``"prompting"``.
        used (Sequence[str]): the methods whose regions the answer depends on.
            Default: ``("medfocus", "occlusion")``.

    Returns:
        Comparison: one panel per method; ``comparison.save(folder)`` writes the sheet.

    Raises:
        UnknownMethodError, DataError: an unknown or repeated method (before any model
            loads), a truth box outside the image or inverted.
        ImageLoadError: an unreadable image.

    Examples::

        >>> c = compare("phantom-qwen", "cxr.png", "Is there evidence of nodule in the image?",  # doctest: +SKIP
        ...             methods=["occlusion", "prompting"], truth=[60, 80, 90, 110])
        >>> [(p.method, p.metric("iou")) for p in c.ranked()]  # doctest: +SKIP
    """
    check_argument_types("compare", model=model, image=image, question=question, answer=answer,
                         load_options=load_options)
    names = _check_methods(methods)
    loaded = image if isinstance(image, LoadedImage) else load_image(image)
    pixels = loaded.pixels
    boxes = None if truth is None else check_truth(truth, pixels.shape[:2])
    adapter = load_adapter(model, load_options or LoadOptions())
    if answer is None:  # one greedy answer, explained by every method
        working = ResizePad(*pixels.shape[:2], size=adapter.working_size).image_to_working(pixels)
        answer = adapter.generate(working, build_prompt(question, mode)).text
    panels = []
    for name in names:
        try:
            result = attribute(adapter, loaded, question, name, mode=mode, answer=answer, seed=seed)
        except CxrAttribError as exc:
            panels.append(Panel(name, None, None, _one_line(exc)))
            continue
        try:
            scores = score(result, boxes, model=adapter if faithfulness else None, image=pixels, seed=seed)
        except CxrAttribError as exc:
            panels.append(Panel(name, result, None, f"scoring failed: {_one_line(exc)}"))
            continue
        panels.append(Panel(name, result, scores))
    return Comparison(model=adapter.name, question=question, answer=answer, image=pixels, truth=boxes,
                      panels=tuple(panels), said_vs_used=_said_vs_used(panels, boxes, said, used))


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()
