"""The embedded phantom models on held-out seeds (SPEC 8.3; end to end, slow).

Every figure is measured through the public surface (adapter scoring and greedy
generation, ``causal_filter`` with the phantom's exact counterfactuals, ``attribute``
with occlusion) on seeds >= 10,000,000, which training never draws.
"""

from __future__ import annotations

import itertools

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


@pytest.fixture(scope="module", params=KEYS)
def embedded(request):
    return request.param, load_adapter(request.param)


@pytest.fixture(scope="module")
def report(embedded):
    key, adapter = embedded
    result = evaluate(adapter, per_finding=40, reasoning_per_finding=10)
    print(f"\n{key}\n{format_report(result)}")
    return result


def test_direct_accuracy_overall_and_per_finding(report):
    assert report.accuracy >= 0.90
    for finding, m in report.per_finding.items():
        assert m.accuracy >= 0.80, f"{finding}: accuracy {m.accuracy:.2f}"
        # A model answering "yes" to every question about this finding fails here.
        assert m.specificity_normal >= 0.70, f"{finding}: specificity on normals {m.specificity_normal:.2f}"
        assert m.specificity_other >= 0.70, f"{finding}: specificity on other findings {m.specificity_other:.2f}"
        assert m.sensitivity >= 0.70, f"{finding}: sensitivity {m.sensitivity:.2f}"


def test_reasoning_answers_parse_and_are_correct(report):
    assert report.reasoning_parse_rate >= 0.95
    assert report.reasoning_accuracy >= 0.85


@pytest.fixture(scope="module")
def filtered(embedded):
    key, adapter = embedded
    samples = list(PhantomBench(n_per_finding=10).samples(split="direct"))
    records = list(causal_filter(adapter, samples, PhantomCounterfactuals(), model=key, max_new_tokens=8))
    return samples, records


def test_causal_filter_keeps_most_positives_and_every_finding(filtered):
    samples, records = filtered
    assert len(records) == len(samples)
    kept = {f: [r.kept for r, s in zip(records, samples) if s.extra["finding_key"] == f] for f in FINDINGS}
    rates = {f: float(np.mean(v)) for f, v in kept.items()}
    print("\nretention per finding:", {f: round(r, 2) for f, r in rates.items()})
    assert np.mean([r.kept for r in records]) >= 0.60
    assert min(rates.values()) >= 0.30, rates
    assert not any(r.approximate for r in records), "phantom counterfactuals are exact"


def test_occlusion_peak_falls_in_the_ground_truth_on_most_retained_samples(embedded, filtered):
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
    assert rate > 0.5


def test_demo_runs_end_to_end(tmp_path):
    from cxr_attrib.demo import run_demo

    run = run_demo(tmp_path, model="phantom-qwen", method="occlusion", finding="pleural_effusion")
    assert run.overlay_path.is_file() and run.json_path.is_file() and run.image_path.is_file()
    assert run.result.answer.strip().lower().startswith("yes")
    assert run.pointing_game, "occlusion's peak lies on the effusion"
    assert run.iou > 0.1
