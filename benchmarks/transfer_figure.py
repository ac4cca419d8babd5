"""Figure: the phantom pool's 11 concepts transferred onto a real chest X-ray.

The radiograph is ``RG1_UNCR.dcm`` from pydicom-data (a 1955 x 1841 MONOCHROME1
computed radiograph). It is resize-padded into the 224 working frame, the built-in
``phantom`` pool is transferred onto it twice (the paper's mass-quantile boxes and the
debiased warp), and the boxes are mapped back to the radiograph with the same
:class:`~cxr_attrib.frames.ResizePad` and drawn, one colour per concept, on a
reduced copy. For a reader to judge: there is no ground truth on this image.

Usage::

    python benchmarks/transfer_figure.py [--out docs/images/concept_transfer_rg1.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cxr_attrib.frames import ResizePad
from cxr_attrib.imageio import load_image
from cxr_attrib.pools import CONCEPTS
from cxr_attrib_plugins.medfocus import TransferCache, transfer_concepts

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#ffe119", "#9a6324")
PANEL = 420  # long side of each panel, pixels


def radiograph() -> np.ndarray:
    import data_store  # from pydicom-data (the test extra)

    return load_image(Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm").pixels


def panel(pixels: np.ndarray, boxes: dict[str, tuple[float, ...]], title: str) -> Image.Image:
    scale = PANEL / max(pixels.shape)
    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    canvas = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for concept, colour in zip(CONCEPTS, COLOURS):
        x1, y1, x2, y2 = (v * scale for v in boxes[concept])
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=2)
    draw.text((6, 4), title, fill="#ffffff")
    return canvas


def legend(height: int) -> Image.Image:
    canvas = Image.new("RGB", (190, height), "#000000")
    draw = ImageDraw.Draw(canvas)
    for k, (concept, colour) in enumerate(zip(CONCEPTS, COLOURS)):
        draw.rectangle([8, 12 + 22 * k, 22, 26 + 22 * k], fill=colour)
        draw.text((30, 13 + 22 * k), concept, fill="#ffffff")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/concept_transfer_rg1.png"))
    args = parser.parse_args()
    pixels = radiograph()
    frame = ResizePad.for_image(pixels)
    working = frame.image_to_working(pixels)
    panels = []
    for mode, title in (("mass", "paper: mass quantile"), ("warp", "transfer=warp")):
        result = transfer_concepts(working, "phantom", transfer=mode, cache=TransferCache())
        on_input = frame.boxes_to_input([result.boxes[c] for c in CONCEPTS])
        print(f"{mode}: reference {result.reference_id}, input-frame boxes:")
        for concept, box in zip(CONCEPTS, on_input):
            print(f"  {concept:26s} {np.round(box).astype(int).tolist()}")
        panels.append(panel(pixels, dict(zip(CONCEPTS, map(tuple, on_input))), title))
    parts = [*panels, legend(panels[0].height)]
    figure = Image.new("RGB", (sum(p.width for p in parts), panels[0].height), "#000000")
    x = 0
    for part in parts:
        figure.paste(part, (x, 0))
        x += part.width
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
