"""Every registered method on both embedded models, scored against the phantoms' exact boxes.

For each embedded model: held-out positives of the ``phantom`` benchmark (seeds >=
10,000,000, findings interleaved) go through the causal filter with the phantom's
exact counterfactuals until ``--per-finding`` samples of every finding are kept (at
most ``--pool`` candidates per finding). Every method (all registered ones, priors
included, unless ``--methods`` names a subset) explains the answer "Yes" on every
kept sample, and :func:`cxr_attrib.scoring.score` measures pointing game, IoU and F1
of the thresholded map, energy in the box, and the bounded deletion / insertion
AUCs and their gains over a random order. :func:`cxr_attrib.scoring.aggregate` gives means with seeded 95% bootstrap CIs
per model and a macro row over the two models. A method that raises on a sample is
recorded in the report and the run goes on.

Usage::

    python benchmarks/phantom_methods.py [--per-finding 10] [--methods occlusion,rise,center]
        [--params rise:n_masks=200] [--out phantom-methods.md]

Parts can run side by side and be merged: ``--models phantom-qwen --save qwen.json``,
``--models phantom-gemma --save gemma.json``, then ``--merge qwen.json gemma.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_attrib.api import attribute
from cxr_attrib.benchmark import Sample
from cxr_attrib.filtering import causal_filter
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import get_method, methods
from cxr_attrib.scoring import aggregate, score, to_markdown
from cxr_attrib_phantom.benchmark import PhantomBench, PhantomCounterfactuals
from cxr_attrib_phantom.findings import FINDINGS

MODELS = ("phantom-qwen", "phantom-gemma")
METRICS = ("pointing_game", "iou", "f1", "energy", "deletion_auc", "insertion_auc", "deletion_gain", "insertion_gain")


def parse_params(entries: list[str]) -> dict[str, dict[str, Any]]:
    """``["rise:n_masks=200", "rise:p=0.3"]`` -> ``{"rise": {"n_masks": 200, "p": 0.3}}`` (literals only)."""
    params: dict[str, dict[str, Any]] = {}
    for entry in entries:
        method, _, assignment = entry.partition(":")
        key, sep, text = assignment.partition("=")
        if not (method and key and sep):
            raise SystemExit(f"--params expects METHOD:NAME=VALUE, got {entry!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        params.setdefault(method, {})[key] = value
    return params


def kept_samples(adapter, key: str, per_finding: int, pool: int) -> tuple[list[Sample], Counter]:
    """The first ``per_finding`` held-out positives of each finding that the causal filter keeps."""
    need = dict.fromkeys(FINDINGS, per_finding)
    tried: Counter = Counter()
    by_id: dict[str, Sample] = {}

    def candidates() -> Iterator[Sample]:
        for sample in PhantomBench(n_per_finding=pool).samples(split="direct"):
            if not any(need.values()):
                return
            finding = sample.extra["finding_key"]
            if need[finding]:
                tried[finding] += 1
                by_id[sample.id] = sample
                yield sample

    kept = []
    for record in causal_filter(adapter, candidates(), PhantomCounterfactuals(), model=key, max_new_tokens=8):
        if record.kept:
            sample = by_id[record.sample]
            need[sample.extra["finding_key"]] -= 1
            kept.append(sample)
    return kept, tried


def run_model(key: str, names: list[str], params: dict, per_finding: int, pool: int) -> dict[str, Any]:
    adapter = load_adapter(key)
    started = time.perf_counter()
    samples, tried = kept_samples(adapter, key, per_finding, pool)
    filter_s = time.perf_counter() - started
    rows, errors = [], []
    seconds: dict[str, list[float]] = {n: [] for n in names}
    sequences: dict[str, list[int]] = {n: [] for n in names}
    for sample in samples:
        image = sample.load_image()
        for name in names:
            try:
                result = attribute(adapter, image, sample.question, method=name, answer="Yes",
                                   **params.get(name, {}))
                scores = score(result, sample.boxes, model=adapter, split="direct", dataset="phantom",
                               sample=sample.id)
            except Exception as error:  # noqa: BLE001 - the table records the failure and goes on
                errors.append(f"{key} / {name} / {sample.id}: {type(error).__name__}: {error}")
                continue
            row = scores.as_row()
            row["method"] = name if get_method(name).uses_model else f"{name} (prior)"
            rows.append(row)
            seconds[name].append(result.meta.wall_time_s)
            sequences[name].append(int(result.meta.passes.get("forward_sequences", 0)))
    kept = Counter(s.extra["finding_key"] for s in samples)
    print(f"{key}: {len(samples)} kept of {sum(tried.values())} candidates in {filter_s:.0f} s; "
          f"{len(errors)} error(s)", flush=True)
    return {"rows": rows, "errors": errors, "tried": dict(tried), "kept": dict(kept), "seconds": seconds,
            "sequences": sequences, "wall_s": time.perf_counter() - started}


def report(runs: dict[str, dict], names: list[str], params: dict, parts: list[tuple[str, float]]) -> str:
    rows = [row for run in runs.values() for row in run["rows"]]
    table = to_markdown(aggregate(rows, metrics=METRICS, n_boot=1000, seed=0), metrics=METRICS)
    lines = [
        "# Attribution methods on the embedded phantom models",
        "",
        "Command(s) and wall time (a shared 2-core machine, "
        f"{torch.get_num_threads()} torch thread(s) per process; parts run side by side):",
        "",
        *(f"- `{command}`: {wall / 60:.1f} min" for command, wall in parts),
        "",
        "Held-out positives of the `phantom` benchmark (seeds >= 10,000,000) that the causal filter "
        "keeps with the phantom's exact counterfactuals (greedy answers: yes on the image, no with "
        "the finding removed, yes on both edits outside the box). Every method explains the "
        "teacher-forced answer \"Yes\" (seed 0); `cxr_attrib.scoring.score` compares its map with "
        "the exact finding box. Cells are mean [95% bootstrap CI] in percent, 1000 seeded resamples "
        "per cell; `macro` is the unweighted mean of the two models. Priors ignore the model and "
        "are listed beside the methods as the floor to beat.",
        "",
        "- **pointing_game**: the map's peak pixel lies in the box;",
        "- **iou**, **f1**: the map's thresholded boxes against the box (union areas);",
        "- **energy**: share of the positive map inside the box;",
        "- **deletion_auc** (lower is better) / **insertion_auc** (higher is better): the area under "
        "the answer's probability as the top-ranked pixels are removed / restored in 10 steps, in [0, 100];",
        "- **deletion_gain** / **insertion_gain**: the same against a seeded random pixel order on the same "
        "image, in [-100, 100]; positive is better than chance.",
        "",
        "Reading it: a map that is constant on tiles (occlusion) points at its tile's top-left pixel, "
        "so pointing_game misses tiles that overlap a small box only partly (`docs/phantom-results.md` "
        "counts overlaps instead). RISE's map is a probability ratio around its mean level and positive "
        "everywhere, so its energy approaches the box's share of the image.",
        "",
        "Parameters that differ from the defaults: "
        + (", ".join(f"`{m}`: {p}" for m, p in params.items() if m in names) or "none") + ".",
        "",
        "## Samples",
        "",
        "| model | candidates | kept | " + " | ".join(FINDINGS) + " |",
        "|---|---:|---:|" + "---:|" * len(FINDINGS),
    ]
    for key, run in runs.items():
        lines.append(
            f"| {key} | {sum(run['tried'].values())} | {sum(run['kept'].values())} | "
            + " | ".join(f"{run['kept'].get(f, 0)}/{run['tried'].get(f, 0)}" for f in FINDINGS) + " |"
        )
    lines += ["", "## Scores", "", table, "## Cost per sample", "",
              "| model | method | wall time (s) | forward sequences |", "|---|---|---:|---:|"]
    for key, run in runs.items():
        for name in names:
            if run["seconds"][name]:
                lines.append(f"| {key} | {name} | {np.mean(run['seconds'][name]):.2f} | "
                             f"{np.mean(run['sequences'][name]):.0f} |")
    errors = [e for run in runs.values() for e in run["errors"]]
    lines += ["", "## Errors", ""] + ([f"- {e}" for e in errors] if errors else ["None."])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-finding", type=int, default=10, help="kept samples per finding and model")
    parser.add_argument("--pool", type=int, default=30, help="candidates per finding at most")
    parser.add_argument("--methods", default="", help="comma list; default: every registered method")
    parser.add_argument("--params", nargs="*", default=[], metavar="METHOD:NAME=VALUE")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of model keys")
    parser.add_argument("--save", default="", help="also write this part's raw results as JSON")
    parser.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                        help="write the report from parts saved with --save instead of running")
    parser.add_argument("--out", default="phantom-methods.md")
    args = parser.parse_args(argv)
    if args.merge:
        saved = [json.loads(Path(path).read_text()) for path in args.merge]
        runs = {key: run for part in saved for key, run in part["runs"].items()}
        names = list(dict.fromkeys(name for part in saved for name in part["names"]))
        params = {m: p for part in saved for m, p in part["params"].items()}
        parts = [(part["command"], part["wall_s"]) for part in saved]
        merge = shlex.join(["python", "benchmarks/phantom_methods.py", *(sys.argv[1:] if argv is None else argv)])
        parts.append((merge, 0.0))
    else:
        names = [n.strip() for n in args.methods.split(",") if n.strip()] or sorted(methods())
        for name in names:
            get_method(name)  # an unknown name fails here, listing the registered ones
        params = parse_params(args.params)
        command = shlex.join(["python", "benchmarks/phantom_methods.py", *(sys.argv[1:] if argv is None else argv)])
        started = time.perf_counter()
        runs = {key: run_model(key, names, params, args.per_finding, args.pool) for key in args.models.split(",")}
        parts = [(command, time.perf_counter() - started)]
        if args.save:
            part = {"command": command, "wall_s": parts[0][1], "names": names, "params": params, "runs": runs}
            Path(args.save).write_text(json.dumps(part, default=lambda value: value.item()))  # numpy scalars
    Path(args.out).write_text(report(runs, names, params, parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
