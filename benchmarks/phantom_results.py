"""Measure the embedded phantom models on held-out seeds and write docs/phantom-results.md.

The same protocol as ``tests/test_embedded_models.py``: :func:`evaluate` with 40
direct items and 20 reasoning items per finding and answer and 60 grounding cases per
finding (beside the model-free side prior), then
:func:`filter_and_localise` (causal filter with exact counterfactuals on 10 held-out
positives per finding, occlusion on the retained ones).

Usage::

    python benchmarks/phantom_results.py [--out docs/phantom-results.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxr_attrib.models import load_adapter
from cxr_attrib_phantom.audit import LocalisationAudit, filter_and_localise
from cxr_attrib_phantom.evaluation import EvaluationReport, evaluate
from cxr_attrib_phantom.findings import FINDINGS

KEYS = ("phantom-qwen", "phantom-gemma")

HEADER = """# Held-out results of the embedded models

Measured on held-out phantom seeds (>= 10,000,000; training draws seeds < 1,000,000)
by `python benchmarks/phantom_results.py` (the same protocol as the slow tests in
`tests/test_embedded_models.py`, which hold the models to the targets below).

- **Direct**: `evaluate(adapter, per_finding=40, reasoning_per_finding=20)`; verdict
  yes when log p("Yes") > log p("No"); 40 positives and 40 negatives per finding (half
  normal phantoms, half phantoms showing another finding). *spec (normal)* /
  *spec (other)*: "no" rate on those two halves; *flip*: yes on the image and no on
  its exact counterfactual; *keep*: the causal filter's verdicts (yes, no, yes, yes).
- **Reasoning**: greedy generation read by `parse_yes_no`, 40 items per finding.
- **Grounding**: `grounding_per_finding=60` held-out positives per finding, one greedy
  answer each to the `prompting` method's question (*evidence*: the yes/no question, the
  answer "Yes", and a request for the box in the family's format) and to "Where is the
  {finding}? Answer with a bounding box." (*where*); the first stated box against the
  exact box. *parse*: at least one valid box; *IoU*: mean, unparsed answers 0; *hit*:
  IoU >= 0.5. *prior*: a model-free constant, the median exact box of the finding on
  the same side over 60 training seeds, scored on the same cases: the floor to beat.
- **Causal filter + occlusion**: `filter_and_localise(adapter, key, n_per_finding=10)`
  on the `phantom` benchmark (greedy answers on the image and its three exact
  counterfactuals), then occlusion (8x8 tiles) on every retained sample: is the
  map's peak inside the exact box?

Targets (docs/phantom.md): direct accuracy >= 90% overall and >= 80% per finding;
reasoning parses >= 95% and is correct >= 85%; the filter keeps >= 60% overall and
>= 30% of every finding; occlusion's peak in the box on most retained samples; the
evidence box hits (IoU >= 0.5) >= 70% of the large findings' positives pooled
(pleural effusion, cardiomegaly, mass, pneumothorax).
All figures in %.
"""


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def model_section(key: str, adapter, report: EvaluationReport) -> list[str]:
    params = sum(p.numel() for p in adapter.model.parameters())
    lines = [
        f"## {key} ({type(adapter.model).__name__}, {params:,} parameters)",
        "",
        "| finding | acc | sens | spec (normal) | spec (other) | flip | keep | reasoning parse | reasoning acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.per_finding.values():
        lines.append(
            f"| {m.finding} | {pct(m.accuracy)} | {pct(m.sensitivity)} | {pct(m.specificity_normal)} | "
            f"{pct(m.specificity_other)} | {pct(m.flip_rate)} | {pct(m.retention)} | "
            f"{pct(m.reasoning_parse_rate)} | {pct(m.reasoning_accuracy)} |"
        )
    lines.append(
        f"| **overall** | **{pct(report.accuracy)}** | | | | | **{pct(report.retention)}** | "
        f"**{pct(report.reasoning_parse_rate)}** | **{pct(report.reasoning_accuracy)}** |"
    )
    lines += ["", "Generated reasoning answers (one positive per finding):", ""]
    lines += [f"- {finding}: \"{text}\"" for finding, text in report.samples.items()]
    return lines + [""] + grounding_section(report)


def grounding_section(report: EvaluationReport) -> list[str]:
    sources = ("evidence", "where", "prior")
    lines = [
        "Grounding (first stated box vs the exact box; the prior states no text):",
        "",
        "| finding | n | " + " | ".join(f"{s} parse | {s} IoU | {s} hit" for s in sources) + " |",
        "|---|---|" + "---|" * (3 * len(sources)),
    ]
    for finding, g in report.grounding.items():
        cells = [pct(v) for s in sources
                 for v in (getattr(g, s).parse_rate, getattr(g, s).mean_iou, getattr(g, s).hit_rate)]
        lines.append(f"| {finding} | {g.evidence.cases} | " + " | ".join(cells) + " |")
    pooled = [cell for s in sources for cell in ("", "", f"**{pct(report.grounding_hit_rate(s))}**")]
    lines.append("| " + " | ".join(["**large findings, pooled (hit)**", "", *pooled]) + " |")
    lines += ["", "Generated evidence answers (one per finding):", ""]
    lines += [f"- {finding}: `{g.evidence.sample}`" for finding, g in report.grounding.items()]
    return lines + [""]


def audit_section(audits: dict[str, LocalisationAudit]) -> list[str]:
    lines = [
        "## Causal filter and occlusion on the `phantom` benchmark",
        "",
        "| model | kept | " + " | ".join(FINDINGS) + " | occlusion peak in box |",
        "|---|---|" + "---|" * len(FINDINGS) + "---|",
    ]
    for key, audit in audits.items():
        hits, total = audit.peak_counts
        lines.append(
            f"| {key} | {100 * audit.retention:.0f}% | "
            + " | ".join(f"{100 * audit.kept[f]:.0f}%" for f in FINDINGS)
            + f" | {hits}/{total} ({100 * audit.peak_rate:.0f}%) |"
        )
    lines += ["", "Occlusion peak in box per finding (hits / retained):", ""]
    for key, audit in audits.items():
        lines.append(f"- {key}: " + ", ".join(f"{f} {h}/{n}" for f, (h, n) in audit.peak_hits.items()))
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/phantom-results.md")
    args = parser.parse_args()
    sections, audits = [HEADER], {}
    for key in KEYS:
        started = time.perf_counter()
        adapter = load_adapter(key)
        report = evaluate(adapter, per_finding=40, reasoning_per_finding=20, grounding_per_finding=60)
        audits[key] = filter_and_localise(adapter, key, n_per_finding=10)
        sections.append("\n".join(model_section(key, adapter, report)))
        print(f"{key}: measured in {time.perf_counter() - started:.0f} s", flush=True)
    sections.append("\n".join(audit_section(audits)))
    Path(args.out).write_text("\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
