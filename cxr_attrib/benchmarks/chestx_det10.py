"""ChestX-Det10: instance boxes of 10 abnormalities on NIH ChestX-14 images.

``train.json`` and ``test.json`` are JSON lists of objects ``{"file_name": "<name>.png",
"syms": [class, ...], "boxes": [[x1, y1, x2, y2], ...]}``: ``syms[i]`` names the class
of ``boxes[i]`` (left, top, right, bottom in native pixels, taken as exclusive ends as
recorded). The classes are :data:`CHESTX_DET10_CLASSES`. An image with no ``syms`` is
normal. Negatives of a class are the split's images that do not show it. Images:
``train_data/<file_name>`` and ``test_data/<file_name>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ..errors import DataError
from ..hookspecs import hookimpl
from ..safeio import read_text
from .labelled import LabelledBenchmark, LabelledImage, boxes_array

__all__ = ["CHESTX_DET10_CLASSES", "ChestXDet10", "load_chestx_det10"]

CHESTX_DET10_CLASSES = (
    "Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Mass", "Nodule", "Pneumothorax",
)  # fmt: skip
"""The ten classes, as spelled in ``syms``."""


def load_chestx_det10(path: Path) -> list[LabelledImage]:
    """Read ``train.json`` or ``test.json``: one record per image, in file order.

    Raises:
        DataError: not a JSON list of objects, a missing or mistyped field, ``syms`` and
            ``boxes`` of different lengths, an unknown class or a bad box (names the file
            and the record's position).
    """
    try:
        records = json.loads(read_text(path, what="ChestX-Det10 annotations"))
    except OSError as error:
        raise DataError(f"cannot read the ChestX-Det10 annotations {path}: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not UTF-8 JSON: {error}") from error
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of images, got {type(records).__name__}.")
    items = []
    for number, record in enumerate(records):
        where = f"{path}, record [{number}]"
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            raise DataError(f"{where}: expected an object with a string 'file_name'.")
        syms, boxes = record.get("syms"), record.get("boxes")
        if not isinstance(syms, list) or not isinstance(boxes, list) or len(syms) != len(boxes):
            raise DataError(f"{where}: 'syms' and 'boxes' must be lists of equal length; received {syms!r:.80} and {boxes!r:.80}.")
        found: dict[str, list[tuple[float, float, float, float]]] = {}
        for sym, box in zip(syms, boxes):
            if sym not in CHESTX_DET10_CLASSES:
                raise DataError(f"{where}: unknown class {sym!r:.60}; expected one of {', '.join(CHESTX_DET10_CLASSES)}.")
            ok = isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            if not ok or box[2] < box[0] or box[3] < box[1]:
                raise DataError(f"{where}: box {box!r:.80} of {sym} must be four finite numbers x1 <= x2, y1 <= y2.")
            found.setdefault(sym, []).append(tuple(float(v) for v in box))  # type: ignore[arg-type]
        items.append(LabelledImage(
            key=record["file_name"], relpath=record["file_name"],
            boxes={sym: boxes_array(list_) for sym, list_ in found.items()}, source=where,
        ))
    return items


class ChestXDet10(LabelledBenchmark):
    """ChestX-Det10: boxes of ten abnormality classes, with normal and other-class negatives."""

    name: ClassVar[str] = "chestx_det10"
    summary: ClassVar[str] = "ChestX-Det10: radiologists' boxes of 10 abnormalities on NIH ChestX-14 PNGs (user-provided)."
    dataset: ClassVar[str] = "chestx_det10"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    findings: ClassVar[tuple[str, ...]] = CHESTX_DET10_CLASSES
    layout: ClassVar[str] = (
        "  <root>/chestx_det10/train.json   <root>/chestx_det10/test.json\n"
        "  <root>/chestx_det10/train_data/<file_name>   <root>/chestx_det10/test_data/<file_name>"
    )

    def load(self, root: Path, split: str) -> list[LabelledImage]:
        """Parse ``<split>.json``."""
        return load_chestx_det10(self.require(root / "chestx_det10" / f"{split}.json", f"the {split} annotations"))

    def image_folder(self, root: Path, split: str) -> Path:
        """``<root>/chestx_det10/<split>_data``."""
        return root / "chestx_det10" / f"{split}_data"


@hookimpl
def register_benchmarks(register: Callable[..., None]) -> None:
    """Register ``chestx_det10``."""
    register(ChestXDet10(), name=ChestXDet10.name)
