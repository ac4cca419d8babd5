"""VinDr-CXR test items, numbered the way MedGround-Bench numbers them.

``annotations/annotations_test.csv`` is comma-separated UTF-8 with a header row (a
byte-order mark is allowed); the columns used are ``image_id``, ``class_name``,
``x_min``, ``y_min``, ``x_max`` and ``y_max`` (others, such as ``rad_id``, are
ignored). Rows whose class is ``No finding`` are dropped (they carry no box). The
rest are grouped by ``(image_id, class_name)``; the groups are sorted by that key as
strings and an item's index is its group's position. Every row of a group (one per
radiologist's box) gives one box in native DICOM pixels, taken as continuous
coordinates with exclusive ends as recorded (no rounding). The image is
``test/{image_id}.dicom``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..typing import BoxArray
from .csv_rows import read_csv
from .imagenome import checked_box

__all__ = ["VINDR_COLUMNS", "VinDrItem", "load_vindr"]

VINDR_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
"""The annotation columns this loader reads."""

_NO_FINDING = "No finding"


@dataclass(frozen=True)
class VinDrItem:
    """One (image, class) group of the test annotations.

    Attributes:
        image_id (str): the DICOM's file stem.
        finding (str): the ``class_name``, e.g. ``"Nodule/Mass"``.
        boxes (BoxArray): (N, 4) float64 ``x1, y1, x2, y2`` in native pixels,
            exclusive ends, one per row in file order (read-only).
        lines (tuple[int, ...]): the CSV line number of each box's row.
    """

    image_id: str
    finding: str
    boxes: BoxArray
    lines: tuple[int, ...]

    @property
    def image_relpath(self) -> str:
        """The DICOM's path under the VinDr-CXR test-image folder."""
        return f"{self.image_id}.dicom"


def load_vindr(path: Path) -> list[VinDrItem]:
    """Read the test annotations and return the items in MedGround-Bench index order.

    Args:
        path (Path): ``annotations_test.csv``.

    Returns:
        list[VinDrItem]: item ``i`` is MedGround-Bench's ``("vindr_cxr", i)``.

    Raises:
        DataError: the file is missing, lacks a column, or has a malformed row
            (the message names the file and line).
    """
    groups: dict[tuple[str, str], list[tuple[tuple[float, ...], int]]] = {}
    for line, row in read_csv(path, VINDR_COLUMNS, "the VinDr-CXR annotations (annotations/annotations_test.csv)"):
        image_id, class_name = row["image_id"], row["class_name"]
        if class_name == _NO_FINDING:
            continue
        coords = [row[name] for name in VINDR_COLUMNS[2:]]
        try:
            box = checked_box(tuple(float(value) for value in coords), coords)
        except ValueError as error:
            raise DataError(
                f"{path}, line {line}: malformed row ({error}); every class other than "
                f"{_NO_FINDING!r} needs numeric x_min, y_min, x_max, y_max."
            ) from error
        groups.setdefault((image_id, class_name), []).append((box, line))
    items = []
    for image_id, class_name in sorted(groups):
        rows = groups[image_id, class_name]
        boxes = np.array([box for box, _ in rows], dtype=np.float64).reshape(-1, 4)
        boxes.flags.writeable = False
        items.append(VinDrItem(image_id, class_name, boxes, tuple(line for _, line in rows)))
    return items
