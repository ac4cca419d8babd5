"""MedFocus's decision: which concept the answer rests on, or the whole image.

Scores: ``delta_c`` (nats, the paper) or, with ``normalise="area"``, the drop per
share of the image hidden, ``delta_c * A / a_c`` (``a_c`` = pixels the intervention
fills, ``A`` = image content pixels), so a large region does not win only for being
large. The winner is the region with the highest score; ties go to the smaller
region (a concept before the composite that contains it). The whole image is the
answer instead when no intervention matters: ``exp(-max_c delta_c) >= tau``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cxr_attrib.pools import CONCEPTS

from .interventions import Region

__all__ = ["Decision", "NORMALISATIONS", "concept_heatmap", "decide", "region_scores"]

Normalise = Literal["none", "area"]
NORMALISATIONS: tuple[str, ...] = ("none", "area")


def region_scores(
    delta: Mapping[str, float], regions: Mapping[str, Region], normalise: Normalise, content_area: int
) -> dict[str, float]:
    """Each region's score: its delta, or its area-normalised delta.

    Args:
        delta (Mapping[str, float]): region -> delta_c in nats.
        regions (Mapping[str, Region]): the regions (for their areas).
        normalise (str): ``"none"`` or ``"area"``.
        content_area (int): pixels of image content in the working frame (A).

    Returns:
        dict[str, float]: region -> score (nats, or nats per image-share for "area").

    Example::

        >>> import numpy as np
        >>> r = {"a": Region("a", (), np.ones((2, 2), bool)), "b": Region("b", (), np.eye(2, dtype=bool))}
        >>> region_scores({"a": 1.0, "b": 1.0}, r, "area", 4)
        {'a': 1.0, 'b': 2.0}
    """
    if normalise == "none":
        return {name: float(d) for name, d in delta.items()}
    if normalise != "area":
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    return {
        name: float(d) * content_area / regions[name].area if regions[name].area else 0.0
        for name, d in delta.items()
    }


@dataclass(frozen=True)
class Decision:
    """The outcome of MedFocus's decision rule.

    Attributes:
        winner (str): the region with the highest score.
        fallback (bool): True when no region matters and the whole image is the answer.
        ratio (float): ``exp(-max_c delta_c)``, the probability ratio left by the most
            damaging intervention (compared with tau).
    """

    winner: str
    fallback: bool
    ratio: float


def decide(
    scores: Mapping[str, float], delta: Mapping[str, float], regions: Mapping[str, Region], tau: float
) -> Decision:
    """Pick the winning region, or fall back to the whole image.

    Args:
        scores (Mapping[str, float]): region -> score (see :func:`region_scores`).
        delta (Mapping[str, float]): region -> delta_c in nats.
        regions (Mapping[str, Region]): the regions (areas break ties).
        tau (float): fallback threshold in (0, 1].

    Returns:
        Decision: the winner and whether the whole image replaces it.

    Example::

        >>> import numpy as np
        >>> r = {"big": Region("big", (), np.ones((2, 2), bool)), "small": Region("small", (), np.eye(2, dtype=bool))}
        >>> decide({"big": 1.0, "small": 1.0}, {"big": 1.0, "small": 1.0}, r, 0.75)
        Decision(winner='small', fallback=False, ratio=0.36787944117144233)
    """
    winner = max(scores, key=lambda name: (scores[name], -regions[name].area))
    ratio = math.exp(-max(delta.values()))
    return Decision(winner=winner, fallback=ratio >= tau, ratio=ratio)


def concept_heatmap(scores: Mapping[str, float], regions: Mapping[str, Region], size: int) -> npt.NDArray[np.float32]:
    """Paint each concept's region with its score; where concepts overlap, the highest wins.

    Composites are not painted (they are their members).

    Args:
        scores (Mapping[str, float]): region -> score.
        regions (Mapping[str, Region]): the regions.
        size (int): working-frame side S.

    Returns:
        np.ndarray: (S, S) float32, 0 outside every concept.
    """
    heat = np.zeros((size, size), dtype=np.float32)
    for concept in CONCEPTS:
        mask = regions[concept].mask
        heat[mask] = np.maximum(heat[mask], np.float32(scores[concept]))
    return heat
