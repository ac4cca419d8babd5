"""Typed records of a leaderboard store, and the thumbnails it keeps.

Every spatial value is in the **input frame** of its sample (native pixels,
``x1, y1, x2, y2`` with exclusive ends). :mod:`cxr_attrib.leaderboard.store` writes
and reads these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FilterOutcome", "ModelLoad", "RecognitionRecord", "SampleRecord", "UnitRecord", "heatmap_thumbnail",
    "image_thumbnail",
]


@dataclass(frozen=True)
class SampleRecord:
    """One benchmark sample as the store keeps it.

    Attributes:
        sample_id (str): unique within the benchmark.
        dataset (str): source dataset, e.g. ``"phantom"``.
        index (int): index inside the dataset.
        finding (str): the finding asked about.
        question (str): the base question (no mode suffix).
        split (str): benchmark split.
        gt_boxes (np.ndarray): (N, 4) float64 ground-truth boxes, input frame.
        image_size (tuple[int, int]): (H, W) of the input frame in pixels.
        thumbnail (np.ndarray | None): (h, w) uint8 grey image, the input frame
            shrunk so its long side is at most 128 px (None if the image did not load).
    """

    sample_id: str
    dataset: str
    index: int
    finding: str
    question: str
    split: str
    gt_boxes: np.ndarray = field(compare=False)
    image_size: tuple[int, int]
    thumbnail: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class FilterOutcome:
    """The causal filter's verdict on one (sample, model, mode).

    Attributes:
        sample_id (str), model (str), mode (str): the key.
        kept (bool | None): yes / no / yes / yes on the four images; None if it failed.
        approximate (bool | None): the counterfactuals were approximate (in-painted).
        predictions (tuple[str, ...]): the model's responses on the original, removed,
            kept and kept-normal images (model-written text: escape before display).
        wall_time_s (float): seconds spent.
        error (str | None): ``"ExceptionType: message"`` when the filter failed.
        worker (str): ``host:pid:shard`` of the process that ran it.
        finished_at (float): Unix time of the commit.
    """

    sample_id: str
    model: str
    mode: str
    kept: bool | None
    approximate: bool | None
    predictions: tuple[str, ...]
    wall_time_s: float
    error: str | None = None
    worker: str = ""
    finished_at: float = 0.0


@dataclass(frozen=True)
class RecognitionRecord:
    """p(positive) of one model on one image, for recognition scores (AUC, accuracy, F1).

    Attributes:
        model (str): model reference.
        sample_id (str): the positive or negative sample (``Benchmark.negatives``).
        finding (str): the finding asked about.
        label (int): 1 when the image shows the finding, 0 when it does not.
        p_positive (float | None): the model's p(positive) in [0, 1]: the teacher-forced
            p("Yes") of an LVLM, p(positive prompt) of a dual encoder; None if it failed.
        error (str | None): ``"ExceptionType: message"`` when scoring failed.
        worker (str): ``host:pid:shard``.
        finished_at (float): Unix time of the commit.
    """

    model: str
    sample_id: str
    finding: str
    label: int
    p_positive: float | None
    error: str | None = None
    worker: str = ""
    finished_at: float = 0.0


@dataclass(frozen=True)
class ModelLoad:
    """One model load by one process (a run loads each model once per process).

    Attributes:
        worker (str): ``host:pid:shard``.
        model (str): model reference.
        load_s (float): seconds the load took.
        started_at (float): Unix time the load started.
    """

    worker: str
    model: str
    load_s: float
    started_at: float


@dataclass(frozen=True)
class UnitRecord:
    """One finished work unit: (sample, model, method, params, mode, seed) and its results.

    Attributes:
        unit_id (str): SHA-256 of the unit key (:func:`~cxr_attrib.leaderboard.config.unit_id`).
        sample_id (str), model (str), method (str): the unit's sample, model and method.
        params (dict): the method's full hyper-parameters.
        mode (str): ``"direct"`` or ``"reasoning"``.
        seed (int): the seed of the method and of the scorer.
        status (str): ``"ok"`` or ``"error"``.
        answer (str | None): the explained response (model-written: escape it).
        boxes (np.ndarray): (K, 4) predicted boxes that localisation judged, input frame.
        method_boxes (np.ndarray): (M, 4) the method's own boxes, input frame.
        metrics (dict[str, float | bool | None]): every score of
            :class:`~cxr_attrib.scoring.Scores` (``iou``, ``pointing_game``,
            ``deletion_auc`` ...); empty for a failed unit.
        heatmap (np.ndarray | None): (h, w) float32 heatmap in the input frame, shrunk
            by area averaging so its long side is at most 64 px (same aspect as the image).
        wall_time_s (float): seconds of the attribution itself.
        score_time_s (float): seconds of the scorer.
        passes (dict[str, int]): model passes of the attribution (``forward_calls`` ...).
        versions (dict[str, str]): library versions.
        error (str | None): ``"ExceptionType: message"`` when the unit failed.
        traceback (str | None): the failure's traceback.
        worker (str): ``host:pid:shard`` of the process that ran it.
        finished_at (float): Unix time of the commit.
        sample (SampleRecord | None): the unit's sample, attached by :meth:`Store.units`.
        curves (dict | None): the scorer's raw target log-probs in nats
            (:meth:`~cxr_attrib.scoring.Scores.raw_curves`: ``fractions``,
            ``deletion``, ``insertion``, ``random`` curves and the ``region_*``
            log-probs); None when faithfulness was not scored.
    """

    unit_id: str
    sample_id: str
    model: str
    method: str
    params: dict[str, Any]
    mode: str
    seed: int
    status: str
    answer: str | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), compare=False)
    method_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), compare=False)
    metrics: dict[str, Any] = field(default_factory=dict)
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    wall_time_s: float = 0.0
    score_time_s: float = 0.0
    passes: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = field(default=None, repr=False)
    worker: str = ""
    finished_at: float = 0.0
    sample: SampleRecord | None = field(default=None, compare=False, repr=False)
    curves: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when the unit finished without an error."""
        return self.status == "ok"

    def as_row(self) -> dict[str, Any]:
        """A flat row for :func:`~cxr_attrib.scoring.aggregate`: the group keys
        (``model``, ``split``, ``method``, ``dataset``), ``sample``, ``finding``,
        ``status`` and every metric (absent for a failed unit)."""
        sample = self.sample
        return {
            "model": self.model, "split": sample.split if sample else "", "method": self.method,
            "dataset": sample.dataset if sample else "", "sample": self.sample_id,
            "finding": sample.finding if sample else "", "status": self.status, **self.metrics,
        }


