"""Every shipped adapter family passes the adapter conformance suite; shared loading rules.

The contract checks themselves ship in the package (:func:`cxr_attrib.testing.check_adapter`,
docs/adapter-guide.md); this file runs them on every family with a tiny-model recipe and
keeps what is not a per-adapter rule (registry cards, loading, the chunked log-probs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import Adapter, LoadOptions
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.hf import logprobs as hf_logprobs
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import model_cards
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import load_tiny_adapter, tiny_families

QUESTION = "Is there evidence of pleural effusion in the image?"


@pytest.fixture(params=tiny_families())
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def adapter(family: str, tiny_model_dir) -> Adapter:
    return load_tiny_adapter(tiny_model_dir(family))


def test_every_family_passes_the_adapter_conformance_suite(family, adapter_conformance):
    report = adapter_conformance(family)
    assert not report.skipped and len(report.passed) == 9


def test_generation_stops_at_end_of_turn_and_strips_it(family, tiny_model_dir):
    adapter = load_tiny_adapter(tiny_model_dir(family))
    tok = adapter.tokenizer
    yes, end = tok.convert_tokens_to_ids(["Yes", adapter.end_of_turn])
    assert end < yes
    head = adapter.model.get_output_embeddings().weight
    with torch.no_grad():
        head[end] = head[yes]  # equal logits: greedy argmax takes the lower id, the end token
    adapter.model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in (yes, end)]
    adapter.model.generation_config.begin_suppress_tokens = [end]
    gen = adapter.generate(np.zeros((224, 224), np.float32), build_prompt(QUESTION, "direct"), max_new_tokens=40)
    assert gen.token_ids == (yes,) and gen.text == "Yes" and len(gen.logprobs) == 1


def test_token_logprobs_chunks_match_a_full_log_softmax(monkeypatch):
    monkeypatch.setattr(hf_logprobs, "VOCAB_CHUNK_ELEMENTS", 7 * 16)  # 7 vocabulary rows per chunk
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(6, 16, dtype=torch.bfloat16)
    targets = torch.tensor([0, 7, 13, 49, 21, 21])
    got = hf_logprobs.token_logprobs(hidden, head, targets)
    reference = torch.log_softmax(head(hidden.float()).double(), -1).gather(1, targets[:, None])[:, 0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, atol=1e-5, rtol=0)


def test_decoder_layers_and_describe(adapter):
    layers = adapter.decoder_layers()
    assert len(layers) == adapter.model.config.get_text_config().num_hidden_layers == 2
    assert len(adapter.vision_layers()) == 2 and adapter.supports_gradients
    facts = adapter.describe()
    assert facts["dtype"] == "float32" and facts["grid"] == list(adapter.geometry.token_grid)
    assert facts["family"] == adapter.family
    assert facts["patch_grid"] == [16, 16]


def test_geometry_of_the_tiny_models(adapter):
    geometry = adapter.geometry
    assert (geometry.working_size, geometry.model_size, geometry.patch_size) == (224, (224, 224), 14)
    tokens = {"qwen2_5_vl": ((8, 8), (2, 2)), "gemma3": ((8, 8), (2, 2)), "llava": ((16, 16), (1, 1))}
    assert geometry.patch_grid == (16, 16)
    assert (geometry.token_grid, geometry.patches_per_token) == tokens[adapter.family]
    assert sorted(geometry.patch_order.tolist()) == list(range(256))


@pytest.mark.parametrize("key", ["qwen2_5_vl_3b", "medgemma_4b"])
def test_registry_key_without_local_weights_is_a_clear_error(key, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    card = model_cards()[key]
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(key, LoadOptions(device="cpu"))
    message = str(caught.value)
    assert key in message and card.source in message and "\n" not in message
    assert "not available locally" in message and "local folder" in message


def test_cards_cover_the_six_models():
    cards = model_cards()
    expected = {
        "qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "gemma3_4b": "google/gemma-3-4b-it", "gemma3_12b": "google/gemma-3-12b-it",
        "medgemma_4b": "google/medgemma-4b-it", "medgemma1_5_4b": "google/medgemma-1.5-4b-it",
    }
    assert {key: cards[key].source for key in expected} == expected
    assert {cards[key].family for key in expected} == {"qwen2_5_vl", "gemma3"}


def test_folder_loads_through_resolve_adapter(family, tiny_model_dir):
    adapter = load_adapter(tiny_model_dir(family), LoadOptions(dtype="auto", device="cpu"))
    assert adapter.family == family and adapter.name == str(tiny_model_dir(family))
    assert next(adapter.model.parameters()).dtype == torch.float32  # "auto" on the CPU
    assert not any(p.requires_grad for p in adapter.model.parameters())


def test_resolve_ignores_other_references(tmp_path):
    from cxr_attrib.registry import plugin_manager

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    hook = plugin_manager().hook.resolve_adapter
    assert hook(reference=str(tmp_path), options=LoadOptions()) is None
    assert hook(reference=str(tmp_path / "missing"), options=LoadOptions()) is None
    assert hook(reference="not-a-hub-id", options=LoadOptions()) is None


def test_load_options_pick_device_and_dtype(monkeypatch):
    from cxr_attrib.hf import resolve_device_dtype

    assert resolve_device_dtype(LoadOptions(device="cpu")) == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_dtype(LoadOptions()) == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device_dtype(LoadOptions(device_map="auto")) == (None, torch.bfloat16)
    assert resolve_device_dtype(LoadOptions(device="cpu", dtype="float16")) == (torch.device("cpu"), torch.float16)
    with pytest.raises(ModelLoadError, match="dtype='fp8' is invalid; expected one of 'auto'"):
        resolve_device_dtype(LoadOptions(dtype="fp8"))