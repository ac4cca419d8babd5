"""How well does concept transfer find the 11 concepts of an unseen phantom?

For held-out normal phantoms (seeds 1000, 1001, ...; none is in the pool) the
built-in 16-phantom pool is transferred onto each image, and every concept's box is
compared with the box of the phantom's exact mask (IoU). Four settings side by side:
the paper's (``transfer="mass"``, ``selection="cost"``), full-objective selection, and
the debiased barycentric warp with either selection. An identity row (each phantom's
own masks as a one-reference pool) shows what the transfer loses when the reference
is the image itself. Prints a markdown table (per concept, mean over phantoms).

``--headroom`` prints a second table: with the separable solver a finer transfer grid
and a larger pool are affordable, so the paper mode and the warp mode are measured at
``transfer_grid`` 56 / 112 / 224 with the 16-phantom pool, and at 56 and 112 with a
64-phantom pool (reference selection among more candidates): mean box IoU over the
11 concepts, its spread over phantoms, and seconds per phantom.

Usage::

    python benchmarks/transfer_quality.py [--samples 8] [--headroom] [--grids 56,112,224]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cxr_attrib.pools import CONCEPTS, ConceptPool, PoolReference, mask_box
from cxr_attrib.scoring.localisation import region_metrics
from cxr_attrib_phantom import generate_phantom
from cxr_attrib_phantom.pool import phantom_pool
from cxr_attrib_plugins.medfocus import TransferCache, transfer_concepts

SETTINGS = {
    "paper (mass, cost)": {"transfer": "mass", "selection": "cost"},
    "mass, objective": {"transfer": "mass", "selection": "objective"},
    "warp, cost": {"transfer": "warp", "selection": "cost"},
    "warp, objective": {"transfer": "warp", "selection": "objective"},
}


def ious(result, phantom) -> list[float]:
    return [region_metrics(np.array([result.boxes[c]]), np.array([mask_box(phantom.masks[c])])).iou
            for c in CONCEPTS]


def headroom(phantoms: list, grids: list[int]) -> None:
    """Mean box IoU by transfer grid and pool size, paper mode and warp mode (markdown)."""
    print(f"\nMean box IoU over the 11 concepts (mean +- standard error over {len(phantoms)} held-out phantoms) "
          "and seconds per phantom (transfer cache cold, pool grids warm)\n")
    print("| pool | transfer_grid | paper (mass, cost) | s | warp, cost | s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (16, 64):
        pool = phantom_pool(n=size)
        for grid in grids if size == 16 else [g for g in grids if g <= 112]:
            cells = []
            for mode in ("mass", "warp"):
                transfer_concepts(phantoms[0].image, pool, transfer=mode, transfer_grid=grid, cache=TransferCache())
                start = time.perf_counter()
                means = [np.mean(ious(transfer_concepts(p.image, pool, transfer=mode, transfer_grid=grid,
                                                        cache=TransferCache()), p)) for p in phantoms]
                seconds = (time.perf_counter() - start) / len(phantoms)
                spread = np.std(means, ddof=1) / np.sqrt(len(means)) if len(means) > 1 else 0.0
                cells += [f"{np.mean(means):.3f} +- {spread:.3f}", f"{seconds:.2f}"]
            print(f"| {size} | {grid} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--headroom", action="store_true", help="only the grid / pool-size table")
    parser.add_argument("--grids", default="56,112,224", help="transfer grids of the headroom table")
    args = parser.parse_args()
    pool = phantom_pool()
    phantoms = [generate_phantom(seed) for seed in range(1000, 1000 + args.samples)]
    if args.headroom:
        headroom(phantoms, [int(g) for g in args.grids.split(",")])
        return
    columns: dict[str, np.ndarray] = {}
    for label, params in SETTINGS.items():
        start = time.perf_counter()
        rows = [ious(transfer_concepts(p.image, pool, cache=TransferCache(), **params), p) for p in phantoms]
        columns[label] = np.mean(rows, axis=0)
        print(f"{label}: {(time.perf_counter() - start) / len(phantoms):.1f} s per phantom", flush=True)
    for mode in ("mass", "warp"):
        rows = []
        for p in phantoms[:2]:
            itself = ConceptPool.from_references("itself", [PoolReference("self", p.image, p.masks)])
            rows.append(ious(transfer_concepts(p.image, itself, transfer=mode, cache=TransferCache()), p))
        columns[f"identity ({mode})"] = np.mean(rows, axis=0)
    print(f"\nBox IoU with the exact mask's box, mean over {len(phantoms)} held-out phantoms "
          "(identity: 2 phantoms, each its own pool)\n")
    print("| concept | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for k, concept in enumerate(CONCEPTS):
        print(f"| {concept} | " + " | ".join(f"{v[k]:.2f}" for v in columns.values()) + " |")
    print("| **mean** | " + " | ".join(f"**{v.mean():.2f}**" for v in columns.values()) + " |")


if __name__ == "__main__":
    main()
