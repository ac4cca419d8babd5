"""The embedded phantom models on held-out seeds (SPEC 8.3; end to end, slow).

Every figure is measured through the public surface (adapter scoring and greedy
generation, ``causal_filter`` with the phantom's exact counterfactuals, ``attribute``
with occlusion) on seeds >= 10,000,000, which training never draws.

The shipped models do NOT yet reach every target of the phantom-suite issue (90%
overall direct accuracy, 80% per finding, 85% reasoning accuracy, 30% filter retention
for every finding): see docs/phantom-results.md. These tests pin what they do reach,
so a retrained model can only replace them if it is at least as good.
"""

from __future__ import annotations

import numpy as np
import pytest

from cxr_attrib import attribute
from cxr_attrib.filtering import causal_filter
from cxr_attrib.models import load_adapter
from cxr_attrib.phantom import FINDINGS
from cxr_attrib.phantom.benchmark import PhantomBench, PhantomCounterfactuals
from cxr_attrib.phantom.evaluation import evaluate, format_report

pytestmark = pytest.mark.slow

KEYS = ("phantom-qwen", "phantom-gemma")
LEARNT = ("pleural_effusion", "cardiomegaly")


@pytest.fixture(scope="module", params=KEYS)
def embedded(request):
    return request.param, load_adapter(request.param)


@pytest.fixture(scope="module")
def report(embedded):
    key, adapter = embedded
    result = evaluate(adapter, per_finding=40, reasoning_per_finding=20)
    print(f"\n{key}\n{format_report(result)}")
    return result


def test_direct_accuracy_and_specificity(report):
    assert report.accuracy >= 0.78
    for finding in LEARNT:
        assert report.per_finding[finding].accuracy >= 0.88, finding
    for finding, m in report.per_finding.items():
        if finding != "pneumothorax":  # known failure: answered "yes" on most normals
            assert m.specificity_normal >= 0.85, f"{finding}: specificity on normals {m.specificity_normal:.2f}"
        assert m.sensitivity >= 0.55, f"{finding}: sensitivity {m.sensitivity:.2f}"


def test_reasoning_answers_parse_and_are_mostly_correct(report):
    assert report.reasoning_parse_rate >= 0.95
    assert report.reasoning_accuracy >= 0.70


@pytest.fixture(scope="module")
def filtered(embedded):
    key, adapter = embedded
    samples = list(PhantomBench(n_per_finding=10).samples(split="direct"))
    records = list(causal_filter(adapter, samples, PhantomCounterfactuals(), model=key, max_new_tokens=8))
    return samples, records


def test_causal_filter_retention(embedded, filtered):
    samples, records = filtered
    assert len(records) == len(samples)
    assert not any(r.approximate for r in records), "phantom counterfactuals are exact"
    kept = {f: [r.kept for r, s in zip(records, samples) if s.extra["finding_key"] == f] for f in FINDINGS}
    rates = {f: float(np.mean(v)) for f, v in kept.items()}
    overall = float(np.mean([r.kept for r in records]))
    print(f"\n{embedded[0]}: filter keeps {overall:.0%}; per finding", {f: round(r, 2) for f, r in rates.items()})
    assert overall >= 0.55
    assert all(rates[f] >= 0.8 for f in LEARNT), rates


def test_occlusion_peak_in_ground_truth_on_retained_samples(embedded, filtered):
    key, adapter = embedded
    samples, records = filtered
    retained = [s for s, r in zip(samples, records) if r.kept]
    hits = []
    for sample in retained:
        result = attribute(adapter, sample.load_image(), sample.question, method="occlusion", answer="Yes")
        x, y = result.peak
        hits.append(any(x1 <= x < x2 and y1 <= y < y2 for x1, y1, x2, y2 in sample.boxes))
    rate = float(np.mean(hits))
    print(f"\n{key}: occlusion peak inside the box on {sum(hits)}/{len(hits)} retained samples ({rate:.0%})")
    assert rate >= 0.25


def test_demo_runs_end_to_end(tmp_path):
    from cxr_attrib.demo import run_demo

    run = run_demo(tmp_path)
    assert run.overlay_path.is_file() and run.json_path.is_file() and run.image_path.is_file()
    assert run.result.answer.strip() == "Yes"
    assert run.pointing_game, "occlusion's peak lies on the effusion"
    assert 0.1 < run.iou <= 1.0
