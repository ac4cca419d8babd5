"""Held-out grounding of phantom models: the box a model states against the exact box.

For held-out positives of each finding, a model is asked two questions with one greedy
generation each, and its text is read by :func:`~cxr_attrib.grounding.parse_boxes` in
the adapter's :class:`~cxr_attrib.grounding.BoxConvention`, then mapped to the working
frame:

* **evidence**: the ``prompting`` method's question,
  :func:`~cxr_attrib.grounding.evidence_prompt` ``(question, "Yes", convention)``;
* **where**: "Where is the {finding}? Answer with a bounding box."
  (:func:`~cxr_attrib_phantom.vqa.where_question`).

Only the **first** stated box is judged (IoU with the exact box ``case.boxes[0]``);
an answer with no valid box scores IoU 0. Beside them, a model-free **side prior**
states the coordinate-wise median exact box of the finding on the same side
(``case.details["side"]``; cardiomegaly has none) over training seeds: a constant box
that is already good for large findings in fixed places, so a model's figure only
means something next to it.

Seeds: grounding cases of finding ``k`` are ``start + 25_000 + 100_000 * k + i``
(disjoint from the direct and reasoning items of :mod:`~cxr_attrib_phantom.evaluation`);
the prior uses training seeds ``0 .. prior_cases - 1`` (training draws seeds below
1,000,000).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cxr_attrib.adapter import Adapter
from cxr_attrib.errors import DataError
from cxr_attrib.grounding import BoxConvention, evidence_prompt, parse_boxes
from cxr_attrib.scoring import region_metrics

from .findings import FINDINGS, make_case
from .vqa import VQAItem, make_vqa_item, where_question

__all__ = [
    "HIT_IOU",
    "LARGE_FINDINGS",
    "BoxAgreement",
    "GroundingMetrics",
    "evaluate_grounding",
    "grounding_items",
    "pooled_hit_rate",
    "side_prior",
]

LARGE_FINDINGS: tuple[str, ...] = ("pleural_effusion", "cardiomegaly", "mass", "pneumothorax")
"""The findings of the grounding target (>= 70% of their positives pooled at IoU >= 0.5)."""

HIT_IOU = 0.5
"""IoU at or above which a stated box counts as a hit."""

_FINDING_STRIDE = 100_000
_GROUNDING_OFFSET = 25_000

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxAgreement:
    """How one source of boxes (a question to the model, or the prior) matches the exact boxes.

    Attributes:
        ious (tuple[float, ...]): per case, IoU in [0, 1] of the first stated box with the
            exact box (0 when no valid box was stated).
        parsed (tuple[bool, ...]): per case, whether at least one valid box was stated.
        sample (str): the first case's answer text (model-written: escape before display).
    """

    ious: tuple[float, ...]
    parsed: tuple[bool, ...]
    sample: str = ""

    @property
    def cases(self) -> int:
        """Number of cases judged."""
        return len(self.ious)

    @property
    def parse_rate(self) -> float:
        """Share of cases with at least one valid box (NaN for no cases)."""
        return float(np.mean(self.parsed)) if self.parsed else float("nan")

    @property
    def mean_iou(self) -> float:
        """Mean IoU over all cases, unparsed ones counting 0 (NaN for no cases)."""
        return float(np.mean(self.ious)) if self.ious else float("nan")

    @property
    def hit_rate(self) -> float:
        """Share of cases with IoU >= :data:`HIT_IOU` (NaN for no cases)."""
        return float(np.mean([iou >= HIT_IOU for iou in self.ious])) if self.ious else float("nan")


@dataclass(frozen=True)
class GroundingMetrics:
    """Held-out grounding of one finding.

    Attributes:
        finding (str): the finding asked about.
        evidence (BoxAgreement): answers to the ``prompting`` method's question.
        where (BoxAgreement): answers to "Where is the {finding}? ...".
        prior (BoxAgreement): the model-free side prior on the same cases.
    """

    finding: str
    evidence: BoxAgreement
    where: BoxAgreement
    prior: BoxAgreement


def _iou(box: Sequence[float], other: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes (same frame, exclusive ends), in [0, 1]."""
    return float(region_metrics([list(box)], [list(other)]).iou)


def grounding_items(finding: str, n: int, start: int) -> list[VQAItem]:
    """The ``n`` held-out direct-mode positives of ``finding`` used for grounding.

    Args:
        finding (str): a name in :data:`~cxr_attrib_phantom.FINDINGS`.
        n (int): number of cases.
        start (int): first held-out seed (see the module docstring for the seeds).

    Returns:
        list[VQAItem]: positives, each with ``case.boxes`` (1, 4) in the working frame.
    """
    base = start + _GROUNDING_OFFSET + _FINDING_STRIDE * FINDINGS.index(finding)
    return [make_vqa_item(base + i, finding, True, "direct") for i in range(n)]


