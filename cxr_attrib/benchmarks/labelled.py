"""What the box and mask benchmarks share: labelled images -> positives and negatives.

A dataset loader (RSNA Pneumonia, SIIM-ACR, ChestX-Det10, MS-CXR) turns its annotation
file into :class:`LabelledImage` records: one per image, with the boxes (and masks) of
every finding it shows. :class:`LabelledBenchmark` turns those into samples:

- **positives** (:meth:`LabelledBenchmark.samples`): one per (image, finding shown),
  answer ``"Yes"``, its boxes; id ``"{benchmark}/{split}/{image}/{finding}"``;
- **negatives** (:meth:`LabelledBenchmark.negatives`): one per (image, finding of the
  benchmark's finding list the image does not show), answer ``"No"``, no boxes; id
  ``"{benchmark}/{split}/{image}/no {finding}"``.

Data are read from ``root=`` or ``$CXR_ATTRIB_DATA`` (never written), laid out as each
benchmark's ``layout`` says (docs/benchmark-formats.md). Annotations are parsed once per
split, on first use.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..benchmark import Benchmark, Sample, path_under
from ..errors import DataError
from ..safeio import regular_file_exists
from ..paths import DATA_ENV
from ..targets import finding_question
from ..typing import BoxArray, GreyImage
from .rle import decode_rle

__all__ = ["LabelledBenchmark", "LabelledImage", "boxes_array"]


def boxes_array(boxes: list[tuple[float, float, float, float]]) -> BoxArray:
    """(N, 4) float64 read-only boxes from a list of ``(x1, y1, x2, y2)``."""
    array = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class LabelledImage:
    """One annotated image of a box or mask dataset.

    Attributes:
        key (str): the image's id, unique within its split (e.g. RSNA's ``patientId``).
        relpath (str): the image file's path under the benchmark's image folder.
        boxes (Mapping[str, BoxArray]): finding -> (N, 4) float64 boxes in native
            pixels, exclusive ends; only the findings the image shows.
        runs (Mapping[str, np.ndarray]): finding -> (K, 2) int64 mask runs (SIIM-ACR's
            decoded RLE, :func:`~cxr_attrib.benchmarks.rle.parse_rle`) when the truth is a mask.
        mask_shape (tuple[int, int] | None): (H, W) the runs encode.
        source (str): file and line(s) it was read from, for messages.
        extra (dict): small JSON-safe facts (e.g. MS-CXR's phrase).
    """

    key: str
    relpath: str
    boxes: Mapping[str, BoxArray]
    runs: Mapping[str, np.ndarray] = field(default_factory=dict)
    mask_shape: tuple[int, int] | None = None
    source: str = ""
    extra: Mapping[str, dict] = field(default_factory=dict)


def _read_grey(path: Path, expected: tuple[int, int] | None, source: str) -> GreyImage:
    from ..imageio import load_image

    pixels = load_image(path).pixels
    if expected is not None and tuple(pixels.shape) != tuple(expected):
        raise DataError(
            f"{path}: the image is {pixels.shape[0]}x{pixels.shape[1]} (H x W) but its mask ({source}) is "
            f"{expected[0]}x{expected[1]}; a mask must have its image's shape."
        )
    return pixels


def _mask(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return decode_rle(runs, shape)


class LabelledBenchmark(Benchmark):
    """A box or mask dataset read from the data root, with positives and negatives.

    Subclasses set ``name``, ``summary``, ``dataset``, ``splits`` and ``findings`` (the
    finding list negatives are drawn from; None = every finding the split shows) and
    implement :meth:`load` and :meth:`image_folder`.

    Args:
        root (str | os.PathLike | None): the data root. Default: None (read
            ``$CXR_ATTRIB_DATA`` at each listing).
    """

    dataset: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    findings: ClassVar[tuple[str, ...] | None] = None
    layout: ClassVar[str]
    """The expected files under the data root, for messages and docs."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = root
        self._cache: dict[tuple[Path, str], list[LabelledImage]] = {}

    @abstractmethod
    def load(self, root: Path, split: str) -> list[LabelledImage]:
        """Parse the annotations of ``split`` under ``root`` (raise DataError naming file and line)."""

    @abstractmethod
    def image_folder(self, root: Path, split: str) -> Path:
        """The folder the records' ``relpath`` are relative to."""

    def data_root(self) -> Path:
        """``root=`` or ``$CXR_ATTRIB_DATA``: an existing folder, never a guess."""
        value = self._root if self._root is not None else os.environ.get(DATA_ENV, "").strip()
        if not value:
            raise DataError(
                f"benchmark {self.name!r} needs its data root: set {DATA_ENV} (or pass root=) to a folder "
                f"laid out as\n{self.layout}"
            )
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(f"benchmark {self.name!r}: data root {str(value)!r} is not a folder; expected\n{self.layout}")
        return path

    def require(self, path: Path, what: str) -> Path:
        """``path`` if it is a file, else a DataError showing the layout."""
        if not regular_file_exists(path, what=f"benchmark {self.name!r} {what}"):
            raise DataError(f"benchmark {self.name!r} needs {what} at {path}, which does not exist; expected\n{self.layout}")
        return path

    def images(self, split: str) -> list[LabelledImage]:
        """The split's labelled images, parsed once."""
        if split not in self.splits:
            raise DataError(f"benchmark {self.name!r} has splits {', '.join(self.splits)}; received {split!r}.")
        root = self.data_root()
        if (root, split) not in self._cache:
            self._cache[root, split] = self.load(root, split)
        return self._cache[root, split]

    def _splits(self, split: str | None) -> tuple[str, ...]:
        return self.splits if split is None else (split,)

    def _sample(self, split: str, index: int, item: LabelledImage, finding: str, positive: bool) -> Sample:
        root = self.data_root()
        path = path_under(self.image_folder(root, split), item.relpath, source=item.source, field="image")
        runs = item.runs.get(finding) if positive else None
        shape = item.mask_shape if runs is not None else None
        boxes = item.boxes[finding] if positive else boxes_array([])
        return Sample(
            id=f"{self.name}/{split}/{item.key}/{finding if positive else 'no ' + finding}",
            dataset=self.dataset,
            index=index,
            finding=finding,
            question=finding_question(finding.lower()),
            answer="Yes" if positive else "No",
            boxes=boxes,
            load_image=partial(_read_grey, path, item.mask_shape if item.runs else None, item.source),
            split=split,
            extra={"image_path": str(path), "source": item.source, **item.extra.get(finding, {})},
            load_mask=None if runs is None else partial(_mask, runs, shape),
        )

    def samples(self, *, split: str | None = None, model: str | None = None) -> Iterator[Sample]:
        """Positives: one per (image, finding it shows), in file order; ``model`` is ignored.

        Raises:
            DataError: missing data root or file, malformed annotations, an unknown split.
        """
        for name in self._splits(split):
            for index, item in enumerate(self.images(name)):
                for finding in item.boxes:
                    yield self._sample(name, index, item, finding, True)

    def negatives(self, *, split: str | None = None) -> Iterator[Sample]:
        """Negatives: one per (image, finding of the finding list it does not show)."""
        for name in self._splits(split):
            items = self.images(name)
            listed = self.findings or tuple(sorted({f for item in items for f in item.boxes}))
            for index, item in enumerate(items):
                for finding in listed:
                    if finding not in item.boxes:
                        yield self._sample(name, index, item, finding, False)
