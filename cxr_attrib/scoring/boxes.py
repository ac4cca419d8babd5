"""Heatmap to boxes: the paper's thresholding protocol, vectorised.

A heatmap is turned into at most ``max_boxes`` tight boxes around its hottest
8-connected regions. Everything happens in the heatmap's own frame; mapping the
boxes to another frame is the caller's job (:func:`input_heatmap_boxes` does it
for an input-frame heatmap and its :class:`~cxr_attrib.frames.ResizePad`).

The paper's protocol: min-max normalise the map to [0, 1], threshold at the
``quantile`` (0.9) of the strictly positive values, keep 8-connected components
of at least ``min_component_px`` (16) pixels, box at most ``max_boxes`` (10) of
them ranked by mean heat; a map with nothing to threshold gives the whole image.
Only the image **content** takes part (``mask``: the working frame's padding is
not part of the image), so padding a non-square image, or adding a constant to
the map, or scaling it by a positive factor, never changes the boxes. Exactly,
for an (H, W) heatmap ``h`` and content mask ``m`` (default: everywhere):

1. **Contrast.** Let ``c`` be ``h`` on the content. If ``c`` is constant its
   normalisation is all zero, the map localises nothing, and the result is the
   whole image ``[[0, 0, W, H]]`` (with a mask: the tight box of the content).
2. **Threshold.** Min-max normalisation ``n = (c - c.min()) / (c.max() - c.min())``
   is affine and increasing, so the rule is applied to ``c`` itself, which avoids
   rounding: the pixels with ``n > 0`` are those with ``c > c.min()``. Let ``v`` be
   their values sorted ascending and ``k = len(v)``. Foreground pixels are the
   content pixels with ``c >= v[ceil(quantile * (k - 1))]`` (``quantile * (k - 1)``
   evaluated in float64). This is ``n >= t`` with ``t`` numpy's default
   ``"linear"`` quantile of the positive ``n``, minus its rounding: ``t`` lies
   between the consecutive order statistics ``v[floor(.)]`` and ``v[ceil(.)]``,
   and no value lies strictly between them.
3. **Components.** 8-connected components of the foreground
   (:func:`scipy.ndimage.label`, 3x3 structure of ones); components with fewer
   than ``min_component_px`` pixels are dropped.
4. **Rank.** Components are ranked by the mean of ``c`` over their pixels (the
   same order as the mean of ``n``), highest first; ties keep label order, i.e.
   the row-major position of each component's first pixel. The first
   ``max_boxes`` are kept.
5. **Boxes.** Each kept component gives its tight box ``(x1, y1, x2, y2)`` with
   exclusive ends (``x2 = last column + 1``). If no component survives the size
   filter, the map localises nothing and the result is the whole image.

Signed maps (evidence against the answer below zero) are thresholded like any
other: only the order of the scores matters. Floating-point heatmaps are
processed in their own dtype (comparisons and selection are exact); other real
dtypes are converted to float64.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from cxr_attrib.errors import DataError
from cxr_attrib.typing import BoxArray

if TYPE_CHECKING:
    from cxr_attrib.frames import ResizePad

__all__ = ["DERIVED_BOXES", "heatmap_to_boxes", "input_heatmap_boxes", "whole_image_box"]

DERIVED_BOXES = (
    "heatmap_to_boxes(quantile=0.9, min_component_px=16, max_boxes=10) of the working-frame "
    "heatmap, image content only"
)
"""How :func:`input_heatmap_boxes` makes boxes (recorded in ``meta.info`` when the core derives them)."""

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_SAMPLE_STRIDE = 16  # the threshold's lower bound comes from every 16th value ...
_SAMPLE_MIN = 4096  # ... when at least this many values take part ...
_SAMPLE_MARGIN = 0.05  # ... at this fraction of them below the wanted rank


def _as_heatmap(heatmap: np.ndarray, *, name: str = "heatmap") -> np.ndarray:
    """Validate a heatmap and return it as a floating (H, W) array.

    Args:
        heatmap (np.ndarray): (H, W) real scores.
        name (str): how error messages call it. Default: ``"heatmap"``.

    Returns:
        np.ndarray: (H, W) ``heatmap`` itself when it is a floating array, else a
        float64 copy.

    Raises:
        DataError: not 2-D, empty, not real-valued, or with NaN / infinite values.
    """
    array = np.asarray(heatmap)
    if array.ndim != 2 or array.size == 0:
        raise DataError(
            f"{name} must be a non-empty 2-D (H, W) array; received shape {array.shape}. "
            "Squeeze batch/channel axes (e.g. heatmap[0]) before scoring."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(
        array
    ):
        raise DataError(
            f"{name} must hold real numbers; received dtype {array.dtype}. "
            "Convert it with np.asarray(heatmap, dtype=np.float32)."
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    # min and max propagate NaN, so both are finite iff every value is.
    if not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise DataError(
            f"{name} must be finite; received {bad} NaN or infinite value(s) in shape "
            f"{array.shape}. Fix the method that produced it, or replace them with "
            "np.nan_to_num(heatmap, nan=0.0) if zero is the right meaning."
        )
    return array


def whole_image_box(height: int, width: int) -> BoxArray:
    """The box covering a whole ``height`` x ``width`` image.

    Args:
        height (int): image height H in pixels.
        width (int): image width W in pixels.

    Returns:
        BoxArray: (1, 4) float64 ``[[0, 0, W, H]]`` (exclusive ends).

    Examples::

        >>> whole_image_box(3, 5).tolist()
        [[0.0, 0.0, 5.0, 3.0]]
    """
    return np.array([[0.0, 0.0, float(width), float(height)]])


def _check_params(quantile: float, min_component_px: int, max_boxes: int) -> None:
    if not 0.0 <= quantile <= 1.0:
        raise DataError(
            f"quantile must be in [0, 1]; received {quantile!r}. The paper uses 0.9."
        )
    if int(min_component_px) != min_component_px or min_component_px < 1:
        raise DataError(
            f"min_component_px must be an integer >= 1; received {min_component_px!r}. "
            "The paper uses 16."
        )
    if int(max_boxes) != max_boxes or max_boxes < 1:
        raise DataError(
            f"max_boxes must be an integer >= 1; received {max_boxes!r}. The paper uses 10."
        )


def _kth_above(values: np.ndarray, floor: np.floating, count: int, k: int) -> np.floating:
    """The ``k``-th smallest (0-based) of the ``count`` entries of ``values`` above ``floor``.

    Exact. Only the top of the order matters, so a strided sample first gives a
    lower bound ``g`` (its matching quantile minus a margin); when at least
    ``count - k`` entries are ``>= g`` only those are partially sorted, otherwise
    all entries above ``floor`` are.

    Args:
        values (np.ndarray): (N,) floating scores.
        floor (np.floating): only entries strictly above it take part.
        count (int): how many entries are above ``floor`` (>= 1).
        k (int): rank in ``[0, count)``.

    Returns:
        np.floating: the order statistic, a scalar of ``values``' dtype.
    """
    need = count - k  # entries >= the answer
    sample_rank = k / count - _SAMPLE_MARGIN
    if count >= _SAMPLE_MIN and sample_rank > 0.0:
        sample = values[::_SAMPLE_STRIDE]
        sample = sample[sample > floor]
        if sample.size:
            rank = int(sample_rank * (sample.size - 1))
            top = values[values >= np.partition(sample, rank)[rank]]
            if top.size >= need:
                return np.partition(top, top.size - need)[top.size - need]
    return np.partition(values[values > floor], k)[k]


def heatmap_to_boxes(
    heatmap: np.ndarray,
    *,
    quantile: float = 0.9,
    min_component_px: int = 16,
    max_boxes: int = 10,
    mask: np.ndarray | None = None,
) -> BoxArray:
    """Boxes around the hottest 8-connected regions of a heatmap (paper protocol).

    See the module docstring for the exact definition of every step.

    Args:
        heatmap (np.ndarray): (H, W) real attribution scores, any unit; only their
            order matters.
        quantile (float): the threshold is this quantile of the strictly positive
            normalised scores; pixels at or above it are foreground. Default: 0.9.
        min_component_px (int): components with fewer pixels are dropped. Default: 16.
        max_boxes (int): at most this many boxes, by decreasing mean heat. Default: 10.
        mask (np.ndarray | None): (H, W) bool, True on the image content; the rest
            (padding) never takes part. Default: None (everything is content).

    Returns:
        BoxArray: (N, 4) float64 boxes ``x1, y1, x2, y2`` in the heatmap's pixels,
        exclusive ends, hottest first, ``1 <= N <= max_boxes``. A map without
        contrast, or without a component of ``min_component_px`` pixels, gives the
        whole image ``[[0, 0, W, H]]`` (with a ``mask``: the tight box of the content).

    Raises:
        DataError: a malformed heatmap (not 2-D, NaN, ...) or parameter.

    Examples::

        >>> h = np.zeros((8, 8), dtype=np.float32)
        >>> h[1:3, 2:6] = 1.0  # a 2 x 4 blob
        >>> heatmap_to_boxes(h, min_component_px=4).tolist()
        [[2.0, 1.0, 6.0, 3.0]]
        >>> heatmap_to_boxes(np.zeros((4, 6))).tolist()
        [[0.0, 0.0, 6.0, 4.0]]
    """
    _check_params(quantile, min_component_px, max_boxes)
    scores = _as_heatmap(heatmap)
    height, width = scores.shape
    content = None if mask is None else _as_mask(mask, scores.shape)
    flat = scores.ravel() if content is None else scores[content]
    whole = whole_image_box(height, width) if content is None or not flat.size else _mask_box(content)
    if flat.size == 0:
        return whole
    low, high = flat.min(), flat.max()
    if not high > low:
        return whole

    count = int(np.count_nonzero(flat > low))
    threshold = _kth_above(flat, low, count, math.ceil(quantile * (count - 1)))
    foreground = scores >= threshold
    if content is not None:
        foreground &= content
    # Label only the foreground's bounding rectangle (components cannot leave it).
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    crop = (slice(top, int(rows[-1]) + 1), slice(left, int(cols[-1]) + 1))
    inside = foreground[crop]
    labels, n_labels = ndimage.label(inside, structure=_EIGHT_CONNECTED)
    member = labels[inside]  # row-major order
    sizes = np.bincount(member, minlength=n_labels + 1)
    heat = np.bincount(member, weights=scores[crop][inside], minlength=n_labels + 1)
    kept = np.flatnonzero(sizes[1:] >= min_component_px) + 1  # label ids
    if kept.size == 0:
        return whole

    # Stable sort: equal means keep label order (row-major first pixel).
    ranked = kept[np.argsort(-(heat[kept] / sizes[kept]), kind="stable")][:max_boxes]
    return _component_boxes(inside, member, ranked, n_labels) + [left, top, left, top]


def _as_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    content = np.asarray(mask)
    if content.shape != shape or content.dtype != bool:
        raise DataError(
            f"mask must be a bool array of the heatmap's shape {shape}; received {content.dtype} {content.shape}"
        )
    return content


def _mask_box(mask: np.ndarray) -> BoxArray:
    """(1, 4) tight exclusive-end box of the True pixels of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=np.float64)


