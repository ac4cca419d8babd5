"""Attention-family methods: predictor rows, rollout order, gradient weighting, LRP.

Every map is checked against a hand computation from the model's own eager
attention weights (``output_attentions=True``), so the on-the-fly reduction, the
rows that are read and the order of the rollout product are pinned exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import Query
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing.tiny_models import build_tiny_adapter
from cxr_attrib_plugins.attention_rollout import rollout_rows
from cxr_attrib_plugins.grad_weighted_attention import relevance_rollout_rows

QUESTION = "Is there evidence of nodule in the image?"
FAMILIES = ("qwen2_5_vl", "gemma3")


@pytest.fixture(scope="module", params=FAMILIES)
def adapter(request: pytest.FixtureRequest):
    """A tiny adapter with 3 decoder layers and 4 heads (so layer and head choices matter)."""
    text = {"num_hidden_layers": 3}
    if request.param == "gemma3":
        text["layer_types"] = ["sliding_attention", "sliding_attention", "full_attention"]
    return build_tiny_adapter(request.param, seed=1, text_config=text)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 224 x 224 image of 8-bit levels, so the working frame holds exactly these values."""
    return (np.random.default_rng(3).integers(0, 256, (224, 224)) / 255).astype(np.float32)


def _query() -> Query:
    return Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes")


@contextmanager
def _eager(adapter) -> Iterator[None]:
    config = adapter.model.config.get_text_config()
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


def _full_attentions(adapter, image: np.ndarray):
    """The encoding and the model's own eager output with every layer's (B, heads, L, L) weights."""
    encoding = adapter.encode([image], _query())
    with _eager(adapter), torch.no_grad():
        out = adapter.model(**encoding.inputs, output_attentions=True, use_cache=False)
    return encoding, out


def _grad_forward(adapter, encoding):
    """Eager forward whose attention weights keep their gradient of the summed target log-prob."""
    captured: list[torch.Tensor] = []
    model = adapter.model

    def keep(module, args, output):
        weights = output[1]
        weights.retain_grad()
        captured.append(weights)

    handles = [layer.self_attn.register_forward_hook(keep) for layer in adapter.decoder_layers()]
    try:
        with _eager(adapter):
            pixels = encoding.inputs["pixel_values"].clone().requires_grad_(True)
            logits = model(**{**encoding.inputs, "pixel_values": pixels}, use_cache=False).logits[0].float()
        rows = logits[encoding.target_positions - 1]
        logprobs = torch.log_softmax(rows, -1).gather(1, encoding.target_ids[:, None])
        logprobs.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _grid(matrix: torch.Tensor, encoding) -> np.ndarray:
    gh, gw = encoding.grid
    return matrix[:, encoding.image_positions].mean(0).reshape(gh, gw).double().numpy()


# -- attention ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer, head", [(-1, None), (0, None), (1, 2)])
def test_attention_reads_predictor_rows_exactly(adapter, image, layer, head) -> None:
    encoding, out = _full_attentions(adapter, image)
    weights = out.attentions[layer][0].double()
    weights = weights.mean(0) if head is None else weights[head]
    expected = _grid(weights[encoding.target_positions - 1], encoding)
    result = attribute(adapter, image, QUESTION, method="attention", answer="Yes", layer=layer, head=head)
    np.testing.assert_allclose(result.grid, expected, atol=1e-6)
    answer_rows = _grid(weights[encoding.target_positions], encoding)
    assert np.abs(answer_rows - expected).max() > 1e-4  # bug 6: the answer rows are another map


def test_attention_keeps_only_predictor_rows_in_memory(adapter, image) -> None:
    maps = adapter.attention(image, _query(), layers=[0, 2])
    length = adapter.encode([image], _query()).inputs["input_ids"].shape[1]
    assert sorted(maps.maps) == [0, 2]
    assert all(m.shape == (len(maps.predictor_positions), length) and m.dtype == torch.float32
               for m in maps.maps.values())


