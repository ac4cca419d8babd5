"""What does the leaderboard machinery cost, and does sharding scale?

Three measurements on the embedded models (phantom-qwen, phantom-gemma), occlusion
plus the priors, side by side in one run:

1. **Store overhead**: seconds spent writing unit rows (one committed SQLite
   transaction each) over seconds spent computing the units, in one process.
2. **Sharding throughput**: the same leaderboard run by 1 process (1 thread) and by 2
   shard processes at once (1 thread each), both through the real CLI. Throughput is
   units per second of wall time, launch to last exit; the steady-state figure counts
   units between the first and the last commit (start-up and model loads excluded).
3. **Model loads per process**, read back from the stores' ``model_loads`` table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_leaderboard.py [--per-finding 2] [--tiles 4]

The ratios need two free cores; on a busy machine they measure the contention.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.leaderboard import Store, open_store
from cxr_attrib.leaderboard.plan import build_config
from cxr_attrib.leaderboard.runner import plan_models, run_shard
from cxr_attrib.leaderboard.shard import Shard

MODELS = ("phantom-qwen", "phantom-gemma")
CLI = str(Path(sys.executable).parent / "cxr-attrib")


def _args(per_finding: int, tiles: int, out: Path, *extra: str) -> list[str]:
    return [CLI, "leaderboard", "-b", "phantom", "-m", ",".join(MODELS), "--methods", "occlusion",
            "-p", f"occlusion.tiles={tiles}", "--per-finding", str(per_finding), "--out", str(out), *extra]


def store_overhead(per_finding: int, tiles: int, folder: Path) -> None:
    torch.set_num_threads(1)
    config = build_config(benchmark="phantom", split="direct", models=MODELS, methods_=["occlusion"],
                          params=[f"occlusion.tiles={tiles}"], per_finding=per_finding)
    shard = Shard(0, 1)
    with Store.create(folder / "overhead.sqlite", config, shard.label) as store:
        stats = run_shard(config, store, shard, plan_models(config, shard), options=LoadOptions(device="cpu"))
    per_unit = stats.unit_s / stats.done
    write = stats.write_s / stats.done
    print(f"[1] store overhead: {stats.done} units, unit {per_unit * 1000:.0f} ms, write {write * 1000:.2f} ms "
          f"-> {100 * write / per_unit:.2f}% of the unit time (target <= 2%)")


def _commit_span(paths: list[Path]) -> tuple[int, float]:
    times = []
    for path in paths:
        with open_store(path) as store:
            times += [u.finished_at for u in store.units(heatmaps=False)]
    return len(times), max(times) - min(times)


def _launch(commands: list[list[str]]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tick = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd in commands]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a leaderboard process failed: exit codes {codes}")
    return time.perf_counter() - tick


def sharding(per_finding: int, tiles: int, folder: Path) -> None:
    one, two = folder / "one", folder / "two"
    wall_1 = _launch([_args(per_finding, tiles, one)])
    wall_2 = _launch([_args(per_finding, tiles, two, "--shard", f"{k}/2") for k in range(2)])
    n_1, span_1 = _commit_span([one / "leaderboard.sqlite"])
    n_2, span_2 = _commit_span(sorted(two.glob("shard-*.sqlite")))
    print(f"[2] 1 process: {n_1} units in {wall_1:.1f} s; 2 shard processes: {n_2} units in {wall_2:.1f} s")
    print(f"    throughput ratio (wall, incl. start-up and loads): {(n_2 / wall_2) / (n_1 / wall_1):.2f}x")
    print(f"    throughput ratio (first to last commit): {(n_2 / span_2) / (n_1 / span_1):.2f}x (target >= 1.8x)")
    for path in [one / "leaderboard.sqlite", *sorted(two.glob("shard-*.sqlite"))]:
        with open_store(path) as store:
            loads = Counter(load.worker for load in store.model_loads())
        print(f"[3] {path.parent.name}/{path.name}: model loads per process {dict(loads)} "
              f"(models: {len(MODELS)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-finding", type=int, default=2, help="candidate samples per finding")
    parser.add_argument("--tiles", type=int, default=4, help="occlusion tiles per side")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-leaderboard-"))
    try:
        store_overhead(args.per_finding, args.tiles, folder)
        sharding(args.per_finding, args.tiles, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
