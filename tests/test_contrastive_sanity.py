"""Every registered model method on the contrastive family: conformance or a capability refusal,
the wired-peak check on a wired tiny dual encoder, and model randomisation on phantom-clip (slow).

Methods are discovered from the registry, so a method registered later joins every check.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import Query
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import get_benchmark, methods
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import check_method, check_refusal, randomisation_curve
from cxr_attrib.testing.tiny_models import load_tiny_adapter
from cxr_attrib_adapters.contrastive.tiny import save_tiny_dual_encoder
from tiny_biomedclip import save_tiny_biomedclip

MODEL_METHODS = sorted(name for name, cls in methods().items() if cls.uses_model)
MAP_METHODS = [name for name in MODEL_METHODS if methods()[name].output != "boxes"]

# Refused before any pass, with the reason a user reads.
REFUSED: dict[str, str] = {
    "lrp": "no relevance propagation",
    "prompting": "GroundingSurface",
    "prompting_refined": "GroundingSurface",
}
FAST_PARAMS: dict[str, dict] = {
    "occlusion": {"tiles": 4},
    "rise": {"n_masks": 48, "batch_size": 49},
    "integrated_gradients": {"steps": 8},
}
# Tiles and RISE cells on the 32 px patch grid; RISE needs ~1,000 masks to see a 0.4-nat effect on a tiny model.
WIRED_PARAMS: dict[str, dict] = {"occlusion": {"tiles": 7},
                                 "rise": {"n_masks": 1000, "smooth": False, "cells": 7, "batch_size": 501}}
# Measured on the wired model below; strict, so a method that starts to pass turns the test red.
KNOWN_WIRED_FAILURES: dict[str, str] = {
    "attention": "the wiring zeroes every attention output: where the CLS row looks carries nothing",
    "attention_rollout": "attention flow ignores what the values carry (the wired values are zero)",
    "grad_weighted_attention": "with the attention outputs zeroed, the attention weights have no gradient",
    "gradcam": "the channel weights are pooled over every patch, so patches outside the region whose "
               "activations resemble the region's light up too (docs/methods/gradcam.md)",
    "gradcampp": "as gradcam: pooled channel weights on activations, not pixels",
    "medfocus": "a concept method: its regions are transferred anatomy, not the wired block",
    "similarity_map": "the wiring routes the CLS token, not the patch embeddings (its own wired test: "
                      "tests/test_similarity_map.py)",
}
KNOWN_RANDOMISATION_FAILURES: dict[str, str] = {}

QUESTION = "Is there evidence of nodule in the image?"
# Patches of 32 px (7 x 7 grid at 224): a 2 x 2 block of patches.
REGION = (96, 32, 160, 96)


def fast(method: str, overrides: dict[str, dict] | None = None) -> dict:
    return {**FAST_PARAMS.get(method, {}), **(overrides or {}).get(method, {})}


@pytest.fixture(scope="module")
def tiny_dual(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual-sanity")
    adapters = {family: load_tiny_adapter(save_tiny_dual_encoder(family, root / family)) for family in ("clip", "siglip")}
    adapters["biomedclip"] = load_tiny_adapter(save_tiny_biomedclip(root / "biomedclip"))
    return adapters


@pytest.mark.parametrize("method", MODEL_METHODS)
@pytest.mark.parametrize("family", ["clip", "siglip", "biomedclip"])
def test_method_conforms_or_is_refused_before_any_pass(family, method, tiny_dual):
    adapter = tiny_dual[family]
    if method in REFUSED:
        check_refusal(method, adapter, REFUSED[method])
        return
    check_method(method, adapter, params=fast(method))


def wired_clip(tmp_path, region: tuple[int, int, int, int] = REGION) -> object:
    """A tiny CLIP whose image embedding depends only on the patches of ``region``.

    Every vision attention output projection is zeroed (a patch token then depends on its
    own pixels only), and a hook on the last vision block replaces the CLS token by 4 x the
    mean of the region's patch tokens.
    """
    adapter = load_tiny_adapter(save_tiny_dual_encoder("clip", tmp_path / "wired", seed=2))
    with torch.no_grad():
        for layer in adapter.vision_layers():
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    grid = adapter.geometry.patch_grid[0]
    cell = 224 // grid
    mask = torch.zeros(grid, grid)
    x1, y1, x2, y2 = region
    mask[y1 // cell : y2 // cell, x1 // cell : x2 // cell] = 1.0
    weights = (mask.flatten() / mask.sum())[None, :, None]

    def route(module, args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        cls = 4.0 * (tensor[:, 1:] * weights).sum(1, keepdim=True)
        routed = torch.cat([cls, tensor[:, 1:]], 1)
        return (routed, *output[1:]) if isinstance(output, tuple) else routed

    adapter.vision_layers()[-1].register_forward_hook(route)
    return adapter


def wired_image() -> np.ndarray:
    image = np.random.default_rng(5).integers(60, 255, size=(224, 224), dtype=np.uint8)
    x1, y1, x2, y2 = REGION
    image[y1:y2, x1:x2] = (np.arange(y2 - y1)[:, None] // 7 % 2) * 255
    return image


@pytest.fixture(scope="module")
def wired(tmp_path_factory):
    return wired_clip(tmp_path_factory.mktemp("wired-dual"))


def test_the_wired_dual_encoders_answer_depends_on_the_region_only(wired):
    image = wired_image().astype(np.float32) / 255
    hidden, scrambled = image.copy(), image.copy()
    x1, y1, x2, y2 = REGION
    hidden[y1:y2, x1:x2] = 0.0
    scrambled[y2:] = np.random.default_rng(9).random((224 - y2, 224))
    query = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes")
    totals = wired.score([image, hidden, scrambled], query)[:, 0]
    assert abs(float(totals[1] - totals[0])) > 0.3
    assert float(totals[2]) == pytest.approx(float(totals[0]), abs=1e-5)


def wired_cases() -> list:
    return [pytest.param(method, marks=[pytest.mark.xfail(reason=KNOWN_WIRED_FAILURES[method], strict=True)]
                         if method in KNOWN_WIRED_FAILURES else [])
            for method in MAP_METHODS if method not in REFUSED]


@pytest.mark.parametrize("method", wired_cases())
def test_map_departs_most_on_the_region_the_wired_dual_encoder_uses(method, wired):
    heat = attribute(wired, wired_image(), QUESTION, method=method, answer="Yes",
                     **fast(method, WIRED_PARAMS)).heatmap
    departure = np.abs(heat - np.median(heat))
    rows, cols = np.nonzero(departure == departure.max())
    x1, y1, x2, y2 = REGION
    assert departure.max() > 0, f"{method}: flat map on a model that uses the region"
    assert np.all((x1 <= cols) & (cols < x2) & (y1 <= rows) & (rows < y2)), (
        f"{method}: peak at rows {sorted(set(rows))[:4]}, cols {sorted(set(cols))[:4]}; region {REGION}"
    )


def randomisation_cases() -> list:
    return [pytest.param(method, marks=[pytest.mark.xfail(reason=KNOWN_RANDOMISATION_FAILURES[method], strict=True)]
                         if method in KNOWN_RANDOMISATION_FAILURES else [])
            for method in MAP_METHODS if method not in REFUSED and method != "rise"]


@pytest.mark.slow
@pytest.mark.parametrize("method", randomisation_cases())
def test_fully_randomised_vision_tower_decorrelates_the_map(method):
    adapter = load_adapter("phantom-clip")
    samples = [(s.load_image(), s.question) for s in islice(get_benchmark("phantom").samples(split="direct"), 10)]
    depth = len(adapter.decoder_layers())
    curve = randomisation_curve(adapter, method, samples, params=fast(method), depths=[depth])
    assert curve[depth] < 0.5, f"{method} on phantom-clip: mean Spearman {curve[depth]:.3f} with all blocks random"


def test_the_adapter_kit_checks_that_apply_to_dual_encoders(tiny_dual, tmp_path_factory):
    """The kit's family-free checks (cxr_attrib.testing.adapter_checks) on both dual-encoder classes.

    The kit's other checks read a chat-template LVLM (token ids, span policies, generation
    round trip, decoder-only gradient rules); the dual encoders' counterparts are the tests in
    tests/test_contrastive_adapters.py and the conformance and wired checks above.
    """
    from cxr_attrib.testing.adapter_checks import Kit, check_batching_and_passes, check_frames, check_wired_gradients

    root = tmp_path_factory.mktemp("kit")
    for family, adapter in tiny_dual.items():
        def factory(region=None, family=family, adapter=adapter):
            if region is None:
                return adapter
            assert family == "clip", "the wired factory is CLIP's (CLS routing)"
            return wired_clip(root / f"{family}-{region}", tuple(int(v) for v in region))

        kit = Kit(adapter=adapter, factory=factory, label=f"tiny {family}")
        check_frames(kit)
        check_batching_and_passes(kit)
        if family == "clip":
            check_wired_gradients(kit)
