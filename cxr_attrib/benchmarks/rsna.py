"""RSNA Pneumonia Detection Challenge: pneumonia boxes on 1024x1024 DICOMs.

``stage_2_train_labels.csv`` is comma-separated UTF-8 with a header; the columns used
are ``patientId, x, y, width, height, Target``. A row with ``Target`` 1 is one box
``(x, y, x + width, y + height)`` in native pixels (exclusive ends, as recorded); a
patient may have several. A row with ``Target`` 0 (empty coordinates) marks an image
without pneumonia: a negative. A patient with both kinds of rows is refused. Images:
``stage_2_train_images/{patientId}.dcm``.
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

__all__ = ["RSNA_COLUMNS", "RsnaPneumonia", "load_rsna"]

RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
"""The label columns this loader reads."""

_FINDING = "Pneumonia"


def load_rsna(path: Path) -> list[LabelledImage]:
    """Read ``stage_2_train_labels.csv``: one record per patient, in first-seen order.

    Raises:
        DataError: a missing column, a ``Target`` other than 0/1, a positive row with a
            non-numeric or non-positive size, or a patient marked both 0 and 1 (names
            the file and line).
    """
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    lines: dict[str, list[int]] = {}
    for line, row in read_csv(path, RSNA_COLUMNS, "the RSNA Pneumonia labels"):
        where = f"{path}, line {line}"
        patient, target = row["patientId"], row["Target"]
        if not patient:
            raise DataError(f"{where}: empty patientId.")
        if target not in ("0", "1"):
            raise DataError(f"{where}: Target must be 0 or 1; received {target!r}.")
        boxes.setdefault(patient, [])
        known = lines.setdefault(patient, [])
        if known and (target == "1") != bool(boxes[patient]):
            raise DataError(f"{where}: patient {patient!r} is marked both Target 0 and 1 (first at line {known[0]}).")
        known.append(line)
        if target == "0":
            continue
        try:
            x, y, w, h = (float(row[name]) for name in ("x", "y", "width", "height"))
        except ValueError:
            raise DataError(f"{where}: a Target 1 row needs numeric x, y, width, height; received "
                            f"{[row[n] for n in ('x', 'y', 'width', 'height')]}.") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise DataError(f"{where}: box x={x}, y={y}, width={w}, height={h} needs finite values and a positive size.")
        boxes[patient].append((x, y, x + w, y + h))
    return [
        LabelledImage(
            key=patient, relpath=f"{patient}.dcm",
            boxes={_FINDING: boxes_array(found)} if found else {},
            source=f"{path}, lines {lines[patient]}",
        )
        for patient, found in boxes.items()
    ]


class RsnaPneumonia(LabelledBenchmark):
    """RSNA Pneumonia (stage 2 training labels): pneumonia boxes and normal negatives."""

    name: ClassVar[str] = "rsna_pneumonia"
    summary: ClassVar[str] = "RSNA Pneumonia: radiologists' pneumonia boxes on 1024x1024 DICOMs (user-provided)."
    dataset: ClassVar[str] = "rsna_pneumonia"
    splits: ClassVar[tuple[str, ...]] = ("train",)
    findings: ClassVar[tuple[str, ...]] = (_FINDING,)
    layout: ClassVar[str] = (
        "  <root>/rsna_pneumonia/stage_2_train_labels.csv\n"
        "  <root>/rsna_pneumonia/stage_2_train_images/<patientId>.dcm"
    )

    def load(self, root: Path, split: str) -> list[LabelledImage]:
        """Parse the labels (the only split is ``"train"``)."""
        return load_rsna(self.require(root / "rsna_pneumonia" / "stage_2_train_labels.csv", "the labels CSV"))

    def image_folder(self, root: Path, split: str) -> Path:
        """``<root>/rsna_pneumonia/stage_2_train_images``."""
        return root / "rsna_pneumonia" / "stage_2_train_images"


@hookimpl
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register ``rsna_pneumonia``."""
    register(RsnaPneumonia(), name=RsnaPneumonia.name)
