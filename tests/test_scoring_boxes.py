"""heatmap_to_boxes: the paper's thresholding protocol, checked on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from cxr_attrib.errors import DataError
from cxr_attrib.scoring import heatmap_to_boxes, whole_image_box
from cxr_attrib.scoring.boxes import _kth_above


def _two_blobs() -> np.ndarray:
    """20 x 20 zeros; a cooler 4 x 5 blob (0.5) top-left, a hotter 5 x 5 one (1.0)
    bottom-right, so heat order differs from raster order."""
    h = np.zeros((20, 20), dtype=np.float32)
    h[1:5, 2:7] = 0.5  # 20 px, rows 1-4, cols 2-6
    h[12:17, 10:15] = 1.0  # 25 px, rows 12-16, cols 10-14
    return h


def _dots() -> np.ndarray:
    """7 x 9 zeros with isolated 1-px dots every third row and column."""
    h = np.zeros((7, 9))
    h[::3, ::3] = 1.0
    return h


def test_default_threshold_keeps_only_the_top_decile():
    # Positives after min-max: 20 px at 0.5 and 25 px at 1.0, sorted; the 0.9
    # quantile sits at position 0.9 * 44 = 39.6, between two 1.0 values -> t = 1.0.
    boxes = heatmap_to_boxes(_two_blobs())
    assert boxes.dtype == np.float64
    assert boxes.tolist() == [[10.0, 12.0, 15.0, 17.0]]


def test_two_blobs_ranked_by_mean_heat_not_raster_order():
    boxes = heatmap_to_boxes(_two_blobs(), quantile=0.0)
    assert boxes.tolist() == [[10.0, 12.0, 15.0, 17.0], [2.0, 1.0, 7.0, 5.0]]


def test_threshold_is_the_linear_quantile_of_positive_values_inclusive():
    h = np.arange(1.0, 11.0)[None, :]  # one row, values 1..10
    # Normalised positives: (v - 1) / 9 for v = 2..10 (9 values).
    # quantile 0.5 -> position 4 -> t = 5/9, i.e. v >= 6 (the pixel AT t is kept).
    assert heatmap_to_boxes(h, quantile=0.5, min_component_px=1).tolist() == [
        [5.0, 0.0, 10.0, 1.0]
    ]
    # quantile 0.55 -> position 4.4 -> t = (5 + 0.4) / 9, i.e. v >= 6.4 -> v in 7..10.
    assert heatmap_to_boxes(h, quantile=0.55, min_component_px=1).tolist() == [
        [6.0, 0.0, 10.0, 1.0]
    ]
    # quantile 1 keeps only the maximum.
    assert heatmap_to_boxes(h, quantile=1.0, min_component_px=1).tolist() == [
        [9.0, 0.0, 10.0, 1.0]
    ]


def test_small_blob_below_min_size_is_dropped():
    h = np.zeros((12, 12))
    h[1:5, 1:5] = 1.0  # 16 px
    h[8, 8:11] = 1.0  # 3 px, same heat
    assert heatmap_to_boxes(h, quantile=0.0).tolist() == [[1.0, 1.0, 5.0, 5.0]]
    kept = heatmap_to_boxes(h, quantile=0.0, min_component_px=3)
    assert sorted(kept.tolist()) == [[1.0, 1.0, 5.0, 5.0], [8.0, 8.0, 11.0, 9.0]]


def test_diagonal_pixels_form_one_component_under_8_connectivity():
    h = np.zeros((6, 6))
    for i in range(4):
        h[i + 1, i + 1] = 1.0  # touch only at corners
    # Under 4-connectivity these would be four 1-px components, all dropped.
    assert heatmap_to_boxes(h, quantile=0.0, min_component_px=4).tolist() == [
        [1.0, 1.0, 5.0, 5.0]
    ]


def test_blob_touching_the_border_reaches_the_image_size():
    h = np.zeros((10, 14))
    h[6:10, 9:14] = 2.0
    assert heatmap_to_boxes(h, quantile=0.0).tolist() == [[9.0, 6.0, 14.0, 10.0]]


@pytest.mark.parametrize(
    "heatmap",
    [
        np.zeros((7, 9)),
        np.full((7, 9), 3.5),
        -np.arange(63.0).reshape(7, 9),  # top decile: 7 px of row 0, under 16 px
        _dots(),
    ],
    ids=["zeros", "constant", "non_positive", "dots"],
)
def test_maps_that_localise_nothing_give_the_whole_image(heatmap):
    assert heatmap_to_boxes(heatmap).tolist() == [[0.0, 0.0, 9.0, 7.0]]
    assert heatmap_to_boxes(heatmap).tolist() == whole_image_box(7, 9).tolist()


def test_signed_maps_are_thresholded_by_order_only():
    h = np.zeros((12, 12))
    h[0:6, 0:6] = -5.0  # strongly negative region: the minimum
    h[8:12, 6:10] = 1.0
    # Above the minimum: 92 zeros then 16 ones; position ceil(0.9 * 107) = 97 is a one.
    assert heatmap_to_boxes(h).tolist() == [[6.0, 8.0, 10.0, 12.0]]
    # quantile 0 keeps everything above the minimum: one component around the zeros and ones.
    assert heatmap_to_boxes(h, quantile=0.0).tolist() == [[0.0, 0.0, 12.0, 12.0]]


def test_max_boxes_keeps_the_hottest():
    h = np.zeros((30, 40))
    heats = {}
    for k in range(12):  # 12 separate 2 x 2 blobs with distinct heats
        row, col = 3 * (k // 6), 6 * (k % 6)
        h[row : row + 2, col : col + 2] = 1.0 + k
        heats[(col, row)] = 1.0 + k
    boxes = heatmap_to_boxes(h, quantile=0.0, min_component_px=4, max_boxes=10)
    assert boxes.shape == (10, 4)
    got = [heats[(int(x1), int(y1))] for x1, y1, _, _ in boxes]
    assert got == sorted(heats.values(), reverse=True)[:10]


def test_ties_follow_the_row_major_position_of_each_component_first_pixel():
    h = np.zeros((10, 12))
    h[0:4, 8:12] = 1.0  # first pixel (0, 8): first in row-major order
    h[1:5, 0:4] = 1.0  # first pixel (1, 0); its box starts further left
    h[6:10, 4:8] = 1.0  # first pixel (6, 4)
    boxes = heatmap_to_boxes(h, quantile=0.0)
    assert boxes.tolist() == [[8.0, 0.0, 12.0, 4.0], [0.0, 1.0, 4.0, 5.0], [4.0, 6.0, 8.0, 10.0]]


def test_rejects_nan_and_bad_shapes_and_parameters():
    with pytest.raises(DataError, match="finite"):
        heatmap_to_boxes(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(DataError, match=r"\(H, W\)"):
        heatmap_to_boxes(np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="quantile"):
        heatmap_to_boxes(np.zeros((4, 4)), quantile=1.5)
    with pytest.raises(DataError, match="min_component_px"):
        heatmap_to_boxes(np.zeros((4, 4)), min_component_px=0)
    with pytest.raises(DataError, match="max_boxes"):
        heatmap_to_boxes(np.zeros((4, 4)), max_boxes=0)


def test_input_is_not_mutated():
    h = _two_blobs() - 0.25
    before = h.copy()
    heatmap_to_boxes(h)
    np.testing.assert_array_equal(h, before)


_maps = arrays(
    np.float64,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.floats(-1.0, 1.0, allow_nan=False, width=32),
)


@settings(max_examples=60, deadline=None)
@given(_maps, st.integers(1, 6), st.integers(1, 5), st.sampled_from([0.0, 0.5, 0.9, 1.0]))
def test_boxes_are_valid_ranked_and_scale_invariant(h, min_px, max_boxes, q):
    boxes = heatmap_to_boxes(h, quantile=q, min_component_px=min_px, max_boxes=max_boxes)
    height, width = h.shape
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and 1 <= len(boxes) <= max_boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes == np.round(boxes)).all()
    # Scaling by a power of two is exact in floating point: same boxes.
    scaled = heatmap_to_boxes(h * 8.0, quantile=q, min_component_px=min_px, max_boxes=max_boxes)
    np.testing.assert_array_equal(boxes, scaled)


def _reference_boxes(h: np.ndarray, quantile: float, min_px: int, max_boxes: int) -> list:
    """The protocol written plainly: min-max, np.quantile, label, find_objects."""
    c = h.astype(np.float64)
    if c.max() == c.min():
        return [[0.0, 0.0, float(h.shape[1]), float(h.shape[0])]]
    n = (c - c.min()) / (c.max() - c.min())
    labels, count = ndimage.label(n >= np.quantile(n[n > 0], quantile), np.ones((3, 3)))
    found = []
    for label, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        pixels = n[labels == label]
        if pixels.size >= min_px:
            found.append((-pixels.mean(), label, [xs.start, ys.start, xs.stop, ys.stop]))
    if not found:
        return [[0.0, 0.0, float(h.shape[1]), float(h.shape[0])]]
    return [[float(v) for v in box] for _, _, box in sorted(found)[:max_boxes]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.97])
def test_matches_a_plain_reference_on_smooth_maps(seed, quantile):
    # 96 x 96 maps exercise the sampled threshold search (>= 4096 positive values).
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    h = rng.normal(0.0, 0.05, (96, 96))
    for _ in range(4):
        cy, cx, sigma = rng.uniform(0, 96), rng.uniform(0, 96), rng.uniform(4, 15)
        h += rng.uniform(-0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    h = h.astype(np.float32)
    expected = _reference_boxes(h, quantile, 16, 10)
    assert heatmap_to_boxes(h, quantile=quantile).tolist() == expected
    assert heatmap_to_boxes(h.astype(np.float64), quantile=quantile).tolist() == expected


@pytest.mark.parametrize("stride_trap", [False, True])
def test_threshold_search_is_exact_even_when_the_sample_misleads(stride_trap):
    values = np.random.default_rng(1).random(20000).astype(np.float32)
    if stride_trap:  # every 16th value (the sample) is huge: the lower bound is useless
        values[::16] += 10.0
    above = np.sort(values[values > 0.1])
    for k in (0, 1, above.size // 2, int(0.9 * above.size), above.size - 1):
        assert _kth_above(values, np.float32(0.1), above.size, k) == above[k]


# -- content only: padding, constants and positive scales never change the boxes ----------------

# Values on a 1/1024 grid in [-4, 4]: adding an integer up to 100 and scaling by a power
# of two are then exact in float64, so the test checks the protocol, not rounding.
_maps = arrays(np.float64, st.tuples(st.integers(6, 24), st.integers(6, 24)),
               elements=st.integers(-4096, 4096).map(lambda k: k / 1024))


@settings(max_examples=60)
@given(_maps, st.floats(-100.0, 100.0, allow_nan=False), st.floats(0.1, 50.0))
def test_adding_a_constant_or_scaling_never_changes_the_boxes(h, shift, scale):
    expected = heatmap_to_boxes(h, min_component_px=4).tolist()
    # Exact arithmetic keeps the order: shifts and scales by powers of two are exact in float64.
    exact_shift, exact_scale = float(np.round(shift)), float(2.0 ** np.round(np.log2(scale)))
    assert heatmap_to_boxes(h + exact_shift, min_component_px=4).tolist() == expected
    assert heatmap_to_boxes(h * exact_scale, min_component_px=4).tolist() == expected


@settings(max_examples=60)
@given(_maps, st.integers(1, 5), st.integers(1, 5), st.floats(-1e3, 1e3, allow_nan=False))
def test_values_outside_the_mask_never_change_the_boxes(h, pad_top, pad_left, pad_value):
    """Boxes of a map pasted into padding (any value) are the map's own, shifted."""
    height, width = h.shape
    padded = np.full((height + 2 * pad_top, width + 2 * pad_left), pad_value)
    padded[pad_top:pad_top + height, pad_left:pad_left + width] = h
    mask = np.zeros(padded.shape, dtype=bool)
    mask[pad_top:pad_top + height, pad_left:pad_left + width] = True
    own = heatmap_to_boxes(h, min_component_px=4)
    got = heatmap_to_boxes(padded, min_component_px=4, mask=mask)
    assert got.tolist() == (own + [pad_left, pad_top, pad_left, pad_top]).tolist()


