"""Overlay rendering: exact colours, sizes and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr_attrib.errors import ImageLoadError
from cxr_attrib.render import BOX_COLOR, CAPTION_MIN_WIDTH, DASH, TRUTH_COLOR, colormap, render_overlay


def _grey(height: int = 32, width: int = 40) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) % 200 + 20).astype(np.uint8)


def _pixels(picture: Image.Image) -> np.ndarray:
    assert picture.mode == "RGB"
    return np.asarray(picture)


def test_plain_image_is_grey_in_every_channel() -> None:
    grey = _grey()
    picture = render_overlay(grey)
    assert picture.size == (40, 32)
    np.testing.assert_array_equal(_pixels(picture), np.repeat(grey[:, :, None], 3, axis=2))


def test_float_image_is_scaled_to_uint8() -> None:
    picture = render_overlay(np.array([[0.0, 0.5], [1.0, 0.2]]))
    np.testing.assert_array_equal(_pixels(picture)[:, :, 0], [[0, 128], [255, 51]])


def test_zero_heat_stays_grey_and_peak_blends_exactly() -> None:
    grey = _grey()
    heat = np.zeros((32, 40), dtype=np.float32)
    heat[10, 20] = 3.0  # the peak: normalised to 1
    heat[11, 20] = 1.5  # half the peak
    heat[12, 20] = -4.0  # negative scores count as no heat
    pixels = _pixels(render_overlay(grey, heat, alpha=0.5))
    cold = np.ones((32, 40), dtype=bool)
    cold[10:12, 20] = False
    np.testing.assert_array_equal(pixels[cold], np.repeat(grey[cold][:, None], 3, axis=1))
    g = float(grey[10, 20])
    expected_peak = np.rint(g * 0.5 + np.array([252, 255, 164]) * 0.5)
    np.testing.assert_array_equal(pixels[10, 20], expected_peak)
    g = float(grey[11, 20])
    expected_half = np.rint(g * 0.75 + colormap(0.5).astype(float) * 0.25)
    np.testing.assert_array_equal(pixels[11, 20], expected_half)


def test_heat_that_is_nowhere_positive_leaves_the_image_grey() -> None:
    grey = _grey()
    pixels = _pixels(render_overlay(grey, np.full((32, 40), -1.0)))
    np.testing.assert_array_equal(pixels, np.repeat(grey[:, :, None], 3, axis=2))


def test_box_outline_is_two_pixels_inside_exclusive_ends() -> None:
    grey = np.full((32, 40), 90, dtype=np.uint8)
    pixels = _pixels(render_overlay(grey, truth=[[5, 4, 15, 20]]))
    outline = np.zeros((32, 40), dtype=bool)
    outline[4:20, 5:15] = True
    outline[6:18, 7:13] = False  # interior beyond the 2-px ring
    np.testing.assert_array_equal(pixels[outline], np.tile(TRUTH_COLOR, (outline.sum(), 1)))
    np.testing.assert_array_equal(pixels[~outline], 90)
    assert tuple(pixels[19, 14]) == TRUTH_COLOR  # last row/column inside the box
    assert tuple(pixels[20, 15]) == (90, 90, 90)  # the exclusive end is outside


def test_evidence_boxes_are_dashed_and_the_truth_solid_on_top() -> None:
    grey = np.full((32, 40), 90, dtype=np.uint8)
    pixels = _pixels(render_overlay(grey, boxes=[[5, 4, 25, 20]], truth=[[5, 20, 25, 30]]))
    on, off = DASH
    top = [tuple(p) == BOX_COLOR for p in pixels[4, 5:25]]
    assert top == [k % (on + off) < on for k in range(20)]  # dashes from the corner
    left = [tuple(p) == BOX_COLOR for p in pixels[4:20, 5]]
    assert left == [k % (on + off) < on for k in range(16)]
    assert all(tuple(p) == TRUTH_COLOR for p in pixels[20, 5:25])  # solid, over nothing
    assert tuple(pixels[10, 15]) == (90, 90, 90)  # inside: the image


def test_legend_names_the_styles_shown_and_keeps_the_image_whole() -> None:
    grey = _grey(32, 40)
    heat = np.zeros((32, 40))
    plain = render_overlay(grey, boxes=[[5, 4, 15, 20]], legend=True)
    both = render_overlay(grey, heat, boxes=[[5, 4, 15, 20]], truth=[[1, 1, 9, 9]], legend=True)
    factor = -(-CAPTION_MIN_WIDTH // 40)
    assert plain.width == both.width == 40 * factor and both.height > plain.height > 32 * factor
    body = _pixels(both)[: 32 * factor]
    assert tuple(body[20 * factor, 30 * factor]) == (grey[20, 30],) * 3  # the image, untouched
    strip = _pixels(both)[32 * factor :]
    for color in (BOX_COLOR, TRUTH_COLOR, tuple(colormap(1.0))):
        assert (strip == color).all(axis=2).any(), color
    assert not (_pixels(plain)[32 * factor :] == TRUTH_COLOR).all(axis=2).any()  # no truth, no swatch


def test_boxes_are_drawn_over_heat_and_clipped_to_the_image() -> None:
    grey = np.full((32, 40), 90, dtype=np.uint8)
    heat = np.ones((32, 40))
    pixels = _pixels(render_overlay(grey, heat, boxes=[[-10, -10, 3, 3], [30, 30, 30, 40]]))
    assert tuple(pixels[0, 0]) == BOX_COLOR
    assert tuple(pixels[2, 2]) == BOX_COLOR
    assert tuple(pixels[31, 30]) != BOX_COLOR  # a zero-width box draws nothing


def test_caption_upscales_narrow_images_and_adds_a_strip() -> None:
    grey = _grey(32, 40)
    picture = render_overlay(grey, boxes=[[5, 4, 15, 20]], caption="right lung: yes")
    factor = -(-CAPTION_MIN_WIDTH // 40)  # 8
    width, height = picture.size
    assert width == 40 * factor == 320
    strip = height - 32 * factor
    assert strip > 0
    pixels = _pixels(picture)
    assert (pixels[:strip] == 255).all(axis=2).any()  # white text in the strip
    body = pixels[strip:]
    assert tuple(body[3 * factor, 30 * factor]) == (grey[3, 30],) * 3  # enlarged grey
    assert tuple(body[4 * factor, 5 * factor]) == BOX_COLOR  # box scaled with the image
    assert tuple(body[4 * factor + 2, 5 * factor + 2]) != BOX_COLOR  # outline stays 2 px


def test_caption_keeps_wide_images_at_their_size() -> None:
    grey = _grey(20, 400)
    short = render_overlay(grey, caption="x")
    long = render_overlay(grey, caption="word " * 200)
    assert short.width == long.width == 400
    assert long.height > short.height > 20
    np.testing.assert_array_equal(_pixels(short)[short.height - 20 :, :, 1], grey)


def test_colormap_lightness_rises_strictly() -> None:
    rgb = colormap(np.linspace(0.0, 1.0, 256)).astype(np.float64) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    cie_l = 116 * np.cbrt(luminance) - 16
    lightness = np.where(luminance > 216 / 24389, cie_l, luminance * 24389 / 27)
    assert (np.diff(lightness) > 0).all()
    assert colormap(np.zeros((2, 3))).shape == (2, 3, 3)
    np.testing.assert_array_equal(colormap([-1.0, 2.0]), colormap([0.0, 1.0]))


def test_heatmap_of_another_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\) = \(32, 40\), got \(224, 224\)"):
        render_overlay(_grey(), np.zeros((224, 224)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"heatmap": np.full((32, 40), np.nan)}, ValueError, "finite"),
        ({"boxes": [1, 2, 3, 4]}, ValueError, r"\(N, 4\)"),
        ({"alpha": 1.5}, ValueError, "alpha"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        render_overlay(_grey(), **kwargs)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), dtype=np.uint8), np.full((4, 4), 2.0), np.zeros((4, 4), dtype=np.int16)],
)
def test_invalid_images_raise(image: np.ndarray) -> None:
    with pytest.raises(ImageLoadError):
        render_overlay(image)
