"""The embedded phantom models on held-out seeds (see docs/phantom.md; end to end, slow).

Every figure is measured through the public surface (adapter scoring and greedy
generation, ``causal_filter`` with the phantom's exact counterfactuals, ``attribute``
with occlusion) on seeds >= 10,000,000, which training never draws.

The thresholds are the embedded models' targets (docs/phantom.md): direct accuracy >= 90% overall
and >= 80% for every finding, specificity on normal phantoms (an always-"yes" model
fails), reasoning answers that parse (>= 95%) and are right (>= 85%), causal-filter
retention >= 60% overall and >= 30% for every finding, and occlusion's peak inside the
true box on most retained samples. Full-size figures (20 reasoning items per finding and
answer): ``python benchmarks/phantom_results.py`` -> docs/phantom-results.md.
"""

from __future__ import annotations

import pytest

from cxr_attrib.models import load_adapter
from cxr_attrib_phantom import FINDINGS
from cxr_attrib_phantom.audit import filter_and_localise
from cxr_attrib_phantom.evaluation import evaluate, format_report

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


def test_direct_accuracy_and_specificity(report):
    assert report.accuracy >= 0.90
    for finding, m in report.per_finding.items():
        assert m.accuracy >= 0.80, f"{finding}: accuracy {m.accuracy:.2f}"
        assert m.specificity_normal >= 0.85, f"{finding}: specificity on normals {m.specificity_normal:.2f}"
        assert m.sensitivity >= 0.75, f"{finding}: sensitivity {m.sensitivity:.2f}"
        assert m.flip_rate >= 0.75, f"{finding}: flips on its exact counterfactual {m.flip_rate:.2f}"


def test_reasoning_answers_parse_and_are_mostly_correct(report):
    assert report.reasoning_parse_rate >= 0.95
    assert report.reasoning_accuracy >= 0.85


@pytest.fixture(scope="module")
def audit(embedded):
    key, adapter = embedded
    result = filter_and_localise(adapter, key, n_per_finding=10, method="occlusion")
    print(f"\n{key}: filter keeps {result.retention:.0%}; per finding",
          {f: round(rate, 2) for f, rate in result.kept.items()},
          f"; occlusion peak in box {result.peak_rate:.0%}", result.peak_hits)
    return result


def test_causal_filter_retention(audit):
    assert len(audit.records) == 60 and set(audit.kept) == set(FINDINGS)
    assert not any(r.approximate for r in audit.records), "phantom counterfactuals are exact"
    assert audit.retention >= 0.60
    assert all(rate >= 0.30 for rate in audit.kept.values()), audit.kept


def test_occlusion_peak_in_ground_truth_on_retained_samples(audit):
    assert audit.peak_rate > 0.5, audit.peak_hits


def test_demo_runs_end_to_end(tmp_path):
    from cxr_attrib_phantom.demo import run_demo

    run = run_demo(tmp_path)
    assert run.overlay_path.is_file() and run.json_path.is_file() and run.image_path.is_file()
    assert run.result.answer.strip() == "Yes"
    assert run.pointing_game == 1.0, "occlusion's peak tile lies on the effusion"
    assert 0.1 < run.iou <= 1.0
