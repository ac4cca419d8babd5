"""SIIM-ACR Pneumothorax Segmentation: pneumothorax masks as run-length encodings.

``train-rle.csv`` is comma-separated UTF-8 with a header ``ImageId, EncodedPixels``
(the second name has a leading space in the release; names are compared stripped).
Each row is one mask of one image in the relative, column-major RLE of
:mod:`cxr_attrib.benchmarks.rle`, over :data:`SIIM_SHAPE` (1024 x 1024) pixels; ``-1``
marks an image without pneumothorax (a negative). An image may have several rows:
its truth mask is their union, and each row also gives one box, the tight box of its
pixels (exclusive ends), for the box-based scorer. An image marked both ``-1`` and
with a mask is refused. Images are ``<ImageId>.dcm`` anywhere below the image folder
(the release nests them as ``<study>/<series>/<ImageId>.dcm``); the folder is walked
once per listing. The image must have the mask's shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import DataError
from ..hookspecs import hookimpl
from .csv_rows import read_csv
from .labelled import LabelledBenchmark, LabelledImage, boxes_array
from .rle import EMPTY_RLE, parse_rle

__all__ = ["SIIM_COLUMNS", "SIIM_SHAPE", "SiimAcr", "load_siim", "runs_box"]

SIIM_COLUMNS = ("ImageId", "EncodedPixels")
"""The columns this loader reads."""

SIIM_SHAPE = (1024, 1024)
"""(H, W) of every SIIM-ACR image and mask."""

_FINDING = "Pneumothorax"


def runs_box(runs: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The tight box ``(x1, y1, x2, y2)`` (exclusive ends) of column-major runs.

    A run inside one column covers rows ``start % H .. (end - 1) % H``; a run crossing a
    column boundary covers the bottom of its first column and the top of the next, so
    its rows span ``0 .. H - 1``.

    Examples::

        >>> runs_box(np.array([[5, 7]]), (4, 3))  # pixels 5, 6: column 1, rows 1-2
        (1.0, 1.0, 2.0, 3.0)
    """
    height = shape[0]
    starts, last = runs[:, 0], runs[:, 1] - 1
    first_col, last_col = starts // height, last // height
    same = first_col == last_col
    top = np.where(same, starts % height, 0)
    bottom = np.where(same, last % height, height - 1)
    return (float(first_col.min()), float(top.min()), float(last_col.max() + 1), float(bottom.max() + 1))


def load_siim(path: Path, image_paths: dict[str, str], *, shape: tuple[int, int] = SIIM_SHAPE) -> list[LabelledImage]:
    """Read ``train-rle.csv``: one record per image, in first-seen order.

    Args:
        path (Path): the RLE CSV.
        image_paths (dict[str, str]): ImageId -> path under the image folder.
        shape (tuple[int, int]): (H, W) of the masks. Default: :data:`SIIM_SHAPE`.

    Raises:
        DataError: a malformed or overrunning RLE, an image marked both empty and not,
            or an ImageId with no DICOM under the image folder (names file and line).
    """
    runs: dict[str, list[np.ndarray]] = {}
    lines: dict[str, list[int]] = {}
    for line, row in read_csv(path, SIIM_COLUMNS, "the SIIM-ACR RLE masks"):
        where = f"{path}, line {line}"
        image, text = row["ImageId"], row["EncodedPixels"]
        if not image:
            raise DataError(f"{where}: empty ImageId.")
        if image not in image_paths:
            raise DataError(f"{where}: no DICOM {image}.dcm below the SIIM-ACR image folder.")
        known = runs.setdefault(image, [])
        seen = lines.setdefault(image, [])
        empty = text == EMPTY_RLE
        if seen and empty != (not known):
            raise DataError(f"{where}: image {image!r} has both an empty mask (-1) and a mask (first at line {seen[0]}).")
        seen.append(line)
        if not empty:
            known.append(parse_rle(text, shape, where=f"{where} (ImageId {image})"))
    items = []
    for image, masks in runs.items():
        union = np.concatenate(masks) if masks else np.zeros((0, 2), np.int64)
        items.append(LabelledImage(
            key=image, relpath=image_paths[image],
            boxes={_FINDING: boxes_array([runs_box(m, shape) for m in masks])} if masks else {},
            runs={_FINDING: union} if masks else {}, mask_shape=shape,
            source=f"{path}, lines {lines[image]}",
        ))
    return items


def _dicoms(folder: Path) -> dict[str, str]:
    """ImageId -> relative path of every ``*.dcm`` below ``folder`` (one walk, symlinks not followed)."""
    found: dict[str, str] = {}
    for top, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".dcm"):
                found.setdefault(name[:-4], os.path.relpath(os.path.join(top, name), folder))
    return found


class SiimAcr(LabelledBenchmark):
    """SIIM-ACR pneumothorax: RLE masks (truth for pixel metrics) and their boxes.

    Args:
        root (str | os.PathLike | None): the data root. Default: None (``$CXR_ATTRIB_DATA``).
        mask_shape (tuple[int, int]): (H, W) the RLE strings encode. Default: :data:`SIIM_SHAPE`.
    """

    name: ClassVar[str] = "siim_acr"
    summary: ClassVar[str] = "SIIM-ACR Pneumothorax: RLE masks on 1024x1024 DICOMs (user-provided)."
    dataset: ClassVar[str] = "siim_acr"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    findings: ClassVar[tuple[str, ...]] = (_FINDING,)
    layout: ClassVar[str] = (
        "  <root>/siim_acr/train-rle.csv\n"
        "  <root>/siim_acr/dicom-images-train/<study>/<series>/<ImageId>.dcm  (any depth)"
    )

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 mask_shape: tuple[int, int] = SIIM_SHAPE) -> None:
        super().__init__(root)
        self.mask_shape = (int(mask_shape[0]), int(mask_shape[1]))

    def load(self, root: Path, split: str) -> list[LabelledImage]:
        """Parse the RLE CSV (the only split is ``"train"``)."""
        path = self.require(root / "siim_acr" / "train-rle.csv", "the RLE masks CSV")
        return load_siim(path, _dicoms(self.image_folder(root, split)), shape=self.mask_shape)

    def image_folder(self, root: Path, split: str) -> Path:
        """``<root>/siim_acr/dicom-images-train``."""
        return root / "siim_acr" / "dicom-images-train"


@hookimpl
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register ``siim_acr``."""
    register(SiimAcr(), name=SiimAcr.name)
