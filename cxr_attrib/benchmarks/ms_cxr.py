"""MS-CXR: radiologists' phrase boxes on MIMIC-CXR-JPG images.

``MS_CXR_Local_Alignment_v1.1.0.csv`` (v1.0.0 has the same columns used here) is
comma-separated UTF-8 with a header; the columns used are ``dicom_id, category_name,
label_text, path, x, y, w, h``. Each row is one box ``(x, y, x + w, y + h)`` in the
native pixels of the image (exclusive ends) for one phrase (``label_text``) of one
finding category (``category_name``, e.g. ``"Pleural effusion"``). Rows are grouped by
(image, category): the finding is the category, its boxes are every row's box, and its
phrases are kept in ``Sample.extra["phrases"]``. ``path`` (``files/p10/.../<dicom_id>.jpg``)
is the image under the MIMIC-CXR-JPG 2.1.0 folder. Negatives of a category are the
MS-CXR images annotated only with other categories (MS-CXR does not state the absence
of a finding, so these are approximate negatives; docs/benchmark-formats.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ..errors import DataError
from ..hookspecs import hookimpl
from .csv_rows import read_csv
from .labelled import LabelledBenchmark, LabelledImage, boxes_array

__all__ = ["MS_CXR_COLUMNS", "MsCxr", "load_ms_cxr"]

MS_CXR_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h")
"""The columns this loader reads."""


def load_ms_cxr(path: Path) -> list[LabelledImage]:
    """Read the MS-CXR local-alignment CSV: one record per image, in first-seen order.

    Raises:
        DataError: a missing column, an empty id, category or path, a non-numeric or
            non-positive box, or one image listed under two paths (names file and line).
    """
    boxes: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    phrases: dict[str, dict[str, list[str]]] = {}
    paths: dict[str, str] = {}
    lines: dict[str, list[int]] = {}
    for line, row in read_csv(path, MS_CXR_COLUMNS, "the MS-CXR local alignment"):
        where = f"{path}, line {line}"
        image, category, relpath = row["dicom_id"], row["category_name"], row["path"]
        if not image or not category or not relpath:
            raise DataError(f"{where}: dicom_id, category_name and path must not be empty.")
        if paths.setdefault(image, relpath) != relpath:
            raise DataError(f"{where}: dicom_id {image!r} has path {relpath!r} here but {paths[image]!r} before.")
        try:
            x, y, w, h = (float(row[name]) for name in ("x", "y", "w", "h"))
        except ValueError:
            raise DataError(f"{where}: x, y, w, h must be numbers; received "
                            f"{[row[n] for n in ('x', 'y', 'w', 'h')]}.") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise DataError(f"{where}: box x={x}, y={y}, w={w}, h={h} needs finite values and a positive size.")
        boxes.setdefault(image, {}).setdefault(category, []).append((x, y, x + w, y + h))
        said = phrases.setdefault(image, {}).setdefault(category, [])
        if row["label_text"] not in said:
            said.append(row["label_text"])
        lines.setdefault(image, []).append(line)
    return [
        LabelledImage(
            key=image, relpath=paths[image],
            boxes={category: boxes_array(found) for category, found in by_category.items()},
            source=f"{path}, lines {lines[image]}",
            extra={category: {"phrases": phrases[image][category]} for category in by_category},
        )
        for image, by_category in boxes.items()
    ]


class MsCxr(LabelledBenchmark):
    """MS-CXR phrase grounding: boxes per finding category, phrases kept."""

    name: ClassVar[str] = "ms_cxr"
    summary: ClassVar[str] = "MS-CXR: phrase boxes of 8 finding categories on MIMIC-CXR-JPG (user-provided)."
    dataset: ClassVar[str] = "ms_cxr"
    splits: ClassVar[tuple[str, ...]] = ("all",)
    layout: ClassVar[str] = (
        "  <root>/ms_cxr/MS_CXR_Local_Alignment_v1.1.0.csv\n"
        "  <root>/mimic-cxr-jpg/2.1.0/files/p10/p10000032/s50414267/<dicom_id>.jpg"
    )

    def load(self, root: Path, split: str) -> list[LabelledImage]:
        """Parse the CSV (the one split ``"all"``)."""
        return load_ms_cxr(self.require(root / "ms_cxr" / "MS_CXR_Local_Alignment_v1.1.0.csv", "the MS-CXR CSV"))

    def image_folder(self, root: Path, split: str) -> Path:
        """``<root>/mimic-cxr-jpg/2.1.0`` (``path`` starts with ``files/``)."""
        return root / "mimic-cxr-jpg" / "2.1.0"


@hookimpl
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register ``ms_cxr``."""
    register(MsCxr(), name=MsCxr.name)
