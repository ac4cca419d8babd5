"""PadChest-GR items, numbered the way MedGround-Bench numbers them.

The studies file is a JSON list of studies, each with ``ImageID`` (the image's file
name) and ``findings``, a list of objects with ``abnormal`` (bool), ``labels`` (list
of str), ``boxes`` and ``extra_boxes`` (lists of ``[x1, y1, x2, y2]`` relative to the
image's width and height, in [0, 1]). Only the first 2,000 studies are used. Walking
them in order, every abnormal finding with at least one box (``boxes`` +
``extra_boxes``) is one item; its index is its position in that walk and its finding
is its labels joined by ``" or "``. Relative boxes become native pixels by
multiplying by the image's width and height (read from the file header, without
decoding); ``x2, y2`` are exclusive ends (a box reaching 1.0 ends at the image edge).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..safeio import open_regular, read_text
from ..typing import BoxArray
from .imagenome import checked_box

__all__ = ["PADCHEST_STUDIES", "PadChestItem", "image_size", "load_padchest", "to_pixels"]

PADCHEST_STUDIES = 2000
"""How many leading studies of the studies file MedGround-Bench used."""


@dataclass(frozen=True)
class PadChestItem:
    """One abnormal finding with boxes.

    Attributes:
        image_id (str): the ``ImageID``, the image's file name.
        finding (str): the labels joined by ``" or "``.
        relative_boxes (BoxArray): (N, 4) float64 ``x1, y1, x2, y2`` as fractions of
            the image width and height, ``boxes`` then ``extra_boxes`` (read-only).
        study (int): the study's position in the studies file.
        finding_number (int): the finding's position in its study's ``findings``.
    """

    image_id: str
    finding: str
    relative_boxes: BoxArray
    study: int
    finding_number: int

    @property
    def image_relpath(self) -> str:
        """The image's path under the PadChest-GR image folder."""
        return self.image_id


def load_padchest(path: Path, *, max_studies: int = PADCHEST_STUDIES) -> list[PadChestItem]:
    """Read the studies file and return the items in MedGround-Bench index order.

    Args:
        path (Path): the studies JSON.
        max_studies (int): how many leading studies to use. Default: 2000.

    Returns:
        list[PadChestItem]: item ``i`` is MedGround-Bench's ``("padchest_gr", i)``.

    Raises:
        DataError: the file is missing, is not a JSON list of studies, or a study or
            finding lacks a field (the message names the file, study and finding).
    """
    try:
        studies = json.loads(read_text(path, what="PadChest-GR studies file"))
    except OSError as error:
        raise DataError(f"cannot read the PadChest-GR studies file {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(studies, list):
        raise DataError(
            f"{path}: expected a JSON list of studies, got {type(studies).__name__}."
        )
    items = []
    for number, study in enumerate(studies[:max_studies]):
        where = f"{path}, study [{number}]"
        try:
            image_id = study["ImageID"]
            findings = study["findings"]
        except (KeyError, TypeError) as error:
            raise DataError(
                f"{where}: expected an object with ImageID and findings, missing {error}."
            ) from error
        for finding_number, finding in enumerate(findings):
            try:
                if not finding["abnormal"]:
                    continue
                raw = [*finding["boxes"], *finding["extra_boxes"]]
                if not raw:
                    continue
                labels = finding["labels"]
                if not labels or not all(isinstance(label, str) for label in labels):
                    raise ValueError(f"expected a non-empty list of label strings, got {labels!r}")
                boxes = [checked_box(tuple(float(v) for v in box), box) for box in raw]
            except (KeyError, TypeError, ValueError) as error:
                raise DataError(
                    f"{where}, finding [{finding_number}]: malformed ({error!r}); an abnormal "
                    "finding needs labels, boxes and extra_boxes as lists of [x1, y1, x2, y2]."
                ) from error
            relative = np.array(boxes, dtype=np.float64).reshape(-1, 4)
            relative.flags.writeable = False
            items.append(
                PadChestItem(str(image_id), " or ".join(labels), relative, number, finding_number)
            )
    return items


def image_size(path: Path) -> tuple[int, int]:
    """Read an image's ``(width, height)`` in pixels from its header, without decoding.

    Raises:
        DataError: the file is missing or not an image PIL can identify.
    """
    try:
        with open_regular(path, what="PadChest-GR image") as stream, Image.open(stream) as image:
            return image.size
    except (OSError, UnidentifiedImageError, DataError) as error:
        raise DataError(
            f"cannot read the size of PadChest-GR image {path}: {error}. The boxes are "
            "relative, so the image must be present to place them."
        ) from error


def to_pixels(relative: BoxArray, width: int, height: int) -> BoxArray:
    """Scale relative boxes to native pixels.

    Args:
        relative (BoxArray): (N, 4) ``x1, y1, x2, y2`` in [0, 1].
        width (int): image width ``W`` in pixels.
        height (int): image height ``H`` in pixels.

    Returns:
        BoxArray: (N, 4) float64 boxes in pixels, exclusive ends.

    Examples::

        >>> to_pixels(np.array([[0.1, 0.2, 0.5, 1.0]]), 40, 20).tolist()
        [[4.0, 4.0, 20.0, 20.0]]
    """
    return np.asarray(relative, dtype=np.float64) * np.array([width, height, width, height])
