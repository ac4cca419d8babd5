"""One benchmark item (:class:`Sample`), the type benchmarks, the causal filter and the scorer share.

It lives below :mod:`cxr_attrib.benchmark` and :mod:`cxr_attrib.filtering` so that
neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .typing import GreyImage

__all__ = ["Sample"]


@dataclass(frozen=True)
class Sample:
    """One benchmark item: an image, a yes/no question and its evidence boxes.

    Attributes:
        id (str): unique within its benchmark, stable across runs (used for sharding
            and resuming), e.g. ``"vindr_cxr/17"``.
        dataset (str): source dataset, e.g. ``"imagenome"``.
        index (int): the item's index inside its dataset (MedGround-Bench's join key).
        finding (str): the finding asked about, e.g. ``"pleural effusion"``.
        question (str): the base question without the mode suffix.
        answer (str): the reference answer text (``"Yes"`` for every MedGround item).
        boxes (np.ndarray): (N, 4) float64 ground-truth boxes in the image's own
            (input) frame, native pixels, exclusive ends.
        load_image (Callable[[], GreyImage]): returns the (H, W) uint8 grey image.
        model (str | None): the model this sample was causally verified for, if any.
        mode (str): ``"direct"`` or ``"reasoning"``.
        split (str): the benchmark split, e.g. ``"direct"``.
        extra (dict): small JSON-safe facts (record fields, paths).
        load_mask (Callable[[], np.ndarray] | None): returns the (H, W) bool
            ground-truth mask in the input frame, for benchmarks whose truth is a mask
            (SIIM-ACR); None when the truth is the union of ``boxes``.
    """

    id: str
    dataset: str
    index: int
    finding: str
    question: str
    answer: str
    boxes: np.ndarray
    load_image: Callable[[], GreyImage] = field(repr=False, compare=False)
    model: str | None = None
    mode: Literal["direct", "reasoning"] = "direct"
    split: str = "direct"
    extra: dict = field(default_factory=dict, compare=False)
    load_mask: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)
