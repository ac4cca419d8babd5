"""Which scorer fill makes the ``truth`` reference most clearly better than ``random``?

For each embedded model: the first ``--per-finding`` held-out phantom positives of
each finding that the causal filter keeps (exact counterfactuals; see
``phantom_methods.py``). On every kept sample the two reference rows explain the
model's answer "Yes": ``truth`` (the exact finding boxes) and ``random`` (a seeded
random block map). Both are scored with every fill (``zero``, ``mean``, ``blur``,
``noisy_linear``) by :func:`cxr_attrib.scoring.score` with the same steps, regions
and seed. Per model, fill and metric the table gives the paired difference
truth - random (deletion AUC: random - truth, so positive is always "truth better"),
its seeded 95% bootstrap CI, the share of samples where truth is better, and the
effect size d = mean / sd of the paired differences. A fill separates the ceiling
from the floor most clearly when d is largest on both models.

Usage::

    python benchmarks/fill_study.py [--per-finding 2] [--steps 10] [--models phantom-qwen]
        [--out fill-study.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from phantom_methods import kept_samples

from cxr_attrib.api import attribute
from cxr_attrib.models import load_adapter
from cxr_attrib.perturb import REMOVAL_FILLS
from cxr_attrib.scoring import score

MODELS = ("phantom-qwen", "phantom-gemma")
METRICS = ("deletion_auc", "deletion_gain", "insertion_gain", "morf_lerf", "drop_gain")


def paired(model: str, per_finding: int, steps: int, n_random: int) -> tuple[dict, dict, int]:
    """fill -> metric -> (n,) truth-better differences, fill -> seconds, and the sample count."""
    adapter = load_adapter(model)
    samples, _ = kept_samples(adapter, model, per_finding, pool=4 * per_finding + 8)
    diffs = {fill: {m: [] for m in METRICS} for fill in REMOVAL_FILLS}
    seconds = dict.fromkeys(REMOVAL_FILLS, 0.0)
    for sample in samples:
        image = sample.load_image()
        results = {name: attribute(adapter, image, sample.question, method=name, answer="Yes",
                                   truth_boxes=sample.boxes if name == "truth" else None)
                   for name in ("truth", "random")}
        for fill in REMOVAL_FILLS:
            tick = time.perf_counter()
            truth, rand = (score(results[name], sample.boxes, model=adapter, image=image, steps=steps,
                                 n_random=n_random, fill=fill) for name in ("truth", "random"))
            seconds[fill] += time.perf_counter() - tick
            for metric in METRICS:
                sign = -1.0 if metric == "deletion_auc" else 1.0
                diffs[fill][metric].append(sign * (getattr(truth, metric) - getattr(rand, metric)))
    return diffs, seconds, len(samples)


def _row(model: str, fill: str, metric: str, values: list[float]) -> str:
    x = np.asarray(values, dtype=np.float64)
    boot = np.random.default_rng(0).choice(x, size=(1000, x.size)).mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    d = x.mean() / x.std(ddof=1) if x.size > 1 and x.std(ddof=1) > 0 else float("nan")
    return (f"| {model} | {fill} | {metric} | {x.size} | {100 * x.mean():.1f} [{100 * low:.1f}, {100 * high:.1f}] "
            f"| {100 * np.mean(x > 0):.0f} | {d:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-finding", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--n-random", type=int, default=8)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("fill-study.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    lines = ["| model | fill | metric (truth better by) | n | mean [95% CI] | truth better (%) | d |",
             "|---|---|---|---:|---:|---:|---:|"]
    timing = []
    for model in args.models.split(","):
        diffs, seconds, n = paired(model, args.per_finding, args.steps, args.n_random)
        for fill in REMOVAL_FILLS:
            lines += [_row(model, fill, metric, diffs[fill][metric]) for metric in METRICS]
            timing.append(f"- {model}, {fill}: {seconds[fill] / max(1, 2 * n):.2f} s per scored result")
    text = "\n".join([*lines, "", *timing, "", f"Wall time: {(time.perf_counter() - started) / 60:.1f} min", ""])
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
