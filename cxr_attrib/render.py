"""Overlay PNGs: a grey image with a heatmap, boxes, a caption and a legend.

The one renderer of every overlay the toolkit makes (``result.save("x.png")``,
``cxr-attrib attribute --out``, the report's thumbnails, the demo and ``compare``
sheets, the notebook display). Everything is in the input frame: the heatmap has the
image's own ``(H, W)`` and boxes are ``(x1, y1, x2, y2)`` input pixels with exclusive
ends. Styles: the method's evidence boxes are dashed cyan (:data:`BOX_COLOR`), the
ground truth solid green (:data:`TRUTH_COLOR`), the heat a perceptual dark-to-bright
ramp whose opacity grows with the heat, so cold pixels keep the X-ray visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont, features

from cxr_attrib.errors import ImageLoadError
from cxr_attrib.typing import BoxArray, GreyImage, Heatmap

__all__ = ["BOX_COLOR", "CAPTION_MIN_WIDTH", "DASH", "DEFAULT_ALPHA", "MAX_UPSCALED_PIXELS", "TRUTH_COLOR",
           "add_caption", "add_legend", "colormap", "render_overlay"]

BOX_COLOR: tuple[int, int, int] = (0, 255, 255)
"""RGB of the method's evidence boxes (cyan, dashed: apart from every colour of the heat map)."""

TRUTH_COLOR: tuple[int, int, int] = (40, 220, 40)
"""RGB of ground-truth boxes (green, solid)."""

DASH: tuple[int, int] = (4, 2)
"""Evidence-box dash pattern in output pixels: ``(on, off)``, starting at each corner."""

DEFAULT_ALPHA = 0.6
"""Opacity of the hottest pixel; the rest of the image shows through."""

CAPTION_MIN_WIDTH = 300
"""Narrower images are upscaled (by a whole factor) to at least this width when captioned."""

MAX_UPSCALED_PIXELS = 16_000_000
"""Upscaling for a caption stops before the image would exceed this many pixels."""

_BOX_THICKNESS = 2
_MAX_FONT_SIZE = 48
_MAX_CAPTION_LINES = 6
_CAPTION_BACKGROUND = (24, 24, 24)
_CAPTION_TEXT = (255, 255, 255)
_LEGEND_WIDTH = 300  # narrower overlays are enlarged so the legend fits

# Dark-to-bright, inferno-like ramp: (position, R, G, B). Lightness rises strictly
# from black through purple, red and orange to pale yellow.
_RAMP = np.array(
    [
        [0.00, 0, 0, 4],
        [0.14, 36, 12, 80],
        [0.29, 90, 18, 110],
        [0.43, 143, 36, 104],
        [0.57, 193, 58, 80],
        [0.71, 232, 95, 42],
        [0.86, 250, 160, 20],
        [1.00, 252, 255, 164],
    ]
)