def test_attention_switches_eager_only_for_its_forward(adapter, image) -> None:
    config = adapter.model.config.get_text_config()
    before = config._attn_implementation
    model = adapter.model
    attribute(adapter, image, QUESTION, method="attention", answer="Yes")
    assert config._attn_implementation == before and adapter.model is model
    assert before != "eager"  # the loaded model was never switched permanently


# -- rollout -----------------------------------------------------------------------------


def _numpy_rollout(weights: list[np.ndarray], rows: np.ndarray, order: str) -> np.ndarray:
    eye = np.eye(weights[0].shape[0])
    mixed = [0.5 * (w + eye) for w in weights]
    mixed = [m / m.sum(-1, keepdims=True) for m in mixed]
    joint = eye
    for m in (mixed if order == "latest_left" else reversed(mixed)):
        joint = m @ joint
    return joint[rows]


def test_rollout_matches_float64_product_latest_layer_on_the_left(adapter, image) -> None:
    encoding, out = _full_attentions(adapter, image)
    weights = [a[0].double().mean(0).numpy() for a in out.attentions]
    rows = (encoding.target_positions - 1).numpy()
    gh, gw = encoding.grid
    image_cols = encoding.image_positions.numpy()
    expected = _numpy_rollout(weights, rows, "latest_left")[:, image_cols].mean(0).reshape(gh, gw)
    reversed_order = _numpy_rollout(weights, rows, "earliest_left")[:, image_cols].mean(0).reshape(gh, gw)
    result = attribute(adapter, image, QUESTION, method="attention_rollout", answer="Yes")
    np.testing.assert_allclose(result.grid, expected, rtol=1e-5, atol=1e-7)
    # the other order is another matrix: far outside the tolerance the right order meets
    assert np.abs(reversed_order - expected).max() > 1e-3 * np.abs(expected).max()


def test_rollout_start_layer_drops_earlier_layers(adapter, image) -> None:
    encoding, out = _full_attentions(adapter, image)
    weights = [a[0].double().mean(0).numpy() for a in out.attentions][1:]
    rows = (encoding.target_positions - 1).numpy()
    gh, gw = encoding.grid
    expected = _numpy_rollout(weights, rows, "latest_left")[:, encoding.image_positions.numpy()]
    result = attribute(adapter, image, QUESTION, method="attention_rollout", answer="Yes", start_layer=1)
    np.testing.assert_allclose(result.grid, expected.mean(0).reshape(gh, gw), rtol=1e-5, atol=1e-7)
    assert result.meta.info["layers"] == adapter.num_decoder_layers - 1


def test_rollout_rows_doctest_values() -> None:
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    b = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    eye = torch.eye(2)
    mix = [(0.5 * (m + eye)) / (0.5 * (m + eye)).sum(-1, keepdim=True) for m in (a, b)]
    torch.testing.assert_close(rollout_rows([a, b], torch.tensor([0, 1])), mix[1] @ mix[0])


# -- gradient-weighted attention -----------------------------------------------------------


@pytest.mark.parametrize("layer", [-1, 0])
def test_grad_weighted_attention_matches_relu_grad_times_attention(adapter, image, layer) -> None:
    encoding = adapter.encode([image], _query())
    weights = _grad_forward(adapter, encoding)[layer]
    product = (torch.relu(weights.grad) * weights.detach())[0].double().mean(0)
    expected = _grid(product[encoding.target_positions - 1], encoding)
    result = attribute(adapter, image, QUESTION, method="grad_weighted_attention", answer="Yes", layer=layer)
    np.testing.assert_allclose(result.grid, expected, rtol=1e-4, atol=1e-8)
    assert np.abs(expected).max() > 0


