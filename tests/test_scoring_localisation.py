"""Union-region metrics, pointing game and energy against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cxr_attrib.errors import DataError
from cxr_attrib.scoring import (
    RegionMetrics,
    as_boxes,
    energy,
    inclusive_to_exclusive,
    intersection_area,
    pointing_game,
    region_metrics,
    union_area,
)

# ---------------------------------------------------------------- union areas


def test_union_area_counts_overlaps_once():
    assert union_area([[0, 0, 2, 2], [1, 1, 3, 3]]) == 7.0  # 4 + 4 - 1
    assert union_area([[0, 0, 4, 4], [1, 1, 2, 2]]) == 16.0  # contained
    assert union_area([[0, 0, 4, 4], [0, 0, 4, 4]]) == 16.0  # duplicate
    assert union_area([[0, 0, 1, 1], [5, 5, 7, 6]]) == 3.0  # disjoint
    # three boxes: 10x2 bar, 2x10 bar crossing it, and a box inside the crossing
    assert union_area([[0, 4, 10, 6], [4, 0, 6, 10], [4, 4, 6, 6]]) == 36.0


def test_union_area_exact_for_fractional_boxes():
    assert union_area([[0.5, 0.5, 1.5, 2.0]]) == 1.5
    # 0.3 x 1 + 0.3 x 1.5 - overlap 0.2 x 0.5
    assert math.isclose(union_area([[0.0, 0.0, 0.3, 1.0], [0.1, 0.5, 0.4, 2.0]]), 0.65)


def test_empty_and_degenerate_boxes_have_no_area():
    assert union_area([]) == 0.0
    assert union_area(np.zeros((0, 4))) == 0.0
    assert union_area([[3, 3, 3, 9], [5, 5, 4, 8]]) == 0.0  # zero width, negative width
    assert as_boxes([[3, 3, 3, 9], [0, 0, 1, 1]]).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert as_boxes([0, 0, 2, 3]).shape == (1, 4)


def test_intersection_is_between_the_two_unions():
    # GT: two overlapping boxes (union 4x4 + 4x4 - 2x2 = 28); prediction 0..4 square.
    gt = [[2, 2, 6, 6], [4, 4, 8, 8]]
    assert intersection_area([[0, 0, 4, 4]], gt) == 4.0
    assert intersection_area([[0, 0, 8, 8]], gt) == union_area(gt) == 28.0
    assert intersection_area([[0, 0, 2, 2]], gt) == 0.0  # touching corners only


def test_rejects_malformed_boxes():
    with pytest.raises(DataError, match=r"\(N, 4\)"):
        union_area([[0, 0, 1]])
    with pytest.raises(DataError, match="finite"):
        union_area([[0, 0, np.nan, 1]])
    with pytest.raises(DataError, match="numbers"):
        union_area([["a", 0, 1, 1]])


# ------------------------------------------------------------- region metrics


def test_region_metrics_hand_case():
    # P = 4x4 at origin (16), G = 4x4 shifted by 2 in x (16), I = 2x4 = 8, U = 24.
    m = region_metrics([[0, 0, 4, 4]], [[2, 0, 6, 4]])
    assert m == RegionMetrics(iou=8 / 24, precision=0.5, recall=0.5, f1=0.5)
    assert m.to_dict() == {"iou": 8 / 24, "precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_overlapping_gt_boxes_are_counted_once():
    # GT union = 16 + 16 - 4 = 28, not 32; the prediction (area 64) contains it,
    # so I = 28, precision 28 / 64, recall 1.
    m = region_metrics([[0, 0, 8, 8]], [[2, 2, 6, 6], [4, 4, 8, 8]])
    assert m.recall == 1.0
    assert m.precision == 28 / 64
    assert m.iou == 28 / 64
    assert m.f1 == 2 * 28 / (64 + 28)


def test_empty_cases():
    box = [[1, 1, 5, 5]]
    zeros = RegionMetrics(iou=0.0, precision=0.0, recall=0.0, f1=0.0)
    assert region_metrics([], box) == zeros  # empty prediction: precision 0
    assert region_metrics(box, []) == zeros  # empty GT: every predicted pixel is wrong
    assert region_metrics([], []) == RegionMetrics(1.0, 1.0, 1.0, 1.0)
    assert region_metrics([[2, 2, 2, 9]], [[0, 0, 0, 0]]) == RegionMetrics(1.0, 1.0, 1.0, 1.0)


def test_boxes_touching_each_other_or_the_border():
    # Sharing an edge is no overlap.
    assert region_metrics([[0, 0, 2, 2]], [[2, 0, 4, 2]]).iou == 0.0
    # Whole-image prediction against a GT box on the border of a 10 x 10 image.
    m = region_metrics([[0, 0, 10, 10]], [[0, 6, 4, 10]])
    assert (m.precision, m.recall, m.iou) == (16 / 100, 1.0, 16 / 100)


def test_inclusive_ends_change_areas():
    inclusive = [[0, 0, 1, 1], [4, 4, 4, 4]]  # a 2x2 box and a single pixel
    exclusive = inclusive_to_exclusive(inclusive)
    assert exclusive.tolist() == [[0.0, 0.0, 2.0, 2.0], [4.0, 4.0, 5.0, 5.0]]
    assert union_area(inclusive) == 1.0  # the single pixel vanishes, the box shrinks
    assert union_area(exclusive) == 5.0
    pred = [[0, 0, 2, 2]]
    assert region_metrics(pred, exclusive).precision == 1.0
    assert region_metrics(pred, inclusive).precision == 0.25
    assert inclusive_to_exclusive([]).shape == (0, 4)
    with pytest.raises(DataError):
        inclusive_to_exclusive([[0, 0, 1]])


def test_a_box_split_in_halves_gives_the_same_metrics():
    gt = [[3, 1, 9, 7]]
    whole = region_metrics([[0, 0, 6, 4]], gt)
    halves = region_metrics([[0, 0, 3, 4], [3, 0, 6, 4]], gt)
    assert whole == halves
    assert region_metrics(gt, [[0, 0, 6, 4]]) == region_metrics(gt, [[0, 0, 6, 2], [0, 2, 6, 4]])


# ------------------------------------------------------ pointing game, energy


def test_pointing_game_uses_the_peak_pixel_centre():
    h = np.zeros((5, 6))
    h[2, 3] = 4.0
    assert pointing_game(h, [[3, 2, 4, 3]])  # exactly that pixel
    assert not pointing_game(h, [[0, 0, 3, 5]])  # ends just before it
    assert pointing_game(h, [[3.5, 2.5, 3.6, 2.6]])  # centre (3.5, 2.5) on the min edges
    assert not pointing_game(h, [[3.0, 2.0, 3.5, 2.5]])  # centre on the exclusive edges
    assert not pointing_game(h, [])


def test_pointing_game_ties_score_the_share_of_the_plateau_inside():
    h = np.zeros((4, 4))
    h[1, 3] = h[2, 0] = 1.0  # two maximal pixels, no position decides between them
    assert pointing_game(h, [[3, 1, 4, 2]]) == 0.5
    assert pointing_game(h, [[0, 2, 1, 3]]) == 0.5
    assert pointing_game(h, [[0, 1, 4, 3]]) == 1.0  # both inside
    assert pointing_game(np.zeros((3, 3)), [[0, 0, 1, 1]]) == 1 / 9  # constant: the GT's share of the image
    tile = np.zeros((8, 8))
    tile[0:4, 0:4] = 2.0  # a tile-shaped peak whose top-left pixel is outside the GT
    assert pointing_game(tile, [[2, 2, 6, 6]]) == 4 / 16


@settings(max_examples=50)
@given(arrays(np.float64, (6, 7), elements=st.integers(0, 3).map(float)),
       st.tuples(st.integers(0, 6), st.integers(0, 5)))
def test_pointing_game_is_the_mean_hit_over_maximal_pixels(h, corner):
    x1, y1 = corner
    box = [[x1, y1, x1 + 1, y1 + 1]]
    peaks = np.argwhere(h == h.max())
    hits = [(c == x1 and r == y1) for r, c in peaks]
    assert pointing_game(h, box) == pytest.approx(np.mean(hits))


def test_energy_hand_cases():
    h = np.array([[1.0, 3.0, 0.0], [-2.0, 0.0, 4.0]])  # positive mass 8
    assert energy(h, [[1, 0, 2, 2]]) == 3 / 8
    assert energy(h, [[1, 0, 3, 2]]) == 7 / 8
    assert energy(h, [[1, 0, 3, 2], [1, 0, 2, 1], [2, 1, 3, 2]]) == 7 / 8  # overlaps once
    assert energy(h, [[-5, -5, 50, 50]]) == 1.0  # boxes beyond the image are clipped
    assert energy(h, []) == 0.0
    assert energy(-np.ones((2, 2)), [[0, 0, 2, 2]]) == 0.0  # no positive mass
    assert energy(np.zeros((2, 2)), [[0, 0, 2, 2]]) == 0.0


def test_energy_uses_pixel_centres_for_fractional_boxes():
    h = np.array([[1.0, 2.0, 4.0]])
    assert energy(h, [[0.4, 0.0, 1.6, 1.0]]) == 3 / 7  # centres 0.5 and 1.5 inside
    assert energy(h, [[0.6, 0.0, 1.4, 1.0]]) == 0.0  # no centre inside
    assert energy(h, [[1.5, 0.5, 2.5, 1.0]]) == 2 / 7  # centre (1.5, 0.5) on the min edges


def test_heatmap_validation():
    with pytest.raises(DataError, match="finite"):
        energy(np.array([[np.inf, 0.0]]), [])
    with pytest.raises(DataError, match=r"\(H, W\)"):
        pointing_game(np.zeros(5), [])


# ------------------------------------------------------------------ properties

# Integer coordinates: every area is a small integer, exact in floating point, and the
# metrics' ratios are the same operations on the same operands, so equality is exact.
_coord = st.integers(0, 12)
_box = st.tuples(_coord, _coord, _coord, _coord)
_boxes = st.lists(_box, max_size=6)


def _raster(boxes, size: int = 13) -> np.ndarray:
    grid = np.zeros((size, size), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        grid[y1:y2, x1:x2] = True  # empty slice when x2 <= x1
    return grid


@settings(max_examples=150, deadline=None)
@given(_boxes, _boxes)
def test_areas_match_a_rasterised_count(pred, gt):
    assert union_area(pred) == _raster(pred).sum()
    assert intersection_area(pred, gt) == (_raster(pred) & _raster(gt)).sum()


@settings(max_examples=150, deadline=None)
@given(_boxes, _boxes)
def test_metrics_are_bounded_and_symmetric(pred, gt):
    m = region_metrics(pred, gt)
    swapped = region_metrics(gt, pred)
    for value in (m.iou, m.precision, m.recall, m.f1):
        assert 0.0 <= value <= 1.0
    assert m.iou == swapped.iou
    assert m.f1 == swapped.f1
    if union_area(pred) and union_area(gt):
        assert (m.precision, m.recall) == (swapped.recall, swapped.precision)
    different = (_raster(pred) != _raster(gt)).any()
    assert (m.iou == 1.0) == (not different)


@st.composite
def _split_boxes(draw):
    """Positive-area boxes, and the same union with every box cut in two."""
    boxes = draw(st.lists(st.tuples(_coord, _coord, _coord, _coord), min_size=1, max_size=5))
    boxes = [(x1, y1, x2, y2) for x1, y1, x2, y2 in boxes if x2 > x1 and y2 > y1]
    assume(boxes)
    pieces = []
    for x1, y1, x2, y2 in boxes:
        if draw(st.booleans()):
            cut = draw(st.floats(x1, x2, exclude_min=True, exclude_max=True))
            pieces += [(x1, y1, cut, y2), (cut, y1, x2, y2)]
        else:
            cut = draw(st.floats(y1, y2, exclude_min=True, exclude_max=True))
            pieces += [(x1, y1, x2, cut), (x1, cut, x2, y2)]
    return boxes, draw(st.permutations(pieces))


@settings(max_examples=150, deadline=None)
@given(_split_boxes())
def test_equal_unions_score_one(pair):
    boxes, pieces = pair
    m = region_metrics(pieces, boxes)
    assert m.iou == pytest.approx(1.0, abs=1e-12)
    assert m.precision == pytest.approx(1.0, abs=1e-12)
    assert m.recall == pytest.approx(1.0, abs=1e-12)
    assert m.f1 == pytest.approx(1.0, abs=1e-12)
    assert union_area(pieces) == pytest.approx(union_area(boxes), abs=1e-9)


_fbox = st.tuples(*[st.floats(-2.0, 10.0, allow_nan=False)] * 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(_fbox, max_size=4), st.integers(0, 2**31 - 1))
def test_energy_matches_a_per_pixel_reference(boxes, seed):
    h = np.random.default_rng(seed).normal(size=(7, 8))
    inside = np.zeros(h.shape, dtype=bool)
    for r in range(h.shape[0]):
        for c in range(h.shape[1]):
            inside[r, c] = any(
                x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2 for x1, y1, x2, y2 in boxes
            )
    positive = np.maximum(h, 0.0)
    assert energy(h, boxes) == pytest.approx(positive[inside].sum() / positive.sum(), abs=1e-12)
    peak = np.unravel_index(np.argmax(h), h.shape)
    assert pointing_game(h, boxes) == bool(inside[peak])
