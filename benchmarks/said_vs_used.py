"""Said vs used on the embedded phantom models: the box a model states against the region it used.

Runs a leaderboard (the same machinery as ``cxr-attrib leaderboard``) of the methods
``prompting`` (the box the model *says*: its first stated box), ``medfocus`` (the
winning concept region that *causally* drives the answer) and ``occlusion`` (the boxes
derived from its heatmap) on the held-out positives of the ``phantom`` benchmark, then
reads the store with :func:`cxr_attrib.leaderboard.agreement_from_store`: per model and
finding, on the samples the model answered "yes" to, the IoU of the said box with each
used region and with the exact box (see docs/phantom-methods.md, "Said vs used").

The store is resumable: rerunning the same command finishes an interrupted run.
``--store PATH`` reads an existing store instead (e.g. the merged phantom leaderboard
of docs/leaderboard.md, which runs every method), running nothing.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/said_vs_used.py [--per-finding 10] [--filter none]
        [--models phantom-qwen,phantom-gemma] [--out runs/said-vs-used] [--table said-vs-used.md]
    python benchmarks/said_vs_used.py --store runs/phantom-leaderboard/merged.sqlite
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.leaderboard import Store, agreement_from_store, agreement_markdown
from cxr_attrib.leaderboard.plan import build_config
from cxr_attrib.leaderboard.runner import plan_models, run_shard
from cxr_attrib.leaderboard.shard import Shard

SAID = "prompting"
USED = ("medfocus", "occlusion")
MODELS = "phantom-qwen,phantom-gemma"


def run(models: list[str], per_finding: int, filter_: str, store_path: Path) -> float:
    """Run (or finish) the leaderboard into ``store_path``; returns the wall seconds."""
    config = build_config(benchmark="phantom", split="direct", models=models, methods_=[SAID, *USED],
                          per_finding=per_finding, filter_=filter_)
    shard = Shard(0, 1)
    if store_path.exists():
        store = Store.open(store_path, writable=True)
        if store.config() != config:
            raise SystemExit(f"{store_path} holds another run ({store.config().describe_difference(config)}); "
                             "use another --out")
    else:
        store_path.parent.mkdir(parents=True, exist_ok=True)
        store = Store.create(store_path, config, shard.label)
    started = time.perf_counter()
    with store:
        stats = run_shard(config, store, shard, plan_models(config, shard), options=LoadOptions(device="cpu"))
    print(f"{stats.done} units run ({stats.failed} failed), {stats.skipped} already stored", flush=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=MODELS, help="comma list of model keys or folders")
    parser.add_argument("--per-finding", type=int, default=10, help="held-out positives per finding")
    parser.add_argument("--filter", default="none", choices=["none", "exact"],
                        help="none: every sample; exact: only those the causal filter keeps")
    parser.add_argument("--out", type=Path, default=Path("runs/said-vs-used"), help="folder of the store")
    parser.add_argument("--table", type=Path, default=None, help="write the markdown here (default: print)")
    parser.add_argument("--store", type=Path, default=None,
                        help="read this leaderboard store (it must hold the three methods); run nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = shlex.join(["python", "benchmarks/said_vs_used.py", *(sys.argv[1:] if argv is None else argv)])
    if args.store is None:
        store_path = args.out / "leaderboard.sqlite"
        wall = run(args.models.split(","), args.per_finding, args.filter, store_path)
        ran = f" ({wall / 60:.1f} min, 1 torch thread; store {store_path})"
    else:
        store_path, ran = args.store, ""
    rows = agreement_from_store(store_path, said=SAID, used=USED)
    text = "\n".join([
        f"Command: `{command}`{ran}.",
        "",
        f"Held-out positives of the `phantom` benchmark that the model answered \"yes\" to; said = the first "
        f"box of `{SAID}`, used = the union of the boxes of {', '.join(f'`{u}`' for u in USED)}; "
        "cells are mean [95% bootstrap CI] in percent.",
        "",
        agreement_markdown(rows),
        "",
    ])
    if args.table:
        args.table.write_text(text)
        print(f"wrote {args.table}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