def heatmap_thumbnail(heatmap: np.ndarray | None, max_side: int = 64) -> np.ndarray | None:
    """Shrink an (H, W) input-frame heatmap by area averaging to a long side <= ``max_side``.

    Args:
        heatmap (np.ndarray | None): (H, W) float heatmap, input frame.
        max_side (int): longest side of the result in pixels. Default: 64.

    Returns:
        np.ndarray | None: (h, w) float32 with ``h / w`` close to ``H / W``; None for None.

    >>> heatmap_thumbnail(np.ones((128, 256))).shape
    (32, 64)
    """
    if heatmap is None:
        return None
    return _shrink(np.asarray(heatmap, dtype=np.float32), max_side)


def image_thumbnail(image: np.ndarray, max_side: int = 128) -> np.ndarray:
    """Shrink an (H, W) uint8 grey image to a long side <= ``max_side`` (area averaging)."""
    return np.clip(np.rint(_shrink(np.asarray(image, dtype=np.float32), max_side)), 0, 255).astype(np.uint8)


def _shrink(array: np.ndarray, max_side: int) -> np.ndarray:
    from PIL import Image

    height, width = array.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return array.astype(np.float32)
    return np.asarray(Image.fromarray(array.astype(np.float32)).resize(size, Image.Resampling.BOX), dtype=np.float32)