@settings(max_examples=30)
@given(st.integers(20, 120), st.integers(20, 120), st.integers(0, 2**32 - 1), st.integers(-20, 20))
def test_non_square_input_boxes_ignore_the_padding_and_constants(height, width, seed, shift):
    from cxr_attrib.frames import ResizePad
    from cxr_attrib.scoring.boxes import input_heatmap_boxes

    rng = np.random.default_rng(seed)
    h = np.zeros((height, width), np.float32)
    bh, bw = height // 2, width // 2
    y, x = rng.integers(0, height - bh + 1), rng.integers(0, width - bw + 1)
    h[y:y + bh, x:x + bw] = 1.0  # one hot blob on a cold, non-square image
    frame = ResizePad(height, width, 112)
    boxes = input_heatmap_boxes(h, frame)
    assert input_heatmap_boxes(h + np.float32(shift), frame).tolist() == boxes.tolist()
    assert input_heatmap_boxes(h + np.float32(abs(shift) + 5), frame).tolist() == boxes.tolist()
    x1, y1, x2, y2 = boxes[0]
    assert len(boxes) == 1 and x - 2 <= x1 < x2 <= x + bw + 2 and y - 2 <= y1 < y2 <= y + bh + 2


def test_mask_of_the_wrong_shape_is_refused():
    with pytest.raises(DataError, match=r"mask must be a bool array of the heatmap's shape \(4, 4\)"):
        heatmap_to_boxes(np.zeros((4, 4)), mask=np.ones((4, 5), bool))
