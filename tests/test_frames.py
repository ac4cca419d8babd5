"""Input <-> working frame transforms: hand-computed cases and properties (see docs/user-guide.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cxr_attrib.errors import ImageLoadError
from cxr_attrib.frames import DEFAULT_SIZE, ResizePad, cells_to_working, grid_to_working, overlap_matrix

SIDES = st.integers(min_value=1, max_value=10_000)
UNIT = st.floats(min_value=0.0, max_value=1.0)
EXTREME_SHAPES = [(1, 1), (1, 10_000), (10_000, 1), (10_000, 100), (100, 10_000)]
MAX_PIXELS = 1_000_000
"""Array-based properties draw shapes up to this many pixels (10000x100 included)."""


@st.composite
def array_shapes(draw: st.DrawFn) -> tuple[int, int]:
    """(H, W) with sides in 1..10000, either order, and at most MAX_PIXELS pixels."""
    long_side = draw(SIDES)
    short_side = draw(st.integers(1, min(10_000, MAX_PIXELS // long_side)))
    return (long_side, short_side) if draw(st.booleans()) else (short_side, long_side)


@st.composite
def boxes_within(draw: st.DrawFn, width: float, height: float, n: int = 5) -> np.ndarray:
    """(n, 4) boxes with 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height."""
    rows = []
    for _ in range(n):
        x1, y1 = draw(UNIT) * width, draw(UNIT) * height
        rows.append([x1, y1, x1 + draw(UNIT) * (width - x1), y1 + draw(UNIT) * (height - y1)])
    return np.array(rows)


# ----------------------------------------------------------------- hand-computed


def test_tall_image_448x224() -> None:
    frame = ResizePad(448, 224)
    assert (frame.content_height, frame.content_width) == (224, 112)
    assert (frame.offset_y, frame.offset_x) == (0, 56)
    assert (frame.scale_y, frame.scale_x) == (0.5, 0.5)
    assert frame.content_box == (56, 0, 168, 224)
    np.testing.assert_array_equal(frame.boxes_to_working([[0, 0, 224, 448]]), [[56, 0, 168, 224]])
    np.testing.assert_array_equal(frame.boxes_to_input([[56, 0, 168, 224]]), [[0, 0, 224, 448]])
    np.testing.assert_array_equal(frame.points_to_working([[10, 20], [0, 0]]), [[61, 10], [56, 0]])
    np.testing.assert_array_equal(frame.points_to_input([[61, 10]]), [[10, 20]])


def test_wide_image_with_uneven_rounding() -> None:
    # 100 x 300: content height round(100 * 224 / 300) = round(74.67) = 75,
    # offset_y = (224 - 75) // 2 = 74, scale_y = 0.75, scale_x = 224 / 300.
    frame = ResizePad(100, 300)
    assert (frame.content_height, frame.content_width) == (75, 224)
    assert (frame.offset_y, frame.offset_x) == (74, 0)
    assert frame.scale_y == 0.75
    assert frame.scale_x == pytest.approx(224 / 300)
    np.testing.assert_allclose(
        frame.boxes_to_working([[150, 40, 300, 100]]), [[112, 104, 224, 149]]
    )


def test_rounding_is_half_up_and_at_least_one_pixel() -> None:
    assert ResizePad(5, 448).content_height == 3  # 2.5 rounds up
    assert ResizePad(3, 448).content_height == 2  # 1.5 rounds up
    thin = ResizePad(10_000, 1)  # 0.0224 px wide would vanish: kept at 1
    assert thin.content_width == 1
    assert thin.content_box == (111, 0, 112, 224)
    assert thin.scale_x == 1.0


def test_square_image_fills_the_frame() -> None:
    frame = ResizePad(1, 1)
    assert frame.content_box == (0, 0, 224, 224)
    assert frame.content_mask().all()
    assert ResizePad(50, 50, size=100).scale_x == 2.0


def test_content_mask_matches_content_box() -> None:
    mask = ResizePad(448, 224).content_mask()
    assert mask.shape == (224, 224) and mask.dtype == bool
    assert mask[:, 56:168].all()
    assert not mask[:, :56].any() and not mask[:, 168:].any()


def test_image_to_working_uint8_and_float() -> None:
    image = np.zeros((448, 224), dtype=np.uint8)
    image[:, :112] = 255  # left half white
    frame = ResizePad.for_image(image)
    working = frame.image_to_working(image)
    assert working.shape == (224, 224) and working.dtype == np.float32
    np.testing.assert_array_equal(working[:, :56], 0.0)  # padding
    np.testing.assert_array_equal(working[:, 168:], 0.0)  # padding
    np.testing.assert_array_equal(working[:, 56:111], 1.0)  # white half, away from the edge
    np.testing.assert_array_equal(working[:, 113:168], 0.0)  # black half
    as_float = frame.image_to_working(image.astype(np.float64) / 255)
    np.testing.assert_allclose(as_float, working, atol=1e-6)


def test_image_to_working_upscale_keeps_corner_values() -> None:
    image = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    working = ResizePad(2, 2).image_to_working(image)
    # corner pixels are weighted means of one source pixel; allow float32 rounding of the weights
    corners = [working[0, 0], working[0, -1], working[-1, 0], working[-1, -1]]
    assert corners == pytest.approx([0.0, 0.25, 0.5, 1.0], abs=1e-6)
    assert 0.0 <= working.min() and working.max() <= 1.0


def test_constant_heatmap_round_trip_stays_constant() -> None:
    frame = ResizePad(300, 170)
    working = frame.heatmap_to_working(np.full((300, 170), 2.5))
    np.testing.assert_allclose(working[frame.content_mask()], 2.5, rtol=1e-6)
    back = frame.heatmap_to_input(working)
    assert back.shape == (300, 170) and back.dtype == np.float32
    np.testing.assert_allclose(back, 2.5, rtol=1e-6)


def test_grid_to_working_blocks() -> None:
    grid = np.arange(4, dtype=np.float32).reshape(2, 2)
    working = grid_to_working(grid, size=4)
    np.testing.assert_array_equal(
        working, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )
    # S = 224 is not a multiple of 3: edges floor(i * 224 / 3) = 0, 74, 149, 224.
    rows = grid_to_working(np.array([[0.0], [1.0], [2.0]]))[:, 0]
    assert rows.shape == (DEFAULT_SIZE,)
    np.testing.assert_array_equal(np.flatnonzero(np.diff(rows)) + 1, [74, 149])
    assert grid_to_working(np.ones((8, 8))).shape == (224, 224)


@given(gh=st.integers(1, 64), gw=st.integers(1, 64), size=st.integers(64, 300))
def test_grid_to_working_tiles_exactly(gh: int, gw: int, size: int) -> None:
    grid = np.arange(gh * gw, dtype=np.float32).reshape(gh, gw)
    working = grid_to_working(grid, size)
    counts = np.bincount(working.astype(np.int64).ravel(), minlength=gh * gw)
    heights = np.diff((np.arange(gh + 1) * size) // gh)
    widths = np.diff((np.arange(gw + 1) * size) // gw)
    np.testing.assert_array_equal(counts, np.outer(heights, widths).ravel())


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(0, 5, 224), (5, -1, 224), (5, 5, 0), (2.5, 5, 224), (True, 5, 224)],
)
def test_invalid_sizes_raise(height: object, width: object, size: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        ResizePad(height, width, size)  # type: ignore[arg-type]


def test_numpy_integer_sizes_are_accepted() -> None:
    frame = ResizePad(np.int64(448), np.int32(224))
    assert frame == ResizePad(448, 224) and type(frame.height) is int


def test_invalid_inputs_raise_clear_errors() -> None:
    frame = ResizePad(4, 6)
    with pytest.raises(ImageLoadError, match=r"\(4, 6\)"):
        frame.image_to_working(np.zeros((6, 4), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="2-D"):
        frame.image_to_working(np.zeros((4, 6, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        frame.image_to_working(np.full((4, 6), 2.0))
    with pytest.raises(ImageLoadError, match="dtype"):
        frame.image_to_working(np.zeros((4, 6), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\(224, 224\)"):
        frame.heatmap_to_input(np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        frame.heatmap_to_working(np.zeros((224, 224)))
    with pytest.raises(ValueError, match="finite"):
        frame.heatmap_to_working(np.full((4, 6), np.nan))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        frame.boxes_to_working([1, 2, 3, 4])
    with pytest.raises(ValueError, match="x1 <= x2"):
        frame.boxes_to_input([[5, 0, 1, 2]])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        frame.points_to_working([[1, 2, 3]])
    with pytest.raises(ValueError, match="gh, gw"):
        grid_to_working(np.zeros((300, 2)))
    with pytest.raises(ImageLoadError, match="2-D"):
        ResizePad.for_image(np.zeros((2, 2, 3)))


def test_empty_box_and_point_arrays() -> None:
    frame = ResizePad(10, 20)
    assert frame.boxes_to_working([]).shape == (0, 4)
    assert frame.points_to_input(np.empty((0, 2))).shape == (0, 2)


# -------------------------------------------------------------------- properties


@given(height=SIDES, width=SIDES, data=st.data())
@example(height=448, width=224, data=None)
@settings(max_examples=200, deadline=None)
def test_box_round_trip_within_one_pixel(
    height: int, width: int, data: st.DataObject | None
) -> None:
    frame = ResizePad(height, width)
    boxes = (
        np.array([[0.0, 0.0, width, height]])
        if data is None
        else data.draw(boxes_within(float(width), float(height)))
    )
    working = frame.boxes_to_working(boxes)
    x1, y1, x2, y2 = frame.content_box
    assert (working[:, 0] >= x1).all() and (working[:, 2] <= x2).all()
    assert (working[:, 1] >= y1).all() and (working[:, 3] <= y2).all()
    np.testing.assert_allclose(frame.boxes_to_input(working), boxes, rtol=0, atol=1.0)


@given(height=SIDES, width=SIDES, data=st.data())
@settings(max_examples=200, deadline=None)
def test_any_box_maps_inside_the_target_frame(
    height: int, width: int, data: st.DataObject
) -> None:
    frame = ResizePad(height, width)
    # Boxes anywhere in [-S, 2S] (working) / [-W, 2W] x [-H, 2H] (input), mostly off-frame.
    in_input = data.draw(boxes_within(3.0 * width, 3.0 * height)) - [width, height, width, height]
    in_working = data.draw(boxes_within(3.0 * 224, 3.0 * 224)) - 224
    working = frame.boxes_to_working(in_input)
    x1, y1, x2, y2 = frame.content_box
    assert ((working[:, 0::2] >= x1) & (working[:, 0::2] <= x2)).all()
    assert ((working[:, 1::2] >= y1) & (working[:, 1::2] <= y2)).all()
    back = frame.boxes_to_input(in_working)
    assert ((back[:, 0::2] >= 0) & (back[:, 0::2] <= width)).all()
    assert ((back[:, 1::2] >= 0) & (back[:, 1::2] <= height)).all()
    for mapped in (working, back):  # degenerate after clipping: zero area, never negative
        assert (mapped[:, 2] >= mapped[:, 0]).all() and (mapped[:, 3] >= mapped[:, 1]).all()


def test_box_outside_the_image_keeps_zero_area() -> None:
    frame = ResizePad(448, 224)
    np.testing.assert_array_equal(frame.boxes_to_working([[-50, 10, -5, 20]]), [[56, 5, 56, 10]])
    np.testing.assert_array_equal(frame.boxes_to_input([[0, 0, 40, 224]]), [[0, 0, 0, 448]])


@given(height=SIDES, width=SIDES, data=st.data())
@settings(max_examples=200, deadline=None)
def test_points_round_trip(height: int, width: int, data: st.DataObject) -> None:
    frame = ResizePad(height, width)
    xy = np.array(
        [
            [data.draw(UNIT) * 3 * width - width, data.draw(UNIT) * 3 * height - height]
            for _ in range(4)
        ]
    )
    working = frame.points_to_working(xy)
    np.testing.assert_allclose(frame.points_to_input(working), xy, rtol=1e-9, atol=1e-6)
    # The input frame's corners land on the content box's corners.
    x1, y1, x2, y2 = frame.content_box
    corners = frame.points_to_working([[0, 0], [width, height]])
    np.testing.assert_allclose(corners, [[x1, y1], [x2, y2]])


@given(shape=array_shapes(), seed=st.integers(0, 2**32 - 1))
@example(shape=(10_000, 100), seed=0)
@example(shape=(100, 10_000), seed=0)
@settings(max_examples=40, deadline=None)
def test_padding_never_receives_heat(shape: tuple[int, int], seed: int) -> None:
    frame = ResizePad(*shape)
    rng = np.random.default_rng(seed)
    working = frame.heatmap_to_working(rng.random(shape, dtype=np.float32) + 0.5)
    mask = frame.content_mask()
    assert (working[~mask] == 0).all()
    assert (working[mask] > 0).all()
    padding_only = np.where(mask, 0.0, rng.random((224, 224)) + 1.0)
    back = frame.heatmap_to_input(padding_only)
    assert back.shape == shape
    assert (back == 0).all()


@given(shape=array_shapes(), fy=UNIT, fx=UNIT)
@example(shape=(10_000, 100), fy=0.3, fx=1.0)
@example(shape=(100, 10_000), fy=0.0, fx=0.7)
@example(shape=(1, 1), fy=0.5, fx=0.5)
@example(shape=(10_000, 1), fy=1.0, fx=0.0)
@settings(max_examples=40, deadline=None)
def test_heatmap_round_trip_keeps_the_peak(shape: tuple[int, int], fy: float, fx: float) -> None:
    """A gaussian blob input -> working -> input keeps its argmax within tolerance.

    Tolerance per axis: ``1 / scale + 1`` input pixels, i.e. one working pixel (the
    peak lands on the working sample nearest to it, at most half a working pixel
    away, and comes back at most half a working pixel further) plus one input pixel
    for sampling the blob on the integer grid. The blob's sigma is
    ``max(1, 2 / scale)`` input pixels so that it survives the down-sampling.
    """
    height, width = shape
    frame = ResizePad(height, width)
    cy, cx = fy * (height - 1), fx * (width - 1)
    sy, sx = max(1.0, 2.0 / frame.scale_y), max(1.0, 2.0 / frame.scale_x)
    column = np.exp(-0.5 * ((np.arange(height) - cy) / sy) ** 2)
    row = np.exp(-0.5 * ((np.arange(width) - cx) / sx) ** 2)
    blob = np.outer(column, row).astype(np.float32)
    back = frame.heatmap_to_input(frame.heatmap_to_working(blob))
    peak_y, peak_x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(peak_y - cy) <= 1.0 / frame.scale_y + 1.0
    assert abs(peak_x - cx) <= 1.0 / frame.scale_x + 1.0


@pytest.mark.parametrize("shape", EXTREME_SHAPES)
def test_extreme_shapes_map_images(shape: tuple[int, int]) -> None:
    image = np.full(shape, 200, dtype=np.uint8)
    frame = ResizePad.for_image(image)
    working = frame.image_to_working(image)
    mask = frame.content_mask()
    np.testing.assert_allclose(working[mask], 200 / 255, atol=1e-6)
    assert (working[~mask] == 0).all()


@settings(max_examples=60)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 64), st.integers(0, 2**31 - 1))
def test_cells_to_working_sum_keeps_totals_and_mean_keeps_levels(rows, cols, size, seed):
    values = torch.rand((2, rows, cols), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    summed = cells_to_working(values, size, "sum")
    assert summed.shape == (2, size, size) and summed.dtype == torch.float32
    torch.testing.assert_close(summed.double().sum(dim=(1, 2)), values.sum(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    level = cells_to_working(torch.full((1, rows, cols), 0.3), size, "mean")
    torch.testing.assert_close(level, torch.full((1, size, size), 0.3))
    # the two reductions differ only by the area of a cell in pixels
    mean = cells_to_working(values, size, "mean").double()
    torch.testing.assert_close(summed.double() * size**2 / (rows * cols), mean, rtol=1e-5, atol=1e-6)


@given(st.integers(1, 50), st.integers(1, 50))
def test_overlap_matrix_shares_each_cell_out_exactly(cells, size):
    weights = overlap_matrix(cells, size, "sum")
    assert weights.shape == (size, cells) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(0), torch.ones(cells, dtype=torch.float64))
    torch.testing.assert_close(overlap_matrix(cells, size, "mean").sum(1), torch.ones(size, dtype=torch.float64))


def test_cells_to_working_splits_a_cell_between_pixels_it_straddles():
    # 2 cells on 3 pixels: a cell spans 1.5 pixels, the middle pixel takes a third of each
    out = cells_to_working(torch.tensor([[[3.0, 6.0]]]), 3, "sum")[0]
    torch.testing.assert_close(out.sum(0), torch.tensor([2.0, 1.0 + 2.0, 4.0]))
    mean = cells_to_working(torch.tensor([[[3.0, 6.0]]]), 3, "mean")[0, 0]
    torch.testing.assert_close(mean, torch.tensor([3.0, 4.5, 6.0]))
