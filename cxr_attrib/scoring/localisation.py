"""Localisation metrics against ground-truth boxes: exact union areas.

Overlapping boxes are counted once: every metric compares the *union* of the
predicted boxes with the *union* of the ground-truth boxes. Areas are exact (no
rasterisation) by coordinate compression: the distinct box edges cut the plane
into a grid of cells, each cell is either inside a union or not, and the area is
the sum of the covered cells' areas.

Conventions:

- Boxes are float ``(x1, y1, x2, y2)`` with exclusive ends, in the same frame as
  the heatmap they are compared with. Boxes with zero or negative width or height
  are ignored (they have no area). Datasets that store inclusive pixel ends must
  go through :func:`inclusive_to_exclusive` first.
- An *empty* side is one whose union has zero area (no boxes, or only
  degenerate ones).
- :func:`region_metrics` with both sides empty gives 1 for every metric (nothing
  to find, nothing predicted); with exactly one side empty it gives 0 for every
  metric (IoU 0; precision 0 when the prediction is empty; recall 0 when the
  ground truth is empty, because every predicted pixel is a false positive).
- :func:`pointing_game` and :func:`energy` judge pixels by their centre
  ``(col + 0.5, row + 0.5)``: a pixel is inside a box when
  ``x1 <= col + 0.5 < x2`` and ``y1 <= row + 0.5 < y2``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cxr_attrib.errors import DataError
from cxr_attrib.scoring.boxes import _as_heatmap
from cxr_attrib.typing import BoxArray

__all__ = [
    "RegionMetrics",
    "as_boxes",
    "inclusive_to_exclusive",
    "union_area",
    "intersection_area",
    "region_metrics",
    "energy",
]


@dataclass(frozen=True)
class RegionMetrics:
    """Union-region agreement between predicted and ground-truth boxes.

    Attributes:
        iou (float): |P ∩ G| / |P ∪ G| in [0, 1].
        precision (float): |P ∩ G| / |P| in [0, 1].
        recall (float): |P ∩ G| / |G| in [0, 1].
        f1 (float): harmonic mean of precision and recall, 2|P ∩ G| / (|P| + |G|).
    """

    iou: float
    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict[str, float]:
        """The four metrics keyed by name (``iou``, ``precision``, ``recall``, ``f1``)."""
        return asdict(self)


def as_boxes(boxes: object, *, name: str = "boxes", allow_inverted: bool = True) -> BoxArray:
    """Validate boxes and return the ones with positive area.

    Args:
        boxes (array-like): (N, 4) ``x1, y1, x2, y2`` with exclusive ends, or a flat
            length-4 box, or an empty sequence.
        name (str): how error messages call them. Default: ``"boxes"``.
        allow_inverted (bool): drop boxes with ``x2 < x1`` or ``y2 < y1`` like
            zero-area ones; False makes them an error (ground truth, where swapped
            corners or width / height boxes are a data bug). Default: True.

    Returns:
        BoxArray: (M, 4) float64, ``M <= N``: the boxes with ``x2 > x1`` and
        ``y2 > y1``, in input order.

    Raises:
        DataError: wrong shape, non-finite coordinates, or (``allow_inverted=False``)
            an inverted box.

    Examples::

        >>> as_boxes([[0, 0, 2, 2], [5, 5, 5, 9]]).tolist()
        [[0.0, 0.0, 2.0, 2.0]]
    """
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{name} must be numbers shaped (N, 4) as x1, y1, x2, y2; received "
            f"{type(boxes).__name__} that numpy cannot convert ({error})."
        ) from None
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(
            f"{name} must be shaped (N, 4) as x1, y1, x2, y2; received shape {array.shape}. "
            "Stack one row per box."
        )
    if not np.isfinite(array).all():
        raise DataError(
            f"{name} must have finite coordinates; received NaN or infinity in {array.tolist()}."
        )
    inverted = np.flatnonzero((array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1]))
    if inverted.size and not allow_inverted:
        row = int(inverted[0])
        raise DataError(
            f"{name} row {row} is inverted: {array[row].tolist()} has x2 < x1 or y2 < y1; boxes are "
            "(x1, y1, x2, y2) corners with x2 >= x1 and y2 >= y1 (convert (x, y, width, height) first)."
        )
    keep = (array[:, 2] > array[:, 0]) & (array[:, 3] > array[:, 1])
    return array[keep]


def inclusive_to_exclusive(boxes: object) -> BoxArray:
    """Convert boxes with inclusive pixel ends to exclusive ends (``x2 + 1, y2 + 1``).

    Several datasets store the last covered pixel (``x2 = x1 + width - 1``); the
    toolkit's boxes store one past it.

    Args:
        boxes (array-like): (N, 4) ``x1, y1, x2, y2`` with inclusive ends, pixels.

    Returns:
        BoxArray: (N, 4) float64 boxes with exclusive ends (a new array; every input
        row is kept, degenerate or not).

    Raises:
        DataError: wrong shape or non-finite coordinates.

    Examples::

        >>> inclusive_to_exclusive([[2, 3, 2, 5]]).tolist()
        [[2.0, 3.0, 3.0, 6.0]]
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
        raise DataError(
            f"boxes must be finite and shaped (N, 4) as x1, y1, x2, y2; received shape "
            f"{array.shape}. Stack one row per box."
        )
    return array + np.array([0.0, 0.0, 1.0, 1.0])


