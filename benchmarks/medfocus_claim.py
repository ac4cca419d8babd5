"""Does MedFocus beat the baselines? Paired differences from a leaderboard store.

Reads a (merged) leaderboard store and, per model and for the macro over models,
compares every MedFocus row (the paper's mode and each variant) with every other
method, prior and reference on the same samples: the mean paired difference
MedFocus - other with a seeded 95% percentile bootstrap CI (1000 resamples of the
samples), for localisation (``iou``, ``pointing_game``) and faithfulness
(``deletion_gain``, ``insertion_gain``). A difference whose CI lies above 0 is a win,
below 0 a loss, otherwise a tie. Then, per model and finding, MedFocus (paper mode)
against the best other method of that cell (by mean IoU / deletion gain).

Usage::

    python benchmarks/medfocus_claim.py runs/phantom-leaderboard/merged.sqlite [--out claim.md]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from cxr_attrib.leaderboard import open_store

METRICS = ("iou", "pointing_game", "deletion_gain", "insertion_gain")


def _ci(values: np.ndarray) -> tuple[float, float, float]:
    boot = np.random.default_rng(0).choice(values, size=(1000, values.size)).mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def _cell(values: np.ndarray) -> str:
    mean, low, high = _ci(values)
    verdict = "win" if low > 0 else "loss" if high < 0 else "tie"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] {verdict}"


def load(path: Path) -> dict:
    """model -> method -> sample -> (finding, metrics)."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    with open_store(path) as store:
        for unit in store.units(heatmaps=False):
            if unit.ok:
                table[unit.model][unit.method][unit.sample_id] = (unit.sample.finding, unit.metrics)
    return table


def _differences(table: dict, model: str, mine: str, other: str, metric: str, finding: str | None = None):
    a, b = table[model][mine], table[model][other]
    shared = [s for s in a if s in b and (finding is None or a[s][0] == finding)
              and a[s][1].get(metric) is not None and b[s][1].get(metric) is not None]
    return np.array([a[s][1][metric] - b[s][1][metric] for s in shared], dtype=np.float64)


def pairwise(table: dict) -> list[str]:
    lines = []
    for model in sorted(table):
        mine = sorted(m for m in table[model] if m.startswith("medfocus"))
        others = sorted(m for m in table[model] if not m.startswith("medfocus"))
        lines += [f"### {model}", "", "| MedFocus row | against | n | " + " | ".join(METRICS) + " |",
                  "|---|---|---:|" + "---|" * len(METRICS)]
        for row in mine:
            for other in others:
                cells = []
                for metric in METRICS:
                    diff = _differences(table, model, row, other, metric)
                    cells.append(_cell(diff) if diff.size > 1 else "-")
                n = len(_differences(table, model, row, other, "iou"))
                lines.append(f"| {row} | {other} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def per_finding(table: dict, metric: str) -> list[str]:
    lines = [f"| model | finding | medfocus | best other (by {metric}) | other | medfocus - other [95% CI] |",
             "|---|---|---:|---|---:|---|"]
    for model in sorted(table):
        findings = sorted({f for f, _ in table[model].get("medfocus", {}).values()})
        for finding in findings:
            means = {}
            for method, samples in table[model].items():
                if method.startswith("medfocus") or method in ("truth", "random"):
                    continue
                values = [m[metric] for f, m in samples.values() if f == finding and m.get(metric) is not None]
                if values:
                    means[method] = float(np.mean(values))
            mine = [m[metric] for f, m in table[model]["medfocus"].values() if f == finding
                    and m.get(metric) is not None]
            if not means or not mine:
                continue
            best = max(means, key=means.get)
            diff = _differences(table, model, "medfocus", best, metric, finding)
            lines.append(f"| {model} | {finding} | {100 * np.mean(mine):.1f} | {best} | {100 * means[best]:.1f} | "
                         f"{_cell(diff) if diff.size > 1 else '-'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = load(args.store)
    text = "\n".join(["## Paired differences (MedFocus row - other, percent points)", "", *pairwise(table),
                      "## Per finding: MedFocus (paper mode) against the best other method", "",
                      *per_finding(table, "iou"), "", *per_finding(table, "deletion_gain"), ""])
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
