"""The causal filter (see docs/benchmark-protocol.md): keep a sample only if its box really drives the answer.

A sample is kept iff the model answers "yes" on the original image, "no" once the
finding is removed inside its box, and still "yes" on two edits made only outside the
box (the paper's RadEdit prompts "No {finding}" and "No abnormality"). The edited
images come from a :class:`CounterfactualProvider`:

* :class:`FolderProvider`: pre-computed edits (e.g. RadEdit outputs) in a folder;
* :class:`InpaintProvider`: a simple in-painting fallback, flagged ``approximate``;
* the phantom suite's exact counterfactuals (same protocol).

All four images of a sample go through the same working frame (the resize-pad of the
original's size), and each gets one greedy answer. Records follow the MedGround-Bench
schema, plus ``kept`` and ``approximate``::

    {"model", "dataset", "index", "answer",
     "prediction_direct", "prediction_edited_direct",
     "prediction_edited_kept_direct", "prediction_edited_kept_normal_direct",
     "kept", "approximate"}

(reasoning mode: the four prediction keys end in ``_cot``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import spsolve

from .adapter import Adapter
from .counterfactuals import CounterfactualProvider, Counterfactuals
from .errors import DataError
from .safeio import regular_file_exists
from .frames import ResizePad
from .outputs import check_outputs, write_files
from .paths import ensure_outside_data
from .sample import Sample
from .targets import Mode, Verdict, build_prompt, parse_yes_no, validate_mode
from .typing import GreyImage

__all__ = [
    "Counterfactuals",
    "CounterfactualProvider",
    "FilterRecord",
    "FolderProvider",
    "InpaintProvider",
    "box_mask",
    "causal_filter",
    "check_records_path",
    "write_records",
]

_MODE_SUFFIX = {"direct": "direct", "reasoning": "cot"}
_EXPECTED: tuple[Verdict, ...] = ("yes", "no", "yes", "yes")


def _grey(image: Any, what: str) -> GreyImage:
    array = np.asarray(image)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{what} must be an (H, W) uint8 grey image, got {array.dtype} {array.shape}")
    return array


class FolderProvider(CounterfactualProvider):
    """Pre-computed edits (e.g. RadEdit outputs) stored as files.

    Layout, one subfolder per dataset, files named by the sample's index::

        <root>/<dataset>/<index>_edited.png              finding removed in its box
        <root>/<dataset>/<index>_edited_kept.png         outside edited ("No {finding}")
        <root>/<dataset>/<index>_edited_kept_normal.png  outside edited ("No abnormality")

    e.g. ``<root>/vindr_cxr/17_edited.png``. Any format :func:`cxr_attrib.imageio.load_image`
    reads works if named ``.png``; images are read as 8-bit grey and must have the
    original's size. Nothing is written under ``root``.

    Args:
        root (str | PathLike): the folder.
        approximate (bool): flag the edits as approximate. Default: False.

    Raises:
        DataError: ``root`` is not a folder.
    """

    SUFFIXES = ("_edited.png", "_edited_kept.png", "_edited_kept_normal.png")

    def __init__(self, root: str | os.PathLike, *, approximate: bool = False) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"counterfactual folder {os.fspath(root)!r} is not a folder; expected "
                f"<root>/<dataset>/<index>_edited.png, <index>_edited_kept.png and "
                f"<index>_edited_kept_normal.png"
            )
        self.approximate = approximate

    def paths(self, sample: Sample) -> tuple[Path, Path, Path]:
        """The three files of ``sample`` (removed, kept, kept_normal)."""
        folder = self.root / sample.dataset
        return tuple(folder / f"{sample.index}{suffix}" for suffix in self.SUFFIXES)  # type: ignore[return-value]

    def counterfactuals(self, sample: Sample) -> Counterfactuals:
        """Read the three edits of ``sample``.

        Raises:
            DataError: a file is missing (names it) or unreadable.
        """
        from .imageio import load_image

        images = []
        for path in self.paths(sample):
            if not regular_file_exists(path, what="counterfactual"):
                raise DataError(
                    f"missing counterfactual {path} for sample {sample.id!r}; expected "
                    f"<root>/<dataset>/<index>_edited.png, <index>_edited_kept.png and "
                    f"<index>_edited_kept_normal.png under {self.root}"
                )
            images.append(load_image(path).pixels)
        return Counterfactuals(*images, approximate=self.approximate)


def box_mask(boxes: Any, shape: tuple[int, int]) -> np.ndarray:
    """Pixels that overlap any box: pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``.

    Args:
        boxes (array-like): (N, 4) ``x1, y1, x2, y2`` in pixels, exclusive ends.
        shape (tuple[int, int]): (H, W) of the image.

    Returns:
        np.ndarray: (H, W) bool, True on every pixel with positive overlap.

    Examples::

        >>> box_mask([[0.5, 0, 2, 1]], (2, 3)).astype(int).tolist()
        [[1, 1, 0], [0, 0, 0]]
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c1, c2 = max(0, int(np.floor(x1))), min(width, int(np.ceil(x2)))
        r1, r2 = max(0, int(np.floor(y1))), min(height, int(np.ceil(y2)))
        if c2 > c1 and r2 > r1 and x2 > x1 and y2 > y1:
            mask[r1:r2, c1:c2] = True
    return mask