def _areas(pred: BoxArray, gt: BoxArray) -> tuple[float, float, float]:
    """Exact areas ``|P|``, ``|G|`` and ``|P ∩ G|`` of the two unions.

    The distinct x and y edges of all boxes cut the plane into a grid of cells. A
    2-D difference array per set (+1 / -1 at each box's four corners, then
    cumulative sums along both axes) counts the boxes covering each cell.

    Args:
        pred (BoxArray): (N, 4) positive-area boxes.
        gt (BoxArray): (M, 4) positive-area boxes.

    Returns:
        tuple[float, float, float]: the three areas in square pixels.
    """
    both = np.concatenate([pred, gt])
    if both.shape[0] == 0:
        return 0.0, 0.0, 0.0
    xs = np.unique(both[:, [0, 2]])
    ys = np.unique(both[:, [1, 3]])
    # Corners (x1, y1), (x2, y1), (x1, y2), (x2, y2) get +1, -1, -1, +1.
    ix = np.searchsorted(xs, both[:, [0, 2, 0, 2]])
    iy = np.searchsorted(ys, both[:, [1, 1, 3, 3]])
    which = np.repeat(np.array([0, 1]), [pred.shape[0], gt.shape[0]])[:, None]
    counts = np.zeros((2, ys.size, xs.size), dtype=np.int64)
    np.add.at(counts, (which, iy, ix), np.array([1, -1, -1, 1]))
    covered = counts.cumsum(axis=1).cumsum(axis=2)[:, :-1, :-1] > 0
    cell = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return (
        float(cell[covered[0]].sum()),
        float(cell[covered[1]].sum()),
        float(cell[covered[0] & covered[1]].sum()),
    )


def union_area(boxes: object) -> float:
    """Exact area of the union of boxes (overlaps counted once).

    Args:
        boxes (array-like): (N, 4) ``x1, y1, x2, y2``, exclusive ends, pixels.

    Returns:
        float: area in square pixels; 0 for no boxes.

    Examples::

        >>> union_area([[0, 0, 2, 2], [1, 1, 3, 3]])  # 4 + 4 - 1
        7.0
    """
    area, _, _ = _areas(as_boxes(boxes), np.zeros((0, 4)))
    return area