def test_grad_weighted_attention_all_layers_is_chefer_rollout(adapter, image) -> None:
    encoding = adapter.encode([image], _query())
    maps = [(torch.relu(w.grad) * w.detach())[0].double().mean(0) for w in _grad_forward(adapter, encoding)]
    joint = torch.eye(maps[0].shape[0], dtype=torch.float64)
    for m in maps:
        joint = joint + m @ joint
    expected = _grid(joint[encoding.target_positions - 1], encoding)
    result = attribute(adapter, image, QUESTION, method="grad_weighted_attention", answer="Yes", layers="all")
    np.testing.assert_allclose(result.grid, expected, rtol=1e-4, atol=1e-8)
    rows = relevance_rollout_rows([m.float() for m in maps], encoding.target_positions - 1)
    np.testing.assert_allclose(_grid(rows, encoding), expected, rtol=1e-4, atol=1e-8)


# -- LRP ---------------------------------------------------------------------------------


def test_lrp_conserves_relevance(adapter, image) -> None:
    result = attribute(adapter, image, QUESTION, method="lrp", answer="Yes")
    info = result.meta.info
    # float32 through a few layers: relative error well below 1e-4 (see the method card)
    assert info["conservation_error"] < 1e-4
    assert info["relevance_total"] == pytest.approx(info["explained_logit"], rel=1e-4, abs=1e-6)
    assert float(result.grid.sum()) == pytest.approx(info["image_relevance"], rel=1e-5, abs=1e-7)


def test_lrp_keeps_the_models_forward_values(adapter, image) -> None:
    query = _query()
    before = adapter.score([image], query)
    relevance = adapter.relevance(image, query)
    encoding = adapter.encode([image], query)
    with torch.no_grad():
        hidden = adapter.model.model(**encoding.inputs, use_cache=False).last_hidden_state[0]
    head = adapter.model.get_output_embeddings().weight
    logit = float((hidden[encoding.target_positions - 1] * head[encoding.target_ids]).sum())
    assert relevance.explained == pytest.approx(logit, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(adapter.score([image], query), before)  # every hook removed


def test_lrp_is_not_rollout(adapter, image) -> None:
    lrp = attribute(adapter, image, QUESTION, method="lrp", answer="Yes").grid
    rollout = attribute(adapter, image, QUESTION, method="attention_rollout", answer="Yes").grid
    corr = np.corrcoef(lrp.ravel(), rollout.ravel())[0, 1]
    assert not np.allclose(lrp / np.abs(lrp).max(), rollout / np.abs(rollout).max(), atol=1e-2)
    assert abs(corr) < 0.99


# -- passes and bad input ------------------------------------------------------------------


@pytest.mark.parametrize("method, backward", [("attention", 0), ("attention_rollout", 0),
                                              ("grad_weighted_attention", 1), ("lrp", 1)])
def test_passes(adapter, image, method, backward) -> None:
    passes = attribute(adapter, image, QUESTION, method=method, answer="Yes").meta.passes
    assert (passes["forward_calls"], passes["backward_calls"], passes["generate_calls"]) == (1, backward, 0)


@pytest.mark.parametrize("method, params, needle", [
    ("attention", {"layer": 3}, "layer must be an integer in [-3, 2]"),
    ("attention", {"layer": -4}, "layer must be an integer in [-3, 2]"),
    ("attention", {"layer": 1.0}, "'layer' = 1.0 is invalid; expected an integer"),
    ("attention", {"head": 4}, "head must be None (mean over heads) or an integer in [0, 3]"),
    ("attention", {"head": True}, "'head' = True is invalid; expected an integer in [0, inf] or None"),
    ("attention_rollout", {"start_layer": 3}, "start_layer must be an integer in [-3, 2]"),
    ("grad_weighted_attention", {"layer": 7}, "layer must be an integer in [-3, 2]"),
    ("grad_weighted_attention", {"layers": "every"}, "'layers' = 'every' is invalid; expected one of 'one', 'all'"),
])
def test_bad_parameters_fail_before_any_pass(adapter, image, method, params, needle) -> None:
    adapter.counter.reset()
    with pytest.raises(MethodParameterError) as info:
        attribute(adapter, image, QUESTION, method=method, answer="Yes", **params)
    assert needle in str(info.value) and method in str(info.value)
    assert adapter.counter.forward_calls == 0 and adapter.counter.backward_calls == 0