def _laplace_solve(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solve Laplace's equation on ``mask`` with the surrounding pixels as boundary.

    Every masked pixel becomes the mean of its 4 neighbours (neighbours outside the
    image are dropped); the sparse linear system is solved exactly. ``mask`` must
    leave at least one pixel unmasked, which makes the system non-singular.
    """
    out = values.astype(np.float64)
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    index = -np.ones(mask.shape, dtype=np.int64)
    index[rows, cols] = np.arange(rows.size)
    diagonal = np.zeros(rows.size)
    rhs = np.zeros(rows.size)
    i_list, j_list = [], []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nr, nc = rows + dr, cols + dc
        valid = (nr >= 0) & (nr < height) & (nc >= 0) & (nc < width)
        diagonal += valid
        nr, nc, own = nr[valid], nc[valid], np.flatnonzero(valid)
        neighbour = index[nr, nc]
        unknown = neighbour >= 0
        i_list.append(own[unknown])
        j_list.append(neighbour[unknown])
        np.add.at(rhs, own[~unknown], out[nr[~unknown], nc[~unknown]])
    i = np.concatenate(i_list)
    j = np.concatenate(j_list)
    n = rows.size
    matrix = sparse.csc_matrix(
        (np.concatenate([diagonal, -np.ones(i.size)]),
         (np.concatenate([np.arange(n), i]), np.concatenate([np.arange(n), j]))),
        shape=(n, n),
    )
    out[rows, cols] = spsolve(matrix, rhs)
    return out


def _harmonic_fill(image: np.ndarray, mask: np.ndarray, max_unknowns: int) -> np.ndarray:
    """Harmonic in-painting of ``mask`` (not covering the whole image), memory-bounded.

    Up to ``max_unknowns`` masked pixels the Laplace system is solved exactly. Above,
    it is solved on an ``f x f`` block-mean grid small enough, bilinearly up-sampled,
    and then solved exactly again in a band ``2 f`` pixels wide along the inside of the
    mask's border, so the fill meets the surrounding pixels without a seam.
    """
    count = int(mask.sum())
    if count <= max_unknowns:
        return _laplace_solve(image, mask)
    height, width = mask.shape
    factor = int(np.ceil(np.sqrt(count / max_unknowns)))
    pad = ((0, -height % factor), (0, -width % factor))
    blocks = (-(-height // factor), factor, -(-width // factor), factor)
    coarse_image = np.pad(image, pad, mode="edge").reshape(blocks).mean(axis=(1, 3))
    coarse_mask = np.pad(mask, pad, mode="edge").reshape(blocks).any(axis=(1, 3))
    if coarse_mask.all():
        coarse = np.full(coarse_mask.shape, float(image[~mask].mean()))
    else:
        coarse = _laplace_solve(coarse_image, coarse_mask)
    fine = ndimage.zoom(coarse, factor, order=1, mode="nearest", grid_mode=True)[:height, :width]
    guess = np.where(mask, fine, image)
    band = mask & ~ndimage.binary_erosion(mask, iterations=2 * factor, border_value=1)
    return _laplace_solve(guess, band) if band.any() else guess


def _sample_rng(seed: int, sample: Sample) -> np.random.Generator:
    digest = hashlib.blake2b(sample.id.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def _to_uint8(values: np.ndarray) -> GreyImage:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


class InpaintProvider(CounterfactualProvider):
    """A simple, model-free fallback; its edits are flagged ``approximate=True``.

    * ``removed``: every pixel overlapping a ground-truth box is replaced by the
      harmonic (smoothest) interpolation of the pixels around the boxes (Laplace's
      equation with the surrounding pixels as boundary values), plus seeded Gaussian
      noise of ``texture_sigma`` grey levels so the patch is not unnaturally flat.
      Pixels outside the boxes are unchanged.
    * ``kept``: pixels outside the boxes are brightened by ``brightness`` grey levels
      (clipped to 255); pixels overlapping a box are unchanged.
    * ``kept_normal``: pixels outside the boxes get seeded Gaussian noise of
      ``noise_sigma`` grey levels smoothed over ``smooth_sigma`` pixels; pixels
      overlapping a box are unchanged.

    Noise is seeded by ``seed`` and the sample id, so every run gives the same images.
    An image entirely covered by boxes cannot be in-painted from a border: its
    ``removed`` image is its mean grey.

    Args:
        brightness (float): grey levels added outside the boxes for ``kept``. Default: 8.
        noise_sigma (float): noise amplitude (grey levels) for ``kept_normal``. Default: 6.
        smooth_sigma (float): Gaussian smoothing of that noise (pixels). Default: 2.
        texture_sigma (float): noise added to the in-painted patch (grey levels). Default: 2.
        seed (int): base seed. Default: 0.
        max_unknowns (int): masked pixels solved exactly at full resolution; larger
            regions are solved on a coarser grid first (bounded memory). Default: 100000.
    """

    def __init__(
        self,
        *,
        brightness: float = 8.0,
        noise_sigma: float = 6.0,
        smooth_sigma: float = 2.0,
        texture_sigma: float = 2.0,
        seed: int = 0,
        max_unknowns: int = 100_000,
    ) -> None:
        self.brightness = float(brightness)
        self.noise_sigma = float(noise_sigma)
        self.smooth_sigma = float(smooth_sigma)
        self.texture_sigma = float(texture_sigma)
        self.seed = int(seed)
        self.max_unknowns = int(max_unknowns)

    def counterfactuals(self, sample: Sample) -> Counterfactuals:
        """In-paint the boxes (removed) and edit outside them (kept, kept_normal).

        Raises:
            DataError: the sample has no box to in-paint.
        """
        image = _grey(sample.load_image(), f"image of sample {sample.id!r}")
        mask = box_mask(sample.boxes, image.shape)
        if not mask.any():
            raise DataError(
                f"sample {sample.id!r} has no ground-truth box with area inside its {image.shape} "
                f"image (boxes {np.asarray(sample.boxes).tolist()}); nothing to remove"
            )
        rng = _sample_rng(self.seed, sample)
        original = image.astype(np.float64)
        if mask.all():
            filled = np.full(image.shape, original.mean())
        else:
            filled = _harmonic_fill(original, mask, self.max_unknowns)
        filled[mask] += rng.normal(0.0, self.texture_sigma, size=int(mask.sum()))
        removed = np.where(mask, _to_uint8(filled), image)
        kept = np.where(mask, image, _to_uint8(original + self.brightness))
        noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=image.shape), self.smooth_sigma)
        noise *= self.noise_sigma / max(float(noise.std()), 1e-12)
        kept_normal = np.where(mask, image, _to_uint8(original + noise))
        return Counterfactuals(removed, kept, kept_normal, approximate=True)


@dataclass(frozen=True)
class FilterRecord:
    """The filter's verdict on one sample.

    Attributes:
        model (str): model key.
        dataset (str): source dataset.
        index (int): the item's index in its dataset.
        answer (str): the reference answer (``"Yes"``).
        mode (str): ``"direct"`` or ``"reasoning"``.
        prediction (str): response on the original.
        prediction_edited (str): response with the finding removed in its box.
        prediction_edited_kept (str): response with the outside edited ("No {finding}").
        prediction_edited_kept_normal (str): response with the outside edited
            ("No abnormality").
        kept (bool): yes, no, yes, yes on the four images.
        approximate (bool): the counterfactuals were approximate.
        sample (str): the sample id.
        finding (str): the finding asked about.
    """

    model: str
    dataset: str
    index: int
    answer: str
    mode: Mode
    prediction: str
    prediction_edited: str
    prediction_edited_kept: str
    prediction_edited_kept_normal: str
    kept: bool
    approximate: bool
    sample: str = ""
    finding: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record in the MedGround-Bench schema plus ``kept`` and ``approximate``."""
        suffix = _MODE_SUFFIX[self.mode]
        return {
            "model": self.model,
            "dataset": self.dataset,
            "index": self.index,
            "answer": self.answer,
            f"prediction_{suffix}": self.prediction,
            f"prediction_edited_{suffix}": self.prediction_edited,
            f"prediction_edited_kept_{suffix}": self.prediction_edited_kept,
            f"prediction_edited_kept_normal_{suffix}": self.prediction_edited_kept_normal,
            "kept": self.kept,
            "approximate": self.approximate,
        }


def causal_filter(
    adapter: Adapter,
    samples: Iterable[Sample],
    provider: CounterfactualProvider,
    *,
    mode: Mode = "direct",
    model: str | None = None,
    max_new_tokens: int = 256,
) -> Iterator[FilterRecord]:
    """Run the causal filter over samples, lazily (one record per sample).

    For each sample: the original and its three counterfactuals are resize-padded in
    the SAME working frame (the original's), the model answers each greedily once
    (prompt ``build_prompt(sample.question, mode)``) and the answers are read with
    :func:`~cxr_attrib.targets.parse_yes_no`. The sample is kept iff the verdicts are
    yes (original), no (removed), yes (kept), yes (kept_normal).

    Args:
        adapter (Adapter): the model.
        samples (Iterable[Sample]): the candidate items.
        provider (CounterfactualProvider): makes the edited images.
        mode (Mode): prompt mode, ``"direct"`` or ``"reasoning"``. Default: ``"direct"``.
        model (str | None): model key written into the records. Default: ``adapter.name``.
        max_new_tokens (int): generation budget per answer. Default: 256.

    Yields:
        FilterRecord: one per sample, in order.

    Raises:
        DataError: a counterfactual whose shape differs from the original's, or a
            provider error.
        TargetError: an unknown mode.
    """
    mode = validate_mode(mode)
    name = model or adapter.name
    for sample in samples:
        original = _grey(sample.load_image(), f"image of sample {sample.id!r}")
        edits = provider.counterfactuals(sample)
        images = [original]
        for label in ("removed", "kept", "kept_normal"):
            edited = _grey(getattr(edits, label), f"counterfactual {label!r} of sample {sample.id!r}")
            if edited.shape != original.shape:
                raise DataError(
                    f"counterfactual {label!r} of sample {sample.id!r} has shape {edited.shape}; "
                    f"expected the original's {original.shape} so that all four share one working frame"
                )
            images.append(edited)
        frame = ResizePad.for_image(original, adapter.working_size)
        prompt = build_prompt(sample.question, mode)
        texts = [
            adapter.generate(frame.image_to_working(image), prompt, max_new_tokens=max_new_tokens).text
            for image in images
        ]
        verdicts = tuple(parse_yes_no(text, mode=mode) for text in texts)
        yield FilterRecord(
            model=name, dataset=sample.dataset, index=sample.index, answer=sample.answer, mode=mode,
            prediction=texts[0], prediction_edited=texts[1], prediction_edited_kept=texts[2],
            prediction_edited_kept_normal=texts[3], kept=verdicts == _EXPECTED,
            approximate=edits.approximate, sample=sample.id, finding=sample.finding,
        )


def check_records_path(path: str | os.PathLike, *, protected: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse a records destination inside a data folder (run before any model work).

    Args:
        path (str | PathLike): the JSON file about to be written.
        protected (Iterable[str | PathLike]): extra folders never to write into (e.g.
            the counterfactual folder). ``$CXR_ATTRIB_DATA``, when set, always is.
            Default: ().

    Returns:
        Path: the destination, absolute but not resolved: a symlink planted there is
        replaced by the write, never written through.

    Raises:
        DataError: ``path`` lies inside a data root or a protected folder.
        OutputError: ``path`` is a folder.
    """
    ensure_outside_data(path, protected=protected, what="filter records")
    check_outputs([path], protected=protected)
    return Path(os.path.abspath(Path(path).expanduser()))


def write_records(
    records: Iterable[FilterRecord],
    path: str | os.PathLike,
    *,
    protected: Iterable[str | os.PathLike] = (),
) -> int:
    """Write records as one JSON list, atomically (see :func:`cxr_attrib.outputs.write_files`).

    Args:
        records (Iterable[FilterRecord]): from :func:`causal_filter`.
        path (str | PathLike): the JSON file to (over)write; its folder is created.
        protected (Iterable[str | PathLike]): see :func:`check_records_path`. Default: ().

    Returns:
        int: the number of records written.

    Raises:
        DataError: ``path`` lies inside a data root or a protected folder.
    """
    target = check_records_path(path, protected=protected)
    rows = [record.to_dict() for record in records]
    write_files({target: (json.dumps(rows, indent=1) + "\n").encode("utf-8")}, protected=protected)
    return len(rows)