def colormap(values: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Colour values in ``[0, 1]`` with a perceptual dark-to-bright ramp.

    Args:
        values (array-like): any shape ``(...)``; clipped to ``[0, 1]``.

    Returns:
        np.ndarray: ``(..., 3)`` uint8 RGB; 0 is near-black, 1 pale yellow.

    Examples::

        >>> colormap([0.0, 1.0]).tolist()
        [[0, 0, 4], [252, 255, 164]]
    """
    scaled = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(scaled, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def render_overlay(
    image: GreyImage | npt.NDArray[np.floating],
    heatmap: Heatmap | None = None,
    boxes: BoxArray | Sequence[Sequence[float]] = (),
    caption: str | None = None,
    *,
    truth: BoxArray | Sequence[Sequence[float]] = (),
    legend: bool = False,
    alpha: float = DEFAULT_ALPHA,
) -> Image.Image:
    """Draw a heatmap, evidence boxes, ground-truth boxes, a caption and a legend over a grey image.

    The heatmap is normalised to ``[0, 1]`` over its positive part (negative scores
    count as 0) and coloured with :func:`colormap`; each pixel blends that colour
    over the grey with opacity ``alpha * heat``, so pixels with zero heat keep the
    grey value exactly. Evidence boxes are drawn as 2-pixel dashed outlines
    (:data:`DASH`) in :data:`BOX_COLOR`, ground-truth boxes as 2-pixel solid
    outlines in :data:`TRUTH_COLOR` (on top), both just inside their (rounded)
    edges; boxes with no area after rounding and clipping are skipped. With a
    caption or a legend, an image narrower than :data:`CAPTION_MIN_WIDTH` is first
    enlarged by the smallest whole factor that reaches it (nearest neighbour), but
    never beyond :data:`MAX_UPSCALED_PIXELS`; a strip with the wrapped caption (at
    most 6 lines, font at most 48 px) goes on top and the legend strip (the box
    styles shown, the heat ramp) at the bottom, so the overlay's size is bounded
    whatever the aspect ratio.

    Args:
        image (GreyImage | np.ndarray): ``(H, W)`` uint8, or float in ``[0, 1]``.
        heatmap (Heatmap | None): ``(H, W)`` finite scores in the image's frame, any
            unit. Default: None (no heat).
        boxes (BoxArray | sequence): ``(N, 4)`` ``(x1, y1, x2, y2)`` in input
            pixels, exclusive ends. Default: no boxes.
        caption (str | None): text for the strip on top. Default: None (no strip).
        truth (BoxArray | sequence): ``(M, 4)`` ground-truth boxes, input pixels,
            exclusive ends. Default: none.
        legend (bool): add the legend strip at the bottom. Default: False.
        alpha (float): opacity of the hottest pixel, in ``[0, 1]``. Default: 0.6.

    Returns:
        PIL.Image.Image: RGB, ``W x H`` without a caption or legend; with either,
        ``kW x (kH + strips)`` where ``k = ceil(300 / W)`` for narrow images (capped
        so that ``kW * kH <= MAX_UPSCALED_PIXELS``), else 1.

    Examples::

        >>> grey = np.full((32, 48), 100, dtype=np.uint8)
        >>> render_overlay(grey, boxes=[[4, 4, 20, 20]]).size
        (48, 32)
    """
    grey = _grey_uint8(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be an opacity in [0, 1], got {alpha!r}")
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if heatmap is not None:
        heat = _normalised_heat(heatmap, grey.shape)
        opacity = (alpha * heat)[:, :, None]
        blended = rgb * (1.0 - opacity) + colormap(heat) * opacity
        rgb = np.rint(blended).astype(np.uint8)
    evidence, truth = _box_array(boxes), _box_array(truth)
    factor = _upscale_factor(*grey.shape) if caption is not None or legend else 1
    if factor > 1:
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    _draw_boxes(rgb, evidence, factor, BOX_COLOR, dash=DASH)
    _draw_boxes(rgb, truth, factor, TRUTH_COLOR)
    canvas = Image.fromarray(rgb)
    if legend:
        canvas = add_legend(canvas, heat=heatmap is not None, evidence=len(evidence) > 0, truth=len(truth) > 0)
    return canvas if caption is None else add_caption(canvas, caption)


def _upscale_factor(height: int, width: int) -> int:
    """Whole factor that makes ``width`` reach the caption width, within the pixel cap."""
    wanted = math.ceil(CAPTION_MIN_WIDTH / width)
    room = math.isqrt(MAX_UPSCALED_PIXELS // (height * width)) if height * width <= MAX_UPSCALED_PIXELS else 1
    return max(1, min(wanted, room))


def _grey_uint8(image: npt.ArrayLike) -> GreyImage:
    array = np.asarray(image)
    if array.ndim != 2 or array.size == 0:
        raise ImageLoadError(
            f"expected a non-empty 2-D (H, W) grey image to render, got shape {array.shape}; "
            "convert colour images to grey first"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageLoadError(
            f"expected a uint8 or float grey image to render, got dtype {array.dtype}; "
            "pass uint8 or float in [0, 1]"
        )
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ImageLoadError(
            "expected a float grey image with finite values in [0, 1]; "
            "min-max scale it or pass uint8"
        )
    return np.rint(array * 255.0).astype(np.uint8)


def _normalised_heat(heatmap: npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != shape:
        raise ValueError(
            f"expected a heatmap of the image's shape (H, W) = {shape}, got {heat.shape}; "
            "map working-frame heatmaps back with ResizePad.heatmap_to_input first"
        )
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or infinite values; scores must be finite")
    positive = np.maximum(heat, 0.0)
    peak = positive.max()
    return positive / peak if peak > 0 else positive


def _box_array(boxes: npt.ArrayLike) -> BoxArray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
        raise ValueError(
            f"expected boxes as a finite (N, 4) array of (x1, y1, x2, y2), got shape "
            f"{array.shape}; wrap a single box as [[x1, y1, x2, y2]]"
        )
    return array


def _draw_boxes(rgb: npt.NDArray[np.uint8], boxes: BoxArray, factor: int, color: tuple[int, int, int],
                *, dash: tuple[int, int] | None = None) -> None:
    """Paint 2-px outlines into ``rgb`` (in place), box coordinates scaled by ``factor``;
    with ``dash = (on, off)``, only the pixels ``k`` with ``k % (on + off) < on`` along
    each edge, counted from the box's top-left corner."""
    height, width = rgb.shape[:2]
    corners = np.rint(boxes * factor).astype(np.int64)
    corners[:, 0::2] = np.clip(corners[:, 0::2], 0, width)
    corners[:, 1::2] = np.clip(corners[:, 1::2], 0, height)
    t = _BOX_THICKNESS
    for x1, y1, x2, y2 in corners:
        if x2 <= x1 or y2 <= y1:
            continue
        rows, cols = np.arange(y2 - y1)[:, None], np.arange(x2 - x1)[None, :]
        across = (rows < t) | (rows >= y2 - y1 - t)  # top and bottom edges
        down = (cols < t) | (cols >= x2 - x1 - t)  # left and right edges
        if dash is not None:
            across, down = across & (cols % sum(dash) < dash[0]), down & (rows % sum(dash) < dash[0])
        rgb[y1:y2, x1:x2][across | down] = color


def _caption_font(canvas_width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font, sized to the canvas when FreeType is available."""
    if features.check("freetype2"):
        return ImageFont.load_default(size=min(_MAX_FONT_SIZE, max(12, canvas_width // 40)))
    return ImageFont.load_default()


def _wrap(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float
) -> list[str]:
    """Greedy word wrap to ``width`` pixels; words wider than a line are split."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and font.getlength(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def add_caption(canvas: Image.Image, caption: str) -> Image.Image:
    """``canvas`` under a dark strip with ``caption`` wrapped in white (at most 6 lines)."""
    font = _caption_font(canvas.width)
    left, top, _, bottom = font.getbbox("Ag|")
    line_height = int(bottom - top) + 4
    pad = max(4, line_height // 3)
    lines = _wrap(caption, font, canvas.width - 2 * pad)
    if len(lines) > _MAX_CAPTION_LINES:
        lines = [*lines[: _MAX_CAPTION_LINES - 1], lines[_MAX_CAPTION_LINES - 1] + "..."]
    strip = 2 * pad + line_height * len(lines)
    out = Image.new("RGB", (canvas.width, canvas.height + strip), _CAPTION_BACKGROUND)
    out.paste(canvas, (0, strip))
    draw = ImageDraw.Draw(out)
    for number, line in enumerate(lines):
        origin = (pad - left, pad - top + number * line_height)
        draw.text(origin, line, fill=_CAPTION_TEXT, font=font)
    return out


def add_legend(canvas: Image.Image, *, heat: bool, evidence: bool, truth: bool) -> Image.Image:
    """``canvas`` over a strip naming what it shows: the evidence-box and truth-box
    styles and the heat ramp (each only when shown)."""
    font = _caption_font(max(canvas.width, _LEGEND_WIDTH))
    left, top, _, bottom = font.getbbox("Ag|")
    line_height = int(bottom - top) + 4
    pad = max(4, line_height // 3)
    sample = 2 * line_height
    items = [(kind, text) for kind, text, shown in (
        ("evidence", "evidence boxes", evidence), ("truth", "ground truth", truth),
        ("heat", "heat: low to high", heat)) if shown]
    if not items:
        return canvas
    rows: list[list[tuple[str, str, int]]] = [[]]
    x = pad
    for kind, text in items:
        width = sample + pad + int(font.getlength(text)) + 2 * pad
        if rows[-1] and x + width > canvas.width:
            rows.append([])
            x = pad
        rows[-1].append((kind, text, x))
        x += width
    strip = pad + len(rows) * (line_height + pad)
    out = Image.new("RGB", (canvas.width, canvas.height + strip), _CAPTION_BACKGROUND)
    out.paste(canvas, (0, 0))
    pixels = np.array(out)
    for number, row in enumerate(rows):
        y = canvas.height + pad + number * (line_height + pad)
        for kind, _, x in row:
            box = np.array([[x, y + 2, x + sample, y + line_height - 2]], dtype=np.float64)
            if kind == "heat":
                ramp = colormap(np.linspace(0.0, 1.0, sample))
                pixels[y + 2 : y + line_height - 2, x : x + sample] = ramp[None, :, :]
            else:
                _draw_boxes(pixels, box, 1, BOX_COLOR if kind == "evidence" else TRUTH_COLOR,
                            dash=DASH if kind == "evidence" else None)
    out = Image.fromarray(pixels)
    draw = ImageDraw.Draw(out)
    for number, row in enumerate(rows):
        y = canvas.height + pad + number * (line_height + pad)
        for _, text, x in row:
            draw.text((x + sample + pad - left, y + 2 - top), text, fill=_CAPTION_TEXT, font=font)
    return out
