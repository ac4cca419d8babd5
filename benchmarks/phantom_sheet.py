"""Render a contact sheet of phantoms: normals, every finding, boxes and concept masks.

Rows: (1) normal phantoms; (2) one case per finding, as a model sees it; (3) the same
cases with their ground-truth boxes (red) and each finding's region outlined in
yellow; (4) the 11 concept masks over normal phantoms.

Usage::

    python benchmarks/phantom_sheet.py docs/images/phantom_sheet.png
    python benchmarks/phantom_sheet.py sheet.png --seed 100 --size 896 --tile 256 --rgb
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion

from cxr_attrib_phantom import CONCEPTS, FINDINGS, generate_phantom, make_case

CONCEPT_COLOURS: dict[str, tuple[int, int, int]] = {
    "cardiac_silhouette": (230, 60, 60),
    "left_lung": (60, 190, 90),
    "right_lung": (70, 110, 230),
    "mediastinum": (230, 200, 60),
    "upper_mediastinum": (220, 90, 220),
    "left_clavicle": (60, 220, 220),
    "right_clavicle": (250, 150, 40),
    "left_hilar": (150, 90, 250),
    "right_hilar": (250, 250, 250),
    "left_costophrenic_angle": (20, 120, 40),
    "right_costophrenic_angle": (150, 150, 20),
}


def _tile(grey: np.ndarray) -> np.ndarray:
    """``(S, S)`` float image in [0, 1] -> ``(S, S, 3)`` uint8 RGB."""
    return np.repeat(np.round(grey * 255.0).astype(np.uint8)[:, :, None], 3, axis=2)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner border of a bool mask."""
    return mask & ~binary_erosion(mask)


def _overlay(grey: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Every concept mask tinted (40 %) and outlined in its colour over the grey image."""
    rgb = _tile(grey).astype(np.float32)
    for name in CONCEPTS:
        colour = np.asarray(CONCEPT_COLOURS[name], dtype=np.float32)
        rgb[masks[name]] = 0.6 * rgb[masks[name]] + 0.4 * colour
        rgb[_outline(masks[name])] = colour
    return rgb.astype(np.uint8)


def _label(image: Image.Image, text: str) -> None:
    """Write ``text`` in the tile's top-left corner on a black strip."""
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, 7 * len(text) + 6, 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 0))


def render_sheet(seed: int = 0, size: int = 224, tile: int = 160) -> Image.Image:
    """Build the sheet: an RGB image ``len(FINDINGS) * tile`` wide and ``4 * tile`` tall.

    Args:
        seed (int, optional): first phantom seed; tiles use consecutive seeds. Default: ``0``.
        size (int, optional): phantom side in pixels. Default: ``224``.
        tile (int, optional): displayed side of each tile in pixels. Default: ``160``.

    Returns:
        PIL.Image.Image: the contact sheet.
    """
    columns = len(FINDINGS)
    rows: list[list[tuple[np.ndarray, str, list[tuple[float, ...]]]]] = [[], [], [], []]
    for i, finding in enumerate(FINDINGS):
        normal = generate_phantom(seed + i, size)
        rows[0].append((_tile(normal.image), f"normal {seed + i}", []))
        case = make_case(seed + columns + i, finding, size)
        rows[1].append((_tile(case.image), finding, []))
        boxed = _tile(case.image)
        boxed[_outline(case.masks[str(case.region)])] = (230, 210, 40)
        rows[2].append((boxed, f"{finding} box", [tuple(b) for b in case.boxes]))
        rows[3].append((_overlay(normal.image, normal.masks), f"masks {seed + i}", []))
    sheet = Image.new("RGB", (columns * tile, len(rows) * tile))
    scale = tile / size
    for r, row in enumerate(rows):
        for c, (pixels, text, boxes) in enumerate(row):
            image = Image.fromarray(pixels).resize((tile, tile), Image.Resampling.BILINEAR)
            draw = ImageDraw.Draw(image)
            for x1, y1, x2, y2 in boxes:
                draw.rectangle(
                    [x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1], outline=(255, 40, 40), width=2
                )
            _label(image, text)
            sheet.paste(image, (c * tile, r * tile))
    return sheet


def to_palette(sheet: Image.Image, greys: int = 64, colours: int = 32) -> Image.Image:
    """A small palette PNG image: grey pixels snap to ``greys`` levels, coloured ones share
    ``colours`` median-cut colours (so overlays keep their hues while the file stays small).

    Args:
        sheet (PIL.Image.Image): RGB image.
        greys (int, optional): number of grey levels. Default: ``64``.
        colours (int, optional): number of colours for non-grey pixels. Default: ``32``.

    Returns:
        PIL.Image.Image: mode ``"P"`` image of the same size.
    """
    rgb = np.asarray(sheet.convert("RGB"))
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    levels = np.round(np.linspace(0, 255, greys)).astype(np.int32)
    index = np.zeros(rgb.shape[:2], dtype=np.uint8)
    index[grey] = np.abs(rgb[..., 0][grey].astype(np.int32)[:, None] - levels[None, :]).argmin(axis=1)
    palette = np.repeat(levels[:, None], 3, axis=1)
    if (~grey).any():
        tinted = Image.fromarray(rgb[~grey][None, :, :]).quantize(
            colours, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        index[~grey] = greys + np.asarray(tinted)[0]
        tints = np.asarray(tinted.getpalette()[: 3 * colours]).reshape(-1, 3)
        palette = np.concatenate([palette, tints])
    out = Image.fromarray(index, "P")
    out.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    return out


def main(argv: list[str] | None = None) -> Path:
    """Parse arguments, render the sheet and save it as PNG; returns the path written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="first phantom seed (default 0)")
    parser.add_argument("--size", type=int, default=224, help="phantom side in pixels (default 224)")
    parser.add_argument("--tile", type=int, default=160, help="displayed tile side (default 160)")
    parser.add_argument("--rgb", action="store_true", help="save full RGB instead of a small palette")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet = render_sheet(args.seed, args.size, args.tile)
    (sheet if args.rgb else to_palette(sheet)).save(args.out, optimize=True)
    return args.out


if __name__ == "__main__":
    print(main())
