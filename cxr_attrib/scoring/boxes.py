"""Heatmap to boxes: the paper's thresholding protocol, vectorised.

A heatmap is turned into at most ``max_boxes`` tight boxes around its hottest
8-connected regions. Everything happens in the heatmap's own frame; mapping the
boxes to another frame is the caller's job (``cxr_attrib`` frames).

The protocol, exactly (``h`` is the heatmap, float64):

1. **Clip and normalise.** Negative scores (evidence *against* the answer in
   signed methods) count as no evidence: ``c = max(h, 0)``. Then min-max:
   ``n = (c - c.min()) / (c.max() - c.min())``, in ``[0, 1]``. If ``c`` is
   constant (all-zero, all non-positive or constant maps) the map localises
   nothing and the result is the whole image ``[[0, 0, W, H]]``.
2. **Threshold.** Let ``v`` be the strictly positive values of ``n`` sorted
   ascending, ``m = len(v)``, ``p = quantile * (m - 1)``, ``k = floor(p)``. The
   threshold is ``t = v[k] + (p - k) * (v[k + 1] - v[k])`` (``v[k]`` when
   ``k = m - 1``), i.e. numpy's default ``"linear"`` quantile. Foreground pixels
   are those with ``n >= t`` (so ``t > 0`` and only positive pixels qualify).
3. **Components.** 8-connected components of the foreground
   (:func:`scipy.ndimage.label`, 3x3 structure of ones); components with fewer
   than ``min_component_px`` pixels are dropped.
4. **Rank.** Components are ranked by the mean of ``n`` over their pixels,
   highest first; ties keep label order, i.e. the row-major position of each
   component's first pixel. The first ``max_boxes`` are kept.
5. **Boxes.** Each kept component gives its tight box ``(x1, y1, x2, y2)`` with
   exclusive ends (``x2 = last column + 1``). If no component survives the size
   filter, the map localises nothing and the result is the whole image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cxr_attrib.errors import DataError
from cxr_attrib.typing import BoxArray

__all__ = ["heatmap_to_boxes", "whole_image_box"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_heatmap(heatmap: np.ndarray, *, name: str = "heatmap") -> np.ndarray:
    """Validate a heatmap and return it as a float64 (H, W) array.

    Args:
        heatmap (np.ndarray): (H, W) real scores.
        name (str): how error messages call it. Default: ``"heatmap"``.

    Returns:
        np.ndarray: (H, W) float64 view or copy of ``heatmap``.

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
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
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


def _linear_quantile(values: np.ndarray, quantile: float) -> float:
    """numpy's ``"linear"`` quantile of a 1-D array, via partial sorting."""
    position = quantile * (values.size - 1)
    low = int(np.floor(position))
    high = min(low + 1, values.size - 1)
    ordered = np.partition(values, (low, high))
    return float(ordered[low] + (position - low) * (ordered[high] - ordered[low]))


def heatmap_to_boxes(
    heatmap: np.ndarray,
    *,
    quantile: float = 0.9,
    min_component_px: int = 16,
    max_boxes: int = 10,
) -> BoxArray:
    """Boxes around the hottest 8-connected regions of a heatmap (paper protocol).

    See the module docstring for the exact definition of every step.

    Args:
        heatmap (np.ndarray): (H, W) real attribution scores, any unit; only their
            order and sign matter.
        quantile (float): the threshold is this quantile of the strictly positive
            normalised scores; pixels at or above it are foreground. Default: 0.9.
        min_component_px (int): components with fewer pixels are dropped. Default: 16.
        max_boxes (int): at most this many boxes, by decreasing mean heat. Default: 10.

    Returns:
        BoxArray: (N, 4) float64 boxes ``x1, y1, x2, y2`` in the heatmap's pixels,
        exclusive ends, hottest first, ``1 <= N <= max_boxes``. A map without
        positive contrast, or without a component of ``min_component_px`` pixels,
        gives the whole image ``[[0, 0, W, H]]``.

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
    normalised = np.maximum(scores, 0.0)  # a new array, normalised in place below
    low, high = normalised.min(), normalised.max()
    if not high > low:
        return whole_image_box(height, width)
    normalised -= low
    normalised /= high - low

    threshold = _linear_quantile(normalised[normalised > 0.0], quantile)
    foreground = normalised >= threshold
    # Label only the foreground's bounding rectangle (components cannot leave it).
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    crop = (slice(top, int(rows[-1]) + 1), slice(left, int(cols[-1]) + 1))
    labels, count = ndimage.label(foreground[crop], structure=_EIGHT_CONNECTED)
    inside = labels > 0
    member = labels[inside]  # row-major order
    sizes = np.bincount(member, minlength=count + 1)[1:]
    heat = np.bincount(member, weights=normalised[crop][inside], minlength=count + 1)[1:]
    kept = np.flatnonzero(sizes >= min_component_px)
    if kept.size == 0:
        return whole_image_box(height, width)

    mean_heat = heat[kept] / sizes[kept]
    ranked = kept[np.argsort(-mean_heat, kind="stable")][:max_boxes]
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [
            (slices[i][1].start, slices[i][0].start, slices[i][1].stop, slices[i][0].stop)
            for i in ranked
        ],
        dtype=np.float64,
    )
    return boxes + np.array([left, top, left, top], dtype=np.float64)
