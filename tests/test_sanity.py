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
from cxr_attrib.testing import check_method, check_refusal, randomisation_curve, wired_adapter

MODEL_METHODS = sorted(name for name, cls in methods().items() if cls.uses_model)
# The map checks need a map: a method whose output is boxes and that returns no heatmap (prompting
# reads boxes from the model's text) is left out of them; its boxes are checked against scripted
# generations in tests/test_prompting.py. Conformance still runs every method.
# Methods that need a surface the LVLM families lack: refused before any pass (asserted below), and
# left out of the map checks here (their own family's checks: tests/test_contrastive_sanity.py).
LVLM_REFUSALS: dict[str, str] = {"similarity_map": "EmbeddingSurface"}
MAP_METHODS = [name for name in MODEL_METHODS if methods()[name].output != "boxes" and name not in LVLM_REFUSALS]
FAST_PARAMS: dict[str, dict] = {
    "occlusion": {"tiles": 4},
    "rise": {"n_masks": 48, "batch_size": 49},
    "integrated_gradients": {"steps": 8},
    "prompting": {"max_new_tokens": 16},
    "prompting_refined": {"max_new_tokens": 16},
}
# A Monte Carlo method needs enough samples to see an effect of ~0.4 nats on a tiny random model:
# RISE's per-tile error is about 1 / sqrt(n_masks * p) of the mean; hard tiles on the region's grid.
WIRED_PARAMS: dict[str, dict] = {"rise": {"n_masks": 500, "smooth": False, "cells": 4, "batch_size": 501}}
# Measured failures, documented in the method cards. RISE's randomisation curve costs ~10k forward
# sequences per model, so CI does not repeat it: `python benchmarks/model_randomisation.py --methods rise`
# measures it (0.548 on phantom-qwen with every layer random; phantom-gemma passes at 0.343).
MEASURED_RANDOMISATION_FAILURES: dict[str, str] = {
    "rise": "mean Spearman 0.548 on phantom-qwen with all 4 layers random, from mask noise (docs/methods/rise.md)",
}
# Measured in CI and documented in the method cards; strict, so a method that starts to pass
# turns the test red and its entry must go.
KNOWN_RANDOMISATION_FAILURES: dict[tuple[str, str], str] = {
    ("medfocus", "phantom-gemma"): "mean Spearman 0.571: the map's regions are the transferred anatomy, the same "
                                   "for any model (docs/methods/medfocus.md)",
}
# Methods whose map is not pixel evidence by construction; strict, so a change that makes one pass
# turns the test red and the entry must go.
KNOWN_WIRED_FAILURES: dict[tuple[str, str], str] = {
    ("qwen2_5_vl", "medfocus"): "a concept method: its regions are transferred anatomy, not the wired block "
                                "(its own test wires a concept-aligned region: tests/test_medfocus.py)",
    ("gemma3", "medfocus"): "a concept method: its regions are transferred anatomy, not the wired block",
    ("qwen2_5_vl", "attention_rollout"): "attention flow ignores what the values carry: zeroed tokens still "
                                         "receive rollout weight (docs/methods/attention_rollout.md)",
    ("gemma3", "attention"): "where the predictor rows look is not what the answer uses (docs/methods/attention.md)",
    ("gemma3", "grad_weighted_attention"): "the last layer's attention gradient misses the earlier use of the "
                                           "block (docs/methods/grad_weighted_attention.md)",
    ("qwen2_5_vl", "gradcam"): "hidden states at layer -2 mix text into every image token, and tokens outside "
                               "the block get gradient through attention (docs/methods/gradcam.md)",
    ("qwen2_5_vl", "gradcampp"): "as gradcam: hidden states, not pixels (docs/methods/gradcampp.md)",
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
    if method in LVLM_REFUSALS:
        check_refusal(method, adapter, LVLM_REFUSALS[method])
        return
    check_method(method, adapter, params=fast(method))


@pytest.fixture(scope="module")
def wired_models():
    """Family -> the wired tiny adapter (built once per module)."""
    built: dict[str, object] = {}

    def get(family: str):
        if family not in built:
            built[family] = wired_adapter(family, REGION)
        return built[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_the_wired_models_answer_depends_on_the_region(family, wired_models):
    wired = wired_models(family)
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


def wired_cases() -> list:
    return [
        pytest.param(family, method, id=f"{family}-{method}",
                     marks=[pytest.mark.xfail(reason=KNOWN_WIRED_FAILURES[family, method], strict=True)]
                     if (family, method) in KNOWN_WIRED_FAILURES else [])
        for family in FAMILIES for method in MAP_METHODS
    ]


@pytest.mark.parametrize("family, method", wired_cases())
def test_map_departs_most_on_the_region_the_wired_model_uses(family, method, wired_models):
    wired = wired_models(family)
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
        for method in MAP_METHODS:
            if method in MEASURED_RANDOMISATION_FAILURES:
                continue  # measured by the benchmark script, too costly to repeat in CI (see above)
            known = KNOWN_RANDOMISATION_FAILURES.get((method, model))
            marks = [pytest.mark.xfail(reason=known, strict=True)] if known else []
            cases.append(pytest.param(method, model, marks=marks, id=f"{model}-{method}"))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("method, model", randomisation_cases())
def test_fully_randomised_language_model_decorrelates_the_map(method, model):
    adapter = load_adapter(model)
    before = [p.detach().clone() for p in adapter.model.parameters()]
    depth = len(adapter.decoder_layers())
    params = fast(method)
    curve = randomisation_curve(adapter, method, held_out_positives(), params=params, depths=[depth])
    assert curve[depth] < 0.5, f"{method} on {model}: mean Spearman {curve[depth]:.3f} with all layers random"
    assert all(a.equal(b) for a, b in zip(before, adapter.model.parameters())), "the shared adapter was modified"