def input_heatmap_boxes(heatmap: np.ndarray, frame: ResizePad) -> BoxArray:
    """Evidence boxes of an input-frame heatmap, made the way the scorer makes them.

    The heatmap is mapped to ``frame``'s working frame, boxed there over the image
    content only with the default :func:`heatmap_to_boxes` protocol, and the boxes
    are mapped back (see :data:`DERIVED_BOXES`).

    Args:
        heatmap (np.ndarray): (H, W) scores in the input frame.
        frame (ResizePad): the input <-> working frame transform of the result.

    Returns:
        BoxArray: (N, 4) float64 boxes in input pixels, exclusive ends, hottest first.
    """
    working = frame.heatmap_to_working(heatmap)
    return frame.boxes_to_input(heatmap_to_boxes(working, mask=frame.content_mask()))


def _component_boxes(
    inside: np.ndarray, member: np.ndarray, ranked: np.ndarray, n_labels: int
) -> BoxArray:
    """Tight exclusive-end boxes of the ranked components, in rank order.

    Args:
        inside (np.ndarray): (h, w) bool foreground that was labelled.
        member (np.ndarray): (F,) label of each foreground pixel, row-major order.
        ranked (np.ndarray): (K,) label ids to box, in output order.
        n_labels (int): the largest label id.

    Returns:
        BoxArray: (K, 4) float64 boxes in ``inside``'s pixels.
    """
    rank = np.zeros(n_labels + 1, dtype=np.intp)
    rank[ranked] = np.arange(1, ranked.size + 1)
    pixel_rank = rank[member]
    chosen = pixel_rank > 0
    # Group the chosen pixels by rank; a stable sort keeps each group row-major,
    # so a group's first and last pixels hold its first and last rows.
    order = np.argsort(pixel_rank[chosen], kind="stable")
    rows, cols = np.divmod(np.flatnonzero(inside)[chosen][order], inside.shape[1])
    ends = np.cumsum(np.bincount(pixel_rank[chosen], minlength=ranked.size + 1)[1:])
    starts = np.concatenate(([0], ends[:-1]))
    return np.stack(
        [
            np.minimum.reduceat(cols, starts),
            rows[starts],
            np.maximum.reduceat(cols, starts) + 1,
            rows[ends - 1] + 1,
        ],
        axis=1,
    ).astype(np.float64)
