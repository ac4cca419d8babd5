"""Chest ImaGenome gold items, numbered the way MedGround-Bench numbers them.

The gold file ``gold_object_attribute_with_coordinates.txt`` is tab-separated UTF-8
(a byte-order mark is allowed) with a header row. Only these columns are used
(others are ignored, order is free): ``patient_id``, ``study_id``, ``image_id``,
``label_name``, ``categoryID``, ``relation`` and ``coord_original``.

Rows are kept when ``relation`` is 1 and ``categoryID`` is ``anatomicalfinding`` or
``disease``. Kept rows are grouped by ``(patient_id, study_id, image_id, label_name,
categoryID)``; the groups are sorted by that key (patient and study ids as numbers,
the rest as strings) and an item's index is its group's position in that order.
Kept rows with an empty key field are left out, as the reference grouping drops
missing keys. Each row of a group gives one box from ``coord_original``,
``[x1, y1, x2, y2]`` in native MIMIC-CXR-JPG pixels, taken as continuous coordinates
with exclusive ends as recorded (no rounding).

Ids may be written with or without their letter (``10000032`` or ``p10000032``,
``50414267`` or ``s50414267``); ``image_id`` may end in ``.dcm``. The image is
``p{pid[:2]}/p{pid}/s{sid}/{dicom_id}.jpg`` under MIMIC-CXR-JPG's ``files`` folder.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..safeio import read_text
from ..typing import BoxArray

__all__ = ["IMAGENOME_COLUMNS", "ImaGenomeItem", "checked_box", "load_imagenome", "parse_coord"]

IMAGENOME_COLUMNS = (
    "patient_id",
    "study_id",
    "image_id",
    "label_name",
    "categoryID",
    "relation",
    "coord_original",
)
"""The gold-file columns this loader reads."""

_CATEGORIES = frozenset({"anatomicalfinding", "disease"})


@dataclass(frozen=True)
class ImaGenomeItem:
    """One (image, finding) group of the gold file.

    Attributes:
        patient_id (str): MIMIC subject id, digits only, e.g. ``"10000032"``.
        study_id (str): MIMIC study id, digits only, e.g. ``"50414267"``.
        dicom_id (str): image id without ``.dcm``.
        finding (str): the ``label_name``, e.g. ``"lung opacity"``.
        category (str): ``"anatomicalfinding"`` or ``"disease"``.
        boxes (BoxArray): (N, 4) float64 ``x1, y1, x2, y2`` in native pixels,
            exclusive ends, one per row of the group in file order (read-only).
        lines (tuple[int, ...]): the gold-file line number of each box's row.
    """

    patient_id: str
    study_id: str
    dicom_id: str
    finding: str
    category: str
    boxes: BoxArray
    lines: tuple[int, ...]

    @property
    def image_relpath(self) -> str:
        """The JPEG's path under MIMIC-CXR-JPG's ``files`` folder."""
        pid, sid = self.patient_id, self.study_id
        return f"p{pid[:2]}/p{pid}/s{sid}/{self.dicom_id}.jpg"


def parse_coord(text: str) -> tuple[float, float, float, float]:
    """Parse a ``coord_original`` cell such as ``"[1113, 880, 1846.5, 1760]"``.

    Args:
        text (str): four comma-separated numbers, optionally in ``[]`` or ``()``.

    Returns:
        tuple[float, float, float, float]: ``(x1, y1, x2, y2)`` in pixels.

    Raises:
        ValueError: not exactly four finite numbers, or ``x2 < x1`` / ``y2 < y1``.

    Examples::

        >>> parse_coord("[10, 20, 30.5, 40]")
        (10.0, 20.0, 30.5, 40.0)
    """
    parts = text.strip().strip("[]()").split(",")
    if len(parts) != 4:
        raise ValueError(f"expected 4 comma-separated numbers, got {text!r}")
    return checked_box(tuple(float(part) for part in parts), text)


def checked_box(values: tuple[float, ...], text: object) -> tuple[float, float, float, float]:
    """Check four box numbers (shared by the VinDr-CXR and PadChest-GR joins).

    Args:
        values (tuple[float, ...]): ``(x1, y1, x2, y2)``.
        text (object): what they were read from, quoted in the error.

    Returns:
        tuple[float, float, float, float]: the same four numbers.

    Raises:
        ValueError: a value is not finite, or ``x2 < x1`` or ``y2 < y1``.
    """
    if len(values) != 4:
        raise ValueError(f"expected 4 numbers x1, y1, x2, y2, got {text!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected finite numbers, got {text!r}")
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise ValueError(f"expected x1 <= x2 and y1 <= y2, got {text!r}")
    return x1, y1, x2, y2


def _plain_id(value: str, letter: str) -> str:
    digits = value.strip().removeprefix(letter)
    if not digits.isdigit():
        raise ValueError(f"expected digits, optionally after {letter!r}, got {value!r}")
    return digits


def load_imagenome(path: Path) -> list[ImaGenomeItem]:
    """Read the gold file and return its items in MedGround-Bench index order.

    Args:
        path (Path): ``gold_object_attribute_with_coordinates.txt``.

    Returns:
        list[ImaGenomeItem]: item ``i`` is MedGround-Bench's ``("imagenome", i)``.

    Raises:
        DataError: the file is missing, lacks a column, or has a malformed row
            (the message names the file and line).
    """
    groups: dict[tuple, list[tuple[tuple[float, ...], int]]] = {}
    try:
        handle = io.StringIO(read_text(path, what="Chest ImaGenome gold file", encoding="utf-8-sig", errors="replace"), newline="")
    except (OSError, DataError) as error:
        raise DataError(f"cannot read the Chest ImaGenome gold file {path}: {error}") from error
    with handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, [])
        columns = {name.strip(): position for position, name in enumerate(header)}
        for name in IMAGENOME_COLUMNS:
            if name not in columns:
                raise DataError(
                    f"{path}: the header lacks column {name!r}; expected a tab-separated "
                    f"header with {', '.join(IMAGENOME_COLUMNS)}; got {sorted(columns)}. "
                    "Point the layout at Chest ImaGenome 1.0.0's gold file."
                )
        at = {name: columns[name] for name in IMAGENOME_COLUMNS}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            try:
                cells = {name: row[position] for name, position in at.items()}
                relation = cells["relation"].strip()
                if not relation or float(relation) != 1 or cells["categoryID"] not in _CATEGORIES:
                    continue
                if not all(cells[name].strip() for name in IMAGENOME_COLUMNS[:4]):
                    continue
                pid = _plain_id(cells["patient_id"], "p")
                sid = _plain_id(cells["study_id"], "s")
                box = parse_coord(cells["coord_original"])
            except (IndexError, ValueError) as error:
                raise DataError(
                    f"{path}, line {line}: malformed row ({error}); expected numeric "
                    "relation, patient/study ids and coord_original '[x1, y1, x2, y2]'."
                ) from error
            key = (int(pid), int(sid), pid, sid, cells["image_id"], cells["label_name"],
                   cells["categoryID"])
            groups.setdefault(key, []).append((box, line))
    items = []
    for key in sorted(groups):
        _, _, pid, sid, image_id, label, category = key
        boxes = np.array([box for box, _ in groups[key]], dtype=np.float64).reshape(-1, 4)
        boxes.flags.writeable = False
        items.append(
            ImaGenomeItem(
                patient_id=pid,
                study_id=sid,
                dicom_id=image_id.strip().removesuffix(".dcm"),
                finding=label,
                category=category,
                boxes=boxes,
                lines=tuple(line for _, line in groups[key]),
            )
        )
    return items
