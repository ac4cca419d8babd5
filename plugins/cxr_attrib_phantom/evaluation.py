"""Held-out evaluation of phantom models through the adapter contract (see docs/phantom.md).

Everything goes through :meth:`~cxr_attrib.adapter.Adapter.score` and
:meth:`~cxr_attrib.adapter.Adapter.generate`, so any adapter (the embedded phantom
models, a tiny test model, a real checkpoint) can be measured the same way.

* **Direct mode.** For every finding, ``n`` positives and ``n`` negatives (``n / 2``
  normal phantoms, ``n / 2`` phantoms showing a different finding) are asked the
  direct prompt. The verdict is ``yes`` when the teacher-forced log-probability of
  the response ``"Yes"`` exceeds that of ``"No"`` (the answer-span target, see
  docs/user-guide.md). Reported per finding: accuracy (over the ``2 n`` items), sensitivity,
  specificity on normal phantoms and specificity on other-finding phantoms.
* **Reasoning mode.** For every finding, ``r`` positives and ``r`` negatives (half
  normal, half other) are answered greedily with the reasoning prompt; the generated
  text is read by :func:`~cxr_attrib.targets.parse_yes_no`. Reported: the fraction
  that parses and the fraction answered correctly.
* **Grounding** (optional, :mod:`~cxr_attrib_phantom.grounding_eval`): on ``g`` held-out
  positives per finding, the first box the model states when asked the ``prompting``
  method's question and "Where is the {finding}? ...", against the exact box (IoU,
  share >= 0.5, parse rate), beside a model-free side prior on the same cases.
* **Causal filter** (see docs/benchmark-protocol.md) with the phantom's exact counterfactuals: a positive
  is kept when the direct verdict is yes on the image, no on ``removed`` and yes on
  both ``kept`` and ``kept_normal``. Retention = kept / positives.

Seeds: held-out phantoms use seeds from :data:`HELD_OUT_SEED_START` (10,000,000) on;
training draws seeds below :data:`~train_phantom.TRAIN_SEED_LIMIT`
(1,000,000). Direct items of finding ``k`` use seeds
``start + 100_000 * k + i``; reasoning items ``start + 50_000 + 100_000 * k + i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.errors import DataError
from cxr_attrib.targets import build_prompt, finding_question, parse_yes_no
from cxr_attrib.typing import WorkingImage
from .findings import DISPLAY_NAMES, FINDINGS
from .grounding_eval import LARGE_FINDINGS, GroundingMetrics, evaluate_grounding, pooled_hit_rate
from .vqa import make_vqa_item

__all__ = [
    "HELD_OUT_SEED_START",
    "EvaluationReport",
    "FindingMetrics",
    "direct_verdicts",
    "evaluate",
    "format_report",
]

HELD_OUT_SEED_START = 10_000_000
"""First held-out phantom seed (training seeds are below 1,000,000)."""

_FINDING_STRIDE = 100_000
_REASONING_OFFSET = 50_000


@dataclass(frozen=True)
class FindingMetrics:
    """Held-out metrics of one finding (fractions in [0, 1]).

    Attributes:
        finding (str): the finding asked about.
        accuracy (float): direct-mode accuracy over positives and negatives.
        sensitivity (float): direct "yes" rate on positives.
        specificity_normal (float): direct "no" rate on normal phantoms.
        specificity_other (float): direct "no" rate on phantoms with another finding.
        flip_rate (float): fraction of positives whose verdict is yes on the image and
            no on the exact ``removed`` counterfactual.
        retention (float): fraction of positives the causal filter keeps.
        reasoning_parse_rate (float): reasoning answers with a yes/no verdict.
        reasoning_accuracy (float): reasoning answers with the right verdict.
        positives (int): direct positives (and filter candidates).
        negatives (int): direct negatives.
        reasoning_items (int): reasoning items.
    """

    finding: str
    accuracy: float
    sensitivity: float
    specificity_normal: float
    specificity_other: float
    flip_rate: float
    retention: float
    reasoning_parse_rate: float
    reasoning_accuracy: float
    positives: int
    negatives: int
    reasoning_items: int


@dataclass(frozen=True)
class EvaluationReport:
    """Held-out metrics of one model.

    Attributes:
        per_finding (dict[str, FindingMetrics]): metrics by finding.
        accuracy (float): direct-mode accuracy over every item.
        reasoning_parse_rate (float): over every reasoning item.
        reasoning_accuracy (float): over every reasoning item.
        retention (float): causal-filter retention over every positive.
        samples (dict[str, str]): one generated reasoning answer per finding (positive).
        grounding (dict[str, GroundingMetrics]): grounding by finding; empty when not
            measured (``grounding_per_finding=0``).
    """

    per_finding: dict[str, FindingMetrics]
    accuracy: float
    reasoning_parse_rate: float
    reasoning_accuracy: float
    retention: float
    samples: dict[str, str]
    grounding: dict[str, GroundingMetrics] = field(default_factory=dict)

    def grounding_hit_rate(self, source: str = "evidence") -> float:
        """Share of IoU >= 0.5 over the large findings' grounding cases pooled (NaN if unmeasured).

        Args:
            source (str): ``"evidence"`` (the ``prompting`` question), ``"where"`` or
                ``"prior"``. Default: ``"evidence"``.
        """
        return pooled_hit_rate(self.grounding.values(), source, LARGE_FINDINGS)


def direct_verdicts(
    adapter: Adapter, images: Sequence[WorkingImage], finding: str, *, batch_size: int = 32
) -> np.ndarray:
    """Direct-mode yes/no verdicts of one finding question on many images.

    Args:
        adapter (Adapter): the model.
        images (Sequence[WorkingImage]): B images (S, S) float32 in [0, 1].
        finding (str): a name in :data:`~cxr_attrib_phantom.FINDINGS`.
        batch_size (int): images per forward call. Default: 32.

    Returns:
        np.ndarray: (B,) bool, True where log p("Yes") > log p("No").
    """
    question = finding_question(DISPLAY_NAMES[finding])
    prompt = build_prompt(question, "direct")
    yes = adapter.score(images, Query(question, "direct", prompt, "Yes"), batch_size=batch_size).sum(-1)
    no = adapter.score(images, Query(question, "direct", prompt, "No"), batch_size=batch_size).sum(-1)
    return (yes > no).numpy()


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
        raise DataError(f"expected {what} as an even int >= 2, got {value!r}; e.g. 40.")
    return value


def _direct(adapter: Adapter, finding: str, n: int, start: int, batch_size: int) -> dict[str, float]:
    base = start + _FINDING_STRIDE * FINDINGS.index(finding)
    positives = [make_vqa_item(base + i, finding, True, "direct") for i in range(n)]
    normals = [make_vqa_item(base + i, finding, False, "direct", negative="normal") for i in range(n // 2)]
    others = [make_vqa_item(base + i, finding, False, "direct", negative="other") for i in range(n // 2, n)]
    images = [item.image for item in positives + normals + others]
    images += [image for item in positives for image in (item.case.removed, item.case.kept, item.case.kept_normal)]
    verdicts = direct_verdicts(adapter, images, finding, batch_size=batch_size)
    pos, normal, other = verdicts[:n], verdicts[n : n + n // 2], verdicts[n + n // 2 : 2 * n]
    removed, kept, kept_normal = (verdicts[2 * n + j :: 3] for j in range(3))
    flips = pos & ~removed
    return {
        "accuracy": float((pos.sum() + (~normal).sum() + (~other).sum()) / (2 * n)),
        "sensitivity": float(pos.mean()),
        "specificity_normal": float((~normal).mean()),
        "specificity_other": float((~other).mean()),
        "flip_rate": float(flips.mean()),
        "retention": float((flips & kept & kept_normal).mean()),
    }


def _reasoning(adapter: Adapter, finding: str, r: int, start: int, max_new_tokens: int) -> tuple[int, int, str]:
    base = start + _REASONING_OFFSET + _FINDING_STRIDE * FINDINGS.index(finding)
    items = [make_vqa_item(base + i, finding, True, "reasoning") for i in range(r)]
    items += [make_vqa_item(base + i, finding, False, "reasoning", negative="normal") for i in range(r // 2)]
    items += [make_vqa_item(base + i, finding, False, "reasoning", negative="other") for i in range(r // 2, r)]
    parsed = correct = 0
    sample = ""
    for item in items:
        text = adapter.generate(item.image, item.prompt, max_new_tokens=max_new_tokens).text
        sample = sample or text
        verdict = parse_yes_no(text, mode="reasoning")
        parsed += verdict != "unparseable"
        correct += verdict == ("yes" if item.present else "no")
    return parsed, correct, sample


def evaluate(
    adapter: Adapter,
    *,
    per_finding: int = 40,
    reasoning_per_finding: int = 10,
    findings: Sequence[str] = FINDINGS,
    seed_start: int = HELD_OUT_SEED_START,
    batch_size: int = 32,
    max_new_tokens: int = 160,
    grounding_per_finding: int = 0,
    prior_cases: int = 60,
) -> EvaluationReport:
    """Held-out direct, reasoning and causal-filter metrics of a phantom model.

    Args:
        adapter (Adapter): the model (any adapter).
        per_finding (int): direct positives per finding, also the number of negatives
            (half normal, half other); even. Default: 40.
        reasoning_per_finding (int): reasoning positives per finding, also the number
            of negatives; even; 0 skips reasoning (its rates are then NaN). Default: 10.
        findings (Sequence[str]): findings to evaluate. Default: all of :data:`FINDINGS`.
        seed_start (int): first held-out seed. Default: :data:`HELD_OUT_SEED_START`.
        batch_size (int): images per scoring call. Default: 32.
        max_new_tokens (int): generation budget of reasoning answers. Default: 160.
        grounding_per_finding (int): held-out positives per finding asked for boxes
            (see :mod:`~cxr_attrib_phantom.grounding_eval`); 0 skips grounding. Default: 0.
        prior_cases (int): training seeds of the side prior (with grounding). Default: 60.

    Returns:
        EvaluationReport: metrics per finding and overall.

    Raises:
        DataError: odd or too small counts, unknown finding, a negative
            ``grounding_per_finding``.
    """
    n = _check_count(per_finding, "per_finding")
    if isinstance(grounding_per_finding, bool) or not isinstance(grounding_per_finding, int) \
            or grounding_per_finding < 0:
        raise DataError(f"expected grounding_per_finding as an int >= 0, got {grounding_per_finding!r}; e.g. 20.")
    r = 0 if reasoning_per_finding == 0 else _check_count(reasoning_per_finding, "reasoning_per_finding")
    unknown = [f for f in findings if f not in FINDINGS]
    if unknown or not findings:
        raise DataError(f"expected findings from {FINDINGS}, got {list(findings)!r}.")
    per: dict[str, FindingMetrics] = {}
    samples: dict[str, str] = {}
    grounding: dict[str, GroundingMetrics] = {}
    for finding in findings:
        if grounding_per_finding:
            grounding[finding] = evaluate_grounding(adapter, finding, n=grounding_per_finding, start=seed_start,
                                                    prior_cases=prior_cases)
        direct = _direct(adapter, finding, n, seed_start, batch_size)
        parsed, correct, sample = _reasoning(adapter, finding, r, seed_start, max_new_tokens) if r else (0, 0, "")
        samples[finding] = sample
        per[finding] = FindingMetrics(
            finding=finding, **direct,
            reasoning_parse_rate=parsed / (2 * r) if r else float("nan"),
            reasoning_accuracy=correct / (2 * r) if r else float("nan"),
            positives=n, negatives=n, reasoning_items=2 * r,
        )
    metrics = list(per.values())
    return EvaluationReport(
        per_finding=per,
        accuracy=float(np.mean([m.accuracy for m in metrics])),
        reasoning_parse_rate=float(np.mean([m.reasoning_parse_rate for m in metrics])),
        reasoning_accuracy=float(np.mean([m.reasoning_accuracy for m in metrics])),
        retention=float(np.mean([m.retention for m in metrics])),
        samples=samples,
        grounding=grounding,
    )


def format_report(report: EvaluationReport) -> str:
    """A plain-text table of a report (percentages), one row per finding plus overall."""
    head = f"{'finding':18s} {'acc':>6s} {'sens':>6s} {'spec_n':>6s} {'spec_o':>6s} {'flip':>6s} " \
           f"{'keep':>6s} {'r_parse':>7s} {'r_acc':>6s}"
    rows = [head]
    for m in report.per_finding.values():
        rows.append(
            f"{m.finding:18s} {100 * m.accuracy:6.1f} {100 * m.sensitivity:6.1f} {100 * m.specificity_normal:6.1f} "
            f"{100 * m.specificity_other:6.1f} {100 * m.flip_rate:6.1f} {100 * m.retention:6.1f} "
            f"{100 * m.reasoning_parse_rate:7.1f} {100 * m.reasoning_accuracy:6.1f}"
        )
    rows.append(
        f"{'overall':18s} {100 * report.accuracy:6.1f} {'':6s} {'':6s} {'':6s} {'':6s} {100 * report.retention:6.1f} "
        f"{100 * report.reasoning_parse_rate:7.1f} {100 * report.reasoning_accuracy:6.1f}"
    )
    rows += [f"sample {finding}: {text!r}" for finding, text in report.samples.items()]
    if report.grounding:
        rows += _grounding_rows(report)
    return "\n".join(rows)


def _grounding_rows(report: EvaluationReport) -> list[str]:
    """Grounding table: per source, parse rate, mean IoU and share IoU >= 0.5 (percent)."""
    sources = ("evidence", "where", "prior")
    labels = {"evidence": "evid", "where": "where", "prior": "prior"}
    head = f"{'grounding':18s} {'n':>4s} " + " ".join(f"{labels[s] + '_' + c:>11s}" for s in sources
                                                  for c in ("parse", "iou", "hit"))
    rows = ["", head]
    for finding, g in report.grounding.items():
        cells = [f"{100 * v:11.1f}" for s in sources for v in (getattr(g, s).parse_rate, getattr(g, s).mean_iou,
                                                               getattr(g, s).hit_rate)]
        rows.append(f"{finding:18s} {g.evidence.cases:4d} " + " ".join(cells))
    rows.append(f"{'large, pooled hit':18s} {'':4s} " + " ".join(
        f"{'':11s} {'':11s} {100 * report.grounding_hit_rate(s):11.1f}" for s in sources))
    rows += [f"grounding sample {finding}: {g.evidence.sample!r}" for finding, g in report.grounding.items()]
    return rows