def side_prior(finding: str, seeds: Iterable[int]) -> dict[str, Box]:
    """The median exact box of ``finding`` per side over ``seeds`` (the model-free baseline).

    Args:
        finding (str): a name in :data:`~cxr_attrib_phantom.FINDINGS`.
        seeds (Iterable[int]): phantom seeds (training seeds, below 1,000,000).

    Returns:
        dict[str, Box]: side (``"left"``, ``"right"``, or ``""`` for findings without a
        side) -> coordinate-wise median ``(x1, y1, x2, y2)``, working-frame pixels.
    """
    by_side: dict[str, list[np.ndarray]] = {}
    for seed in seeds:
        case = make_case(seed, finding)
        by_side.setdefault(str(case.details.get("side", "")), []).append(case.boxes[0])
    return {side: tuple(float(v) for v in np.median(boxes, axis=0)) for side, boxes in by_side.items()}


def _stated(text: str, convention: BoxConvention, working_size: int, truth: Sequence[float]) -> tuple[float, bool]:
    boxes = convention.to_working(parse_boxes(text, convention).boxes, working_size)
    return (_iou(boxes[0], truth), True) if boxes else (0.0, False)


def _asked(adapter: Adapter, items: Sequence[VQAItem], prompts: Sequence[str], max_new_tokens: int) -> BoxAgreement:
    convention = adapter.box_convention
    ious, parsed, texts = [], [], []
    for item, prompt in zip(items, prompts, strict=True):
        text = adapter.generate(item.image, prompt, max_new_tokens=max_new_tokens).text
        iou, ok = _stated(text, convention, item.image.shape[0], item.case.boxes[0])
        ious.append(iou)
        parsed.append(ok)
        texts.append(text)
    return BoxAgreement(tuple(ious), tuple(parsed), texts[0] if texts else "")


def _prior(items: Sequence[VQAItem], prior: dict[str, Box]) -> BoxAgreement:
    ious, parsed = [], []
    for item in items:
        box = prior.get(str(item.case.details.get("side", "")))
        ious.append(_iou(box, item.case.boxes[0]) if box is not None else 0.0)
        parsed.append(box is not None)
    return BoxAgreement(tuple(ious), tuple(parsed))


def evaluate_grounding(
    adapter: Adapter,
    finding: str,
    *,
    n: int,
    start: int,
    prior_cases: int = 60,
    max_new_tokens: int = 64,
) -> GroundingMetrics:
    """Grounding of one finding: both questions to the model, and the side prior.

    Args:
        adapter (Adapter): the model; needs :attr:`~cxr_attrib.adapter.Adapter.box_convention`
            and :meth:`~cxr_attrib.adapter.Adapter.generate`.
        finding (str): a name in :data:`~cxr_attrib_phantom.FINDINGS`.
        n (int): held-out positives (>= 1).
        start (int): first held-out seed.
        prior_cases (int): training seeds ``0 .. prior_cases - 1`` the side prior is the
            median over (>= 1). Default: 60.
        max_new_tokens (int): generation budget of each answer. Default: 64.

    Returns:
        GroundingMetrics: evidence, where and prior agreement on the same ``n`` cases.

    Raises:
        DataError: ``n`` or ``prior_cases`` not a positive int, or an unknown finding.
    """
    for name, value in (("n", n), ("prior_cases", prior_cases)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"expected {name} as an int >= 1, got {value!r}; e.g. 20.")
    if finding not in FINDINGS:
        raise DataError(f"expected a finding from {FINDINGS}, got {finding!r}.")
    items = grounding_items(finding, n, start)
    convention = adapter.box_convention
    evidence = _asked(adapter, items, [evidence_prompt(i.question, "Yes", convention) for i in items], max_new_tokens)
    where = _asked(adapter, items, [where_question(finding)] * n, max_new_tokens)
    prior = _prior(items, side_prior(finding, range(prior_cases)))
    return GroundingMetrics(finding=finding, evidence=evidence, where=where, prior=prior)


def pooled_hit_rate(metrics: Iterable[GroundingMetrics], source: str, findings: Sequence[str] = LARGE_FINDINGS) -> float:
    """Share of IoU >= 0.5 over every case of ``findings`` pooled (the grounding target).

    Args:
        metrics (Iterable[GroundingMetrics]): per finding.
        source (str): ``"evidence"``, ``"where"`` or ``"prior"``.
        findings (Sequence[str]): the findings pooled. Default: :data:`LARGE_FINDINGS`.

    Returns:
        float: the pooled share in [0, 1]; NaN when none of ``findings`` was measured.
    """
    if source not in ("evidence", "where", "prior"):
        raise DataError(f"expected source 'evidence', 'where' or 'prior', got {source!r}.")
    ious = [iou for m in metrics if m.finding in findings for iou in getattr(m, source).ious]
    return float(np.mean([iou >= HIT_IOU for iou in ious])) if ious else float("nan")
