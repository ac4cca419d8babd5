"""What does unbalanced OT cost inside concept transfer: the separable solver against POT.

Two measurements, side by side in one run:

1. **One 56x56 solve** (a phantom pool reference onto a held-out phantom, the paper's
   epsilon 0.05 and lambda 0.1): POT's dense solver (NumPy and torch backends) against
   the separable-kernel solver (NumPy, torch, and its log-domain variant) on the CPU
   (and on ``--device`` when given, e.g. ``cuda``), with the largest difference between
   each plan and POT's NumPy plan and the speed-up over POT's NumPy solver.
2. **UOT share of transfer time**: ``transfer_concepts`` with the 16-phantom pool on
   held-out phantoms (pool grids already cached, as they are after the first sample),
   timing every ``solve_uot`` call inside it (default solver, and ``solver="pot"``).

Usage::

    python benchmarks/bench_uot.py [--repeat 3] [--samples 3] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import cxr_attrib_plugins.medfocus.transfer as transfer_module
from cxr_attrib_phantom import generate_phantom
from cxr_attrib_phantom.pool import phantom_pool
from cxr_attrib_plugins.medfocus import TransferCache, grid_measure, solve_uot, transfer_concepts
from cxr_attrib_plugins.medfocus.grids import pool_grids


def timed(call: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def solve_section(repeat: int, device: str | None) -> None:
    pool = phantom_pool()
    reference = pool_grids(pool, 224, 56)[0].measure
    target = grid_measure(generate_phantom(1000).image, 56)
    print(f"one 56x56 solve: {reference.cells.size} x {target.cells.size} support cells, "
          f"epsilon 0.05, lambda 0.1, <= 500 iterations")
    pot_s, pot_run = timed(lambda: solve_uot(reference, target, solver="sinkhorn"), repeat)
    print(f"  POT numpy                 {pot_s:8.4f} s  ({pot_run.iterations} iterations, "
          f"converged={pot_run.converged})")
    runs = [("POT torch", "sinkhorn", "cpu"), ("separable numpy", "separable", None),
            ("separable torch", "separable", "cpu"), ("separable_log numpy", "separable_log", None)]
    if device:
        runs += [("POT torch", "sinkhorn", device), ("separable torch", "separable", device)]
    for label, solver, where in runs:
        seconds, run = timed(lambda: solve_uot(reference, target, solver=solver, device=where), repeat)
        gap = float(np.abs(run.plan - pot_run.plan).max() / pot_run.plan.max())
        print(f"  {label + (':' + where if where else ''):25s} {seconds:8.4f} s  speed-up over POT numpy "
              f"{pot_s / seconds:7.1f}x  ({run.iterations} iterations) max plan difference (relative) = {gap:.1e}")


def share_section(samples: int, device: str | None, solver: str) -> None:
    pool = phantom_pool()
    pool_grids(pool, 224, 14)
    pool_grids(pool, 224, 56)
    solve_time = [0.0]
    original = transfer_module.solve_uot

    def counting(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            solve_time[0] += time.perf_counter() - start

    transfer_module.solve_uot = counting
    try:
        for mode in ("mass", "warp"):
            solve_time[0] = 0.0
            start = time.perf_counter()
            for seed in range(1000, 1000 + samples):
                transfer_concepts(generate_phantom(seed).image, pool, transfer=mode, cache=TransferCache(),
                                  device=device, solver=solver)
            total = time.perf_counter() - start
            print(f"solver={solver}, transfer={mode}: {total / samples:6.2f} s per sample, UOT {solve_time[0] / samples:6.2f} s "
                  f"= {100 * solve_time[0] / total:4.1f}% (16 selection solves at 14x14 + "
                  f"{'1' if mode == 'mass' else '2'} at 56x56)")
    finally:
        transfer_module.solve_uot = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None, help="also run the torch backend here (e.g. cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"separable vs POT, {args.threads} CPU thread(s)")
    solve_section(args.repeat, args.device)
    for solver in ("auto", "pot"):
        share_section(args.samples, None, solver)
    if args.device:
        share_section(args.samples, args.device, "auto")


if __name__ == "__main__":
    main()
