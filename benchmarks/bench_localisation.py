"""Benchmark: vectorised localisation scoring against a naive pure-Python baseline.

For ``--maps`` seeded random heatmaps (smooth: a few Gaussian blobs, some of them
negative, plus noise; float32) and random integer ground-truth boxes, both
implementations run the scorer's localisation pipeline:

1. heatmap -> boxes (paper protocol: clip, min-max to [0, 1], 0.9 quantile of the
   positive values, 8-connected components >= 16 px, <= 10 boxes by mean heat);
2. union-region IoU / precision / recall / F1 of those boxes against the GT boxes;
3. pointing game and energy.

The baseline is the obvious implementation on nested lists, following the protocol
literally: list comprehensions for clipping and min-max normalisation, a sort and a
linear interpolation for the quantile, a flood fill with an explicit stack for the
components and sets of pixels for the union areas. (Ours skips the normalisation
pass and selects one order statistic instead; see ``cxr_attrib.scoring.boxes``.)
Both must agree on every map (boxes and pointing game exactly, metrics to 1e-12,
energy to 1e-9); the script exits with status 1 otherwise.

Each stage runs over all maps in one batch, ours first, then the baseline; the
whole measurement is repeated ``--repeat`` times and the fastest pass of each
stage is kept (wall clock). Converting each map to nested lists is setup, not timed.

Usage::

    python benchmarks/bench_localisation.py [--maps 1000] [--size 224] [--seed 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from cxr_attrib.scoring import energy, heatmap_to_boxes, pointing_game, region_metrics

QUANTILE, MIN_PX, MAX_BOXES = 0.9, 16, 10

# ------------------------------------------------------------------- the data


def make_maps(count: int, size: int, seed: int) -> tuple[np.ndarray, list[list[list[int]]]]:
    """(count, size, size) float32 smooth maps and 1-3 integer GT boxes per map."""
    rng = np.random.default_rng(seed)
    grid = np.arange(size, dtype=np.float64)
    maps = np.empty((count, size, size), dtype=np.float32)
    gts = []
    for i in range(count):
        blobs = int(rng.integers(2, 6))
        cy, cx = rng.uniform(0, size, (2, blobs))
        sigma = rng.uniform(0.03, 0.14, blobs) * size
        amp = rng.uniform(0.3, 1.0, blobs) * np.where(rng.random(blobs) < 0.2, -1.0, 1.0)
        gy = np.exp(-0.5 * ((grid[None, :] - cy[:, None]) / sigma[:, None]) ** 2)
        gx = np.exp(-0.5 * ((grid[None, :] - cx[:, None]) / sigma[:, None]) ** 2)
        smooth = np.einsum("b,by,bx->yx", amp, gy, gx)
        maps[i] = smooth + rng.normal(0.0, 0.03, (size, size))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.integers(size // 20, size // 3, 2)
            x1, y1 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            boxes.append([x1, y1, x1 + int(w), y1 + int(h)])
        gts.append(boxes)
    return maps, gts


# ------------------------------------------------------ the pure-Python baseline


def naive_boxes(rows: list[list[float]]) -> list[list[float]]:
    """heatmap -> boxes on nested lists, same protocol as ``heatmap_to_boxes``."""
    height, width = len(rows), len(rows[0])
    clipped = [[v if v > 0.0 else 0.0 for v in row] for row in rows]
    low = min(min(row) for row in clipped)
    high = max(max(row) for row in clipped)
    if not high > low:
        return [[0.0, 0.0, float(width), float(height)]]
    span = high - low
    norm = [[(v - low) / span for v in row] for row in clipped]
    positives = sorted(v for row in norm for v in row if v > 0.0)
    position = QUANTILE * (len(positives) - 1)
    k = int(position)
    k1 = min(k + 1, len(positives) - 1)
    threshold = positives[k] + (position - k) * (positives[k1] - positives[k])

    seen = [[False] * width for _ in range(height)]
    components = []
    for r in range(height):
        for c in range(width):
            if seen[r][c] or norm[r][c] < threshold:
                continue
            seen[r][c] = True
            stack = [(r, c)]
            count, heat = 0, 0.0
            x1, y1, x2, y2 = c, r, c, r
            while stack:
                y, x = stack.pop()
                count += 1
                heat += norm[y][x]
                x1, x2, y1, y2 = min(x1, x), max(x2, x), min(y1, y), max(y2, y)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if (
                            0 <= ny < height
                            and 0 <= nx < width
                            and not seen[ny][nx]
                            and norm[ny][nx] >= threshold
                        ):
                            seen[ny][nx] = True
                            stack.append((ny, nx))
            if count >= MIN_PX:
                box = [float(x1), float(y1), float(x2 + 1), float(y2 + 1)]
                components.append((-heat / count, len(components), box))
    if not components:
        return [[0.0, 0.0, float(width), float(height)]]
    components.sort(key=lambda item: (item[0], item[1]))
    return [box for _, _, box in components[:MAX_BOXES]]


def _pixels(boxes: Sequence[Sequence[float]]) -> set[tuple[int, int]]:
    return {
        (x, y)
        for x1, y1, x2, y2 in boxes
        for y in range(int(y1), int(y2))
        for x in range(int(x1), int(x2))
    }


def naive_metrics(pred: list[list[float]], gt: list[list[int]]) -> tuple[float, ...]:
    """(iou, precision, recall, f1) by sets of pixels (integer boxes only)."""
    p, g = _pixels(pred), _pixels(gt)
    inter = len(p & g)
    if not p and not g:
        return 1.0, 1.0, 1.0, 1.0
    if not p or not g:
        return 0.0, 0.0, 0.0, 0.0
    return (
        inter / (len(p) + len(g) - inter),
        inter / len(p),
        inter / len(g),
        2.0 * inter / (len(p) + len(g)),
    )


def naive_pointing_and_energy(rows: list[list[float]], gt: list[list[int]]) -> tuple[bool, float]:
    """Pointing game (first peak in row-major order) and energy, pixel by pixel."""
    best, peak = -math.inf, (0, 0)
    total = inside = 0.0
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            if v > best:
                best, peak = v, (r, c)
            if v > 0.0:
                total += v
                if any(x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2 for x1, y1, x2, y2 in gt):
                    inside += v
    r, c = peak
    hit = any(x1 <= c + 0.5 < x2 and y1 <= r + 0.5 < y2 for x1, y1, x2, y2 in gt)
    return hit, (inside / total if total else 0.0)


# --------------------------------------------------------------------- driver


def _timed(function: Callable, *columns: Sequence) -> tuple[list, float]:
    """``[function(*args) for args in zip(*columns)]`` and its wall time in seconds."""
    start = time.perf_counter()
    results = [function(*args) for args in zip(*columns)]
    return results, time.perf_counter() - start


def _pass(maps: np.ndarray, lists: list, gts: list) -> tuple[dict, dict, list, list]:
    """One timed pass of both implementations: times (s) and results per map."""
    fast: dict[str, float] = {}
    slow: dict[str, float] = {}
    boxes, fast["boxes"] = _timed(heatmap_to_boxes, maps)
    metrics, fast["metrics"] = _timed(region_metrics, boxes, gts)
    hits_energy, fast["pointing+energy"] = _timed(
        lambda m, g: (pointing_game(m, g), energy(m, g)), maps, gts
    )
    n_boxes, slow["boxes"] = _timed(naive_boxes, lists)
    n_metrics, slow["metrics"] = _timed(naive_metrics, n_boxes, gts)
    n_hits_energy, slow["pointing+energy"] = _timed(naive_pointing_and_energy, lists, gts)
    ours = [
        (b.tolist(), tuple(m.to_dict().values()), *pe)
        for b, m, pe in zip(boxes, metrics, hits_energy)
    ]
    naive = [(b, m, *pe) for b, m, pe in zip(n_boxes, n_metrics, n_hits_energy)]
    return fast, slow, ours, naive


def _agree(ours: tuple, naive: tuple) -> bool:
    """Same boxes and pointing game; metrics to 1e-12, energy to 1e-9."""
    return (
        ours[0] == naive[0]
        and all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) for a, b in zip(ours[1], naive[1]))
        and ours[2] == naive[2]
        and math.isclose(ours[3], naive[3], rel_tol=1e-9, abs_tol=1e-12)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=1000, help="number of maps (default 1000)")
    parser.add_argument("--size", type=int, default=224, help="map side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (default 3)")
    args = parser.parse_args(argv)

    maps, gts = make_maps(args.maps, args.size, args.seed)
    lists = [heatmap.tolist() for heatmap in maps]
    fast: dict[str, float] = {}
    slow: dict[str, float] = {}
    for _ in range(args.repeat):
        fast_pass, slow_pass, ours, naive = _pass(maps, lists, gts)
        for key in fast_pass:
            fast[key] = min(fast.get(key, math.inf), fast_pass[key])
            slow[key] = min(slow.get(key, math.inf), slow_pass[key])

    mismatches = 0
    for i, (mine, theirs) in enumerate(zip(ours, naive)):
        if not _agree(mine, theirs):
            mismatches += 1
            if mismatches <= 5:
                print(f"map {i}: ours  {mine}\nmap {i}: naive {theirs}")

    print(
        f"{args.maps} maps of {args.size}x{args.size} (seed {args.seed}), "
        f"{sum(len(m[0]) for m in ours) / args.maps:.2f} predicted boxes and "
        f"{sum(len(g) for g in gts) / args.maps:.2f} GT boxes per map; "
        f"best of {args.repeat} passes"
    )
    print(f"agreement: {args.maps - mismatches}/{args.maps} maps identical")
    stages = [
        ("heatmap -> boxes", ["boxes"]),
        ("union metrics", ["metrics"]),
        ("boxes + union metrics", ["boxes", "metrics"]),
        ("pointing + energy", ["pointing+energy"]),
        ("all localisation", ["boxes", "metrics", "pointing+energy"]),
    ]
    print(f"{'stage':<24}{'ours (s)':>10}{'naive (s)':>11}{'ours ms/map':>13}{'speed-up':>10}")
    for name, keys in stages:
        ours_s, naive_s = sum(fast[k] for k in keys), sum(slow[k] for k in keys)
        print(
            f"{name:<24}{ours_s:>10.3f}{naive_s:>11.3f}"
            f"{1000 * ours_s / args.maps:>13.3f}{naive_s / ours_s:>9.1f}x"
        )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
