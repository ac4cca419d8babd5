"""Causal filter and attribution peak of a model on the ``phantom`` benchmark (see docs/benchmark-protocol.md, docs/phantom.md).

:func:`filter_and_localise` runs the causal filter with the phantom's exact
counterfactuals over held-out positives, then attributes every retained sample with
a method and checks whether the map's peak region (the pixels at its maximum: one
28 x 28 px tile for occlusion's 8 x 8 grid at 224 px) overlaps the exact ground-truth
box. A tile cannot lie inside a 16 px nodule, so "overlaps" is the test; the single
top-left pixel of a constant tile would be a biased stand-in for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_attrib.adapter import Adapter
from cxr_attrib.api import attribute
from cxr_attrib.filtering import FilterRecord, causal_filter
from .benchmark import PhantomBench, PhantomCounterfactuals
from .findings import FINDINGS

__all__ = ["LocalisationAudit", "filter_and_localise", "peak_overlaps"]


@dataclass(frozen=True)
class LocalisationAudit:
    """What :func:`filter_and_localise` measured.

    Attributes:
        records (tuple[FilterRecord, ...]): the causal filter's record of every positive.
        kept (dict[str, float]): retention per finding, in [0, 1].
        retention (float): retention over every positive, in [0, 1].
        peak_hits (dict[str, tuple[int, int]]): per finding, (retained samples whose
            attribution peak region overlaps a ground-truth box, retained samples).
    """

    records: tuple[FilterRecord, ...]
    kept: dict[str, float]
    retention: float
    peak_hits: dict[str, tuple[int, int]]

    @property
    def peak_counts(self) -> tuple[int, int]:
        """(retained samples whose peak region overlaps the box, retained samples), all findings."""
        return sum(h for h, _ in self.peak_hits.values()), sum(n for _, n in self.peak_hits.values())

    @property
    def peak_rate(self) -> float:
        """Fraction of retained samples whose peak region overlaps the box (NaN if none retained)."""
        hits, total = self.peak_counts
        return hits / total if total else float("nan")


def peak_overlaps(heatmap: np.ndarray, boxes: np.ndarray) -> bool:
    """Whether any pixel at the heatmap's maximum lies inside one of the boxes.

    Args:
        heatmap (np.ndarray): ``(H, W)`` attribution map, input frame.
        boxes (np.ndarray): ``(N, 4)`` boxes ``x1, y1, x2, y2`` in pixels, exclusive ends.

    Returns:
        bool: True when the peak region and a box share a pixel.
    """
    peak = heatmap >= np.max(heatmap)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64):
        rows = slice(max(int(np.floor(y1)), 0), int(np.ceil(y2)))
        cols = slice(max(int(np.floor(x1)), 0), int(np.ceil(x2)))
        if peak[rows, cols].any():
            return True
    return False


def filter_and_localise(
    adapter: Adapter,
    model: str,
    *,
    n_per_finding: int = 10,
    method: str = "occlusion",
    max_new_tokens: int = 8,
) -> LocalisationAudit:
    """Causal-filter held-out phantom positives, then check each kept sample's attribution peak.

    Args:
        adapter (Adapter): the model.
        model (str): model key written into the filter records.
        n_per_finding (int): positives per finding (``PhantomBench(n_per_finding)``).
            Default: 10.
        method (str): registered attribution method for the peak check. Default:
            ``"occlusion"``.
        max_new_tokens (int): generation budget of the filter's direct answers. Default: 8.

    Returns:
        LocalisationAudit: records, retention per finding and overall, peak hits.
    """
    samples = list(PhantomBench(n_per_finding=n_per_finding).samples(split="direct"))
    records = tuple(causal_filter(adapter, samples, PhantomCounterfactuals(), model=model,
                                  max_new_tokens=max_new_tokens))
    kept: dict[str, list[bool]] = {f: [] for f in FINDINGS}
    hits: dict[str, list[bool]] = {f: [] for f in FINDINGS}
    for sample, record in zip(samples, records):
        finding = str(sample.extra["finding_key"])
        kept[finding].append(record.kept)
        if record.kept:
            result = attribute(adapter, sample.load_image(), sample.question, method=method, answer="Yes")
            hits[finding].append(peak_overlaps(result.heatmap, sample.boxes))
    return LocalisationAudit(
        records=records,
        kept={f: float(np.mean(v)) for f, v in kept.items() if v},
        retention=float(np.mean([r.kept for r in records])),
        peak_hits={f: (int(sum(v)), len(v)) for f, v in hits.items() if kept[f]},
    )
