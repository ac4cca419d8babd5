"""Time of ROAD's noisy linear imputation on a 224 x 224 working image, half removed.

Two removal patterns, each the median of ``--repeat`` runs: half of the pixels
removed at random (scattered, what a noisy map removes) and the left half removed
(one block, the hardest case for the sparse solver: the most fill-in). The target is
under 0.5 s per image.

Usage::

    python benchmarks/bench_imputation.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cxr_attrib.imputation import noisy_linear_impute


def _median_seconds(image: np.ndarray, removed: np.ndarray, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        noisy_linear_impute(image, removed, rng=np.random.default_rng(0))
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:224, 0:224]
    image = np.clip(0.5 + 0.3 * np.sin(rows / 17.0) * np.cos(cols / 23.0) + 0.05 * rng.random((224, 224)), 0, 1)
    scattered = rng.permutation(224 * 224).reshape(224, 224) < 224 * 112
    block = np.zeros((224, 224), dtype=bool)
    block[:, :112] = True
    print("| removal (224 x 224, half the pixels) | median seconds |")
    print("|---|---|")
    for name, removed in (("scattered at random", scattered), ("left half, one block", block)):
        print(f"| {name} | {_median_seconds(image, removed, args.repeat):.3f} |")


if __name__ == "__main__":
    main()
