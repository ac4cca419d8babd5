"""Sanity checks every registered method that uses the model must pass.

Methods are discovered from the registry, so a method registered later (by a built-in
or a third-party plugin) joins every check here. ``FAST_PARAMS`` keeps each method
quick on the CPU (``WIRED_PARAMS`` overrides them where a check needs more); a method
not listed runs with its defaults.

* conformance (``cxr_attrib.testing.check_method``) on both tiny families;
* on a wired tiny model whose answer depends on one 2 x 2 block of token cells only, the
  map departs most from its typical value (its median) inside that block;
* model randomisation (Adebayo et al., NeurIPS 2018): with every language-model decoder
  layer of an embedded phantom model re-initialised, the map's Spearman rank
  correlation with the trained model's map, averaged over 10 held-out positives, is
  below 0.5 (slow).
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from cxr_attrib import attribute
from cxr_attrib.adapter import Query
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import get_benchmark, methods
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import check_method, randomisation_curve, wired_adapter

MODEL_METHODS = sorted(name for name, cls in methods().items() if cls.uses_model)
FAST_PARAMS: dict[str, dict] = {
    "occlusion": {"tiles": 4},
    "rise": {"n_masks": 48, "batch_size": 49},
    "integrated_gradients": {"steps": 8},
}
# A Monte Carlo method needs enough samples to see an effect of ~0.4 nats on a tiny random model:
# RISE's per-tile error is about 1 / sqrt(n_masks * p) of the mean; hard tiles on the region's grid.
WIRED_PARAMS: dict[str, dict] = {"rise": {"n_masks": 500, "smooth": False, "cells": 4, "batch_size": 501}}
# RISE at its default 500 masks, as in its method card (both maps share the seed, hence the masks).
RANDOMISATION_PARAMS: dict[str, dict] = {"rise": {"n_masks": 500, "batch_size": 64}}
# Measured failures, documented in the method cards; strict where the value is clearly above the bound,
# so a change that fixes the method turns the test red and the entry must go.
KNOWN_RANDOMISATION_FAILURES: dict[tuple[str, str], tuple[str, bool]] = {
    ("rise", "phantom-qwen"): ("mean Spearman 0.668 with all 4 layers random (docs/methods/rise.md)", True),
    ("rise", "phantom-gemma"): ("mean Spearman 0.500, at the bound (docs/methods/rise.md)", False),
}
FAMILIES = ("qwen2_5_vl", "gemma3")
Q = "Is there evidence of nodule in the image?"
# Two by two token cells (56 px at 224): also one whole tile of a 4 x 4 grid.
REGION = (112.0, 56.0, 168.0, 112.0)
# The tiny random models read image tokens weakly: a single "Yes" moves by ~0.1 nats when the region
# is hidden, a 54-token response with 7-px stripes in the region by 0.4-1 nats (checked below).
WIRED_ANSWER = (
    "A round opacity is seen in the right upper lobe. The cardiac silhouette is enlarged. The left lung "
    "base is blunted. There is no evidence of pneumothorax. Step 1: look at the lungs. Step 2: look at the "
    "heart and mediastinum. Answer: yes."
)


def fast(method: str, overrides: dict[str, dict] | None = None) -> dict:
    """The method's quick test parameters ({} = its defaults), updated from a per-check table."""
    return {**FAST_PARAMS.get(method, {}), **(overrides or {}).get(method, {})}


def wired_image() -> np.ndarray:
    """(224, 224) uint8: grey noise, with horizontal 7-px stripes inside the region."""
    image = np.random.default_rng(5).integers(60, 255, size=(224, 224), dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in REGION)
    image[y1:y2, x1:x2] = (np.arange(y2 - y1)[:, None] // 7 % 2) * 255
    return image


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_method_conforms_on_both_tiny_families(method, family, request):
    adapter = request.getfixturevalue("tiny_qwen_adapter" if family == "qwen2_5_vl" else "tiny_gemma_adapter")
    check_method(method, adapter, params=fast(method))


@pytest.fixture(scope="module", params=FAMILIES)
def wired(request):
    return wired_adapter(request.param, REGION)


def test_the_wired_models_answer_depends_on_the_region(wired):
    """The precondition of the next test: hiding the region moves the explained log-prob by > 0.3 nats."""
    image = wired_image().astype(np.float32) / 255.0
    hidden = image.copy()
    x1, y1, x2, y2 = (int(v) for v in REGION)
    hidden[y1:y2, x1:x2] = 0.0
    scrambled = image.copy()
    scrambled[:y1] = np.random.default_rng(9).random((y1, 224))
    query = Query(Q, "reasoning", build_prompt(Q, "reasoning"), WIRED_ANSWER, "response")
    totals = wired.score([image, hidden, scrambled], query).sum(-1)
    assert abs(float(totals[1] - totals[0])) > 0.3
    assert float(totals[2]) == pytest.approx(float(totals[0]), abs=1e-4)  # outside the region: no effect


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_map_departs_most_on_the_region_the_wired_model_uses(method, wired):
    params = fast(method, WIRED_PARAMS)
    heat = attribute(wired, wired_image(), Q, method=method, mode="reasoning", target="response",
                     answer=WIRED_ANSWER, **params).heatmap
    departure = np.abs(heat - np.median(heat))
    rows, cols = np.nonzero(departure == departure.max())
    x1, y1, x2, y2 = (int(v) for v in REGION)
    assert departure.max() > 0, f"{method}: flat map on a model that uses the region"
    assert np.all((x1 <= cols) & (cols < x2) & (y1 <= rows) & (rows < y2)), (
        f"{method}: peak at rows {sorted(set(rows))[:4]}, cols {sorted(set(cols))[:4]}; region {REGION}"
    )


def held_out_positives(count: int = 10) -> list[tuple[np.ndarray, str]]:
    """The first ``count`` held-out positives of the ``phantom`` benchmark (findings interleaved)."""
    samples = islice(get_benchmark("phantom").samples(split="direct"), count)
    return [(sample.load_image(), sample.question) for sample in samples]


def randomisation_cases() -> list:
    cases = []
    for model in ("phantom-qwen", "phantom-gemma"):
        for method in MODEL_METHODS:
            known = KNOWN_RANDOMISATION_FAILURES.get((method, model))
            marks = [pytest.mark.xfail(reason=known[0], strict=known[1])] if known else []
            cases.append(pytest.param(method, model, marks=marks, id=f"{model}-{method}"))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("method, model", randomisation_cases())
def test_fully_randomised_language_model_decorrelates_the_map(method, model):
    adapter = load_adapter(model)
    before = [p.detach().clone() for p in adapter.model.parameters()]
    depth = len(adapter.decoder_layers())
    params = fast(method, RANDOMISATION_PARAMS)
    curve = randomisation_curve(adapter, method, held_out_positives(), params=params, depths=[depth])
    assert curve[depth] < 0.5, f"{method} on {model}: mean Spearman {curve[depth]:.3f} with all layers random"
    assert all(a.equal(b) for a, b in zip(before, adapter.model.parameters())), "the shared adapter was modified"