def intersection_area(pred: object, gt: object) -> float:
    """Exact area of ``union(pred) ∩ union(gt)``.

    Args:
        pred (array-like): (N, 4) predicted boxes, exclusive ends, pixels.
        gt (array-like): (M, 4) ground-truth boxes, same frame.

    Returns:
        float: area in square pixels.

    Examples::

        >>> intersection_area([[0, 0, 4, 4]], [[2, 2, 6, 6], [3, 3, 5, 5]])
        4.0
    """
    _, _, inter = _areas(as_boxes(pred, name="pred"), as_boxes(gt, name="gt"))
    return inter


def region_metrics(pred_boxes: object, gt_boxes: object) -> RegionMetrics:
    """IoU, precision, recall and F1 of the predicted union against the GT union.

    Args:
        pred_boxes (array-like): (N, 4) predicted boxes, exclusive ends.
        gt_boxes (array-like): (M, 4) ground-truth boxes in the same frame.

    Returns:
        RegionMetrics: all four in [0, 1]. Both unions empty: all 1. Exactly one
        empty: all 0 (see the module docstring).

    Examples::

        >>> region_metrics([[0, 0, 4, 4]], [[2, 0, 6, 4]])
        RegionMetrics(iou=0.3333333333333333, precision=0.5, recall=0.5, f1=0.5)
    """
    pred_area, gt_area, inter = _areas(
        as_boxes(pred_boxes, name="pred_boxes"), as_boxes(gt_boxes, name="gt_boxes")
    )
    if pred_area == 0.0 and gt_area == 0.0:
        return RegionMetrics(iou=1.0, precision=1.0, recall=1.0, f1=1.0)
    if pred_area == 0.0 or gt_area == 0.0:
        return RegionMetrics(iou=0.0, precision=0.0, recall=0.0, f1=0.0)
    ratios = (
        inter / (pred_area + gt_area - inter),
        inter / pred_area,
        inter / gt_area,
        2.0 * inter / (pred_area + gt_area),
    )
    # The intersection is a sub-sum of each area; clip the last-bit rounding.
    return RegionMetrics(*(min(1.0, ratio) for ratio in ratios))


def _centre_mask(boxes: BoxArray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies in the union of ``boxes``.

    Column ``c`` is inside ``[x1, x2)`` iff ``ceil(x1 - 0.5) <= c < ceil(x2 - 0.5)``,
    rows likewise; the union is the product of the (H, K) row and (K, W) column
    indicator matrices, thresholded.
    """
    cols, rows = np.arange(width), np.arange(height)
    in_cols = (np.ceil(boxes[:, 0:1] - 0.5) <= cols) & (cols < np.ceil(boxes[:, 2:3] - 0.5))
    in_rows = (np.ceil(boxes[:, 1:2] - 0.5) <= rows) & (rows < np.ceil(boxes[:, 3:4] - 0.5))
    return (in_rows.T.astype(np.float32) @ in_cols.astype(np.float32)) > 0.0


def energy(heatmap: np.ndarray, gt_boxes: object) -> float:
    """Share of the positive attribution mass whose pixels lie inside the GT union.

    Negative scores are ignored (clipped to 0). A pixel belongs to the union when
    its centre does, so each pixel is counted once however many boxes hold it.

    Args:
        heatmap (np.ndarray): (H, W) attribution scores.
        gt_boxes (array-like): (M, 4) ground-truth boxes, exclusive ends, in the
            heatmap's frame.

    Returns:
        float: ``sum(max(h, 0) inside) / sum(max(h, 0))`` in [0, 1]; 0 when the map
        has no positive mass.

    Examples::

        >>> h = np.array([[1.0, 3.0], [-2.0, 0.0]])
        >>> energy(h, [[1, 0, 2, 2]])
        0.75
    """
    scores = np.maximum(_as_heatmap(heatmap), 0.0, dtype=np.float64)
    total = scores.sum()
    if total == 0.0:
        return 0.0
    mask = _centre_mask(as_boxes(gt_boxes, name="gt_boxes"), *scores.shape)
    return min(1.0, float(scores[mask].sum() / total))
