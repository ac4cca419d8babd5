"""MedFocus's causal interventions: hide one concept at a time and measure the drop.

Every concept and composite becomes a :class:`Region` (its box(es) and the pixels an
intervention fills). The original image and one intervened copy per region are
scored by the adapter in the same batched call(s), and each region gets

    delta_c = sum_t max(0, l_t(x) - l_t(x_c))       (nats)

over the T target tokens, where ``l_t`` is the teacher-forced log-prob of token t,
``x`` the original and ``x_c`` the image with region c filled with the baseline.
``r_c = exp(-delta_c)`` is the probability ratio left when c is hidden.

Everything here is in the **working frame** ((S, S) images, exclusive-end boxes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.filtering import box_mask
from cxr_attrib.pools import COMPOSITES, CONCEPTS
from cxr_attrib.typing import WorkingImage

__all__ = ["Drops", "Region", "Shape", "concept_regions", "intervene", "measure_drops"]

Box = tuple[float, float, float, float]
Shape = Literal["box", "mask"]
SHAPES: tuple[str, ...] = ("box", "mask")


@dataclass(frozen=True, eq=False)
class Region:
    """One concept or composite as an intervention sees it.

    Attributes:
        name (str): concept or composite name.
        boxes (tuple[Box, ...]): its box (a concept) or its members' boxes (a
            composite), working frame, exclusive ends.
        mask (np.ndarray): (S, S) bool, the pixels the intervention fills.
    """

    name: str
    boxes: tuple[Box, ...]
    mask: npt.NDArray[np.bool_]

    @property
    def area(self) -> int:
        """Number of working-frame pixels the intervention fills."""
        return int(self.mask.sum())


def concept_regions(
    boxes: Mapping[str, Box], masks: Mapping[str, npt.NDArray[np.bool_]], shape: Shape, size: int
) -> dict[str, Region]:
    """The 11 concepts followed by the 4 composites as intervention regions.

    Args:
        boxes (Mapping[str, Box]): concept -> box, working frame, exclusive ends.
        masks (Mapping[str, np.ndarray]): concept -> (S, S) bool mask (used when
            ``shape="mask"``).
        shape (str): ``"box"`` fills each box (the paper), ``"mask"`` fills the mask.
        size (int): working-frame side S.

    Returns:
        dict[str, Region]: in the order of ``CONCEPTS`` then ``COMPOSITES``.

    Example::

        >>> from cxr_attrib.pools import CONCEPTS
        >>> b = {c: (0.0, 0.0, 2.0, 1.0) for c in CONCEPTS}
        >>> r = concept_regions(b, {}, "box", 4)
        >>> r["bilateral_lungs"].boxes, r["left_lung"].area
        (((0.0, 0.0, 2.0, 1.0), (0.0, 0.0, 2.0, 1.0)), 2)
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")

    def pixels(concept: str) -> npt.NDArray[np.bool_]:
        if shape == "mask":
            return np.asarray(masks[concept], dtype=bool)
        return box_mask([boxes[concept]], (size, size))

    regions = {c: Region(c, (tuple(boxes[c]),), pixels(c)) for c in CONCEPTS}
    for name, parts in COMPOSITES.items():
        union = np.logical_or.reduce([regions[p].mask for p in parts])
        regions[name] = Region(name, tuple(tuple(boxes[p]) for p in parts), union)
    return regions


def intervene(image: WorkingImage, baseline: WorkingImage, regions: Sequence[Region]) -> list[WorkingImage]:
    """One copy of ``image`` per region with the region's pixels taken from ``baseline``.

    Args:
        image (np.ndarray): (S, S) float32 working-frame image in [0, 1].
        baseline (np.ndarray): (S, S) float32 fill (see :func:`cxr_attrib.perturb.baseline_image`).
        regions (Sequence[Region]): the K regions.

    Returns:
        list[np.ndarray]: K (S, S) float32 images.
    """
    return [np.where(region.mask, baseline, image).astype(np.float32) for region in regions]


@dataclass(frozen=True, eq=False)
class Drops:
    """Per-token and total log-prob drops of K interventions.

    Attributes:
        names (tuple[str, ...]): the K region names, in scoring order.
        per_token (np.ndarray): (K, T) float64 ``max(0, l_t(x) - l_t(x_c))`` in nats.
        original (np.ndarray): (T,) float32 target log-probs of the original image.
    """

    names: tuple[str, ...]
    per_token: npt.NDArray[np.float64]
    original: npt.NDArray[np.float32]

    @property
    def delta(self) -> dict[str, float]:
        """Region name -> delta_c (nats), the sum of its per-token drops."""
        return dict(zip(self.names, self.per_token.sum(axis=1).tolist()))


def measure_drops(
    adapter: Adapter,
    query: Query,
    image: WorkingImage,
    baseline: WorkingImage,
    regions: Sequence[Region],
    *,
    batch_size: int,
) -> Drops:
    """Score the original and every intervention together; return the drops.

    The original is the first image of the first batch, so with ``batch_size >= K + 1``
    this is exactly one forward call of K + 1 sequences.

    Args:
        adapter (Adapter): the model.
        query (Query): the text and target being explained.
        image (np.ndarray): (S, S) float32 working-frame image.
        baseline (np.ndarray): (S, S) float32 fill.
        regions (Sequence[Region]): the K regions to hide.
        batch_size (int): images per forward call.

    Returns:
        Drops: (K, T) per-token drops in nats.
    """
    images = [np.asarray(image, dtype=np.float32), *intervene(image, baseline, regions)]
    logprobs = adapter.score(images, query, batch_size=batch_size).double().cpu().numpy()  # (K + 1, T)
    per_token = np.maximum(0.0, logprobs[0][None, :] - logprobs[1:])
    return Drops(tuple(r.name for r in regions), per_token, logprobs[0].astype(np.float32))
