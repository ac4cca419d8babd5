"""Which layer should Grad-CAM read? A pointing-game sweep on the embedded phantom models.

For each held-out phantom positive (``--per-finding`` per finding, seeds from
``HELD_OUT_SEED_START + 500``), runs ``gradcam`` and ``gradcampp`` at every decoder layer
and at ``"vision"``, and prints the fraction of samples whose map peak lies inside a
ground-truth box (a blank map counts as a miss).

Usage::

    python benchmarks/bench_gradcam_layers.py [--models phantom-qwen phantom-gemma] [--per-finding 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cxr_attrib import attribute
from cxr_attrib.models import load_adapter
from cxr_attrib_phantom import make_vqa_item
from cxr_attrib_phantom.audit import peak_overlaps
from cxr_attrib_phantom.evaluation import HELD_OUT_SEED_START
from cxr_attrib_phantom.findings import FINDINGS


def sweep(model: str, per_finding: int) -> dict[str, dict[str, float]]:
    """``{method: {layer: pointing-game rate}}`` on ``per_finding`` positives per finding."""
    adapter = load_adapter(model)
    layers: list[int | str] = [*range(len(adapter.decoder_layers())), "vision"]
    hits: dict[str, dict[str, list[bool]]] = {m: {str(layer): [] for layer in layers} for m in ("gradcam", "gradcampp")}
    for finding in FINDINGS:
        for i in range(per_finding):
            item = make_vqa_item(HELD_OUT_SEED_START + 500 + i, finding, True, "direct")
            image = np.round(item.case.image * 255).astype(np.uint8)
            for method, rates in hits.items():
                for layer in layers:
                    result = attribute(adapter, image, item.question, method=method, answer="Yes", layer=layer)
                    hit = result.heatmap.max() > 0 and peak_overlaps(result.heatmap, item.case.boxes)
                    rates[str(layer)].append(bool(hit))
    return {m: {layer: float(np.mean(v)) for layer, v in rates.items()} for m, rates in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["phantom-qwen", "phantom-gemma"])
    parser.add_argument("--per-finding", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for model in args.models:
        for method, rates in sweep(model, args.per_finding).items():
            cells = ", ".join(f"{layer}: {rate:.2f}" for layer, rate in rates.items())
            print(f"{model} {method} (peak in box, {args.per_finding * len(FINDINGS)} positives): {cells}")


if __name__ == "__main__":
    main()
