"""LLaVA, the third shipped family, written only with the public adapter kit.

Its conformance run is in tests/test_adapter_common.py (every family with a tiny recipe);
here: nothing private imported, agreement with the real ``LlavaProcessor``, the registry
cards, every applicable method through ``check_method``, and occlusion's batch.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.hf import render_chat
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import methods, model_cards
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import check_method, conformance_images, load_tiny_adapter
from cxr_attrib_adapters.llava import LlavaAdapter

ROOT = Path(__file__).resolve().parents[1]
FAMILY_MODULES = ["adapters/cxr_attrib_adapters/llava.py", "adapters/cxr_attrib_adapters/llava_tiny.py"]
QUESTION = "Is there evidence of nodule in the image?"
QUERY = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes.", "turn")
FAST = {"occlusion": {"tiles": 4}, "rise": {"n_masks": 16, "batch_size": 17}, "integrated_gradients": {"steps": 4},
        "prompting": {"max_new_tokens": 8}, "prompting_refined": {"max_new_tokens": 8}}


@pytest.fixture(scope="module")
def llava(tiny_model_dir):
    return load_tiny_adapter(tiny_model_dir("llava"))


@pytest.mark.parametrize("path", FAMILY_MODULES)
def test_the_family_imports_nothing_private(path):
    """Only public names of public core modules, and only its own modules from the adapters package."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cxr_attrib"):
            assert node.level == 0 and not any(p.startswith("_") for p in node.module.split(".")), node.module
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert not alias.name.startswith("_"), (node.module, alias.name)
                public = getattr(module, "__all__", None)  # modules without __all__: every non-_ name
                assert public is None or alias.name in public, f"{node.module}.{alias.name} is not public"
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.module in ("llava_tiny",), f"imports the adapters package's .{node.module}"
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("cxr_attrib") for alias in node.names)


def test_encode_equals_the_real_llava_processor(llava):
    pictures = [np.random.default_rng(s).integers(0, 256, (224, 224)).astype(np.float32) / 255 for s in (1, 2)]
    enc = llava.encode(pictures, QUERY)
    text = render_chat(llava.tokenizer, llava.chat_template, QUERY.prompt, QUERY.answer)
    uint8 = [np.repeat(np.round(p * 255).astype(np.uint8)[:, :, None], 3, 2) for p in pictures]
    out = llava.processor(text=[text] * 2, images=uint8, return_tensors="pt", add_special_tokens=False)
    assert torch.equal(out["input_ids"], enc.inputs["input_ids"])
    assert enc.grid == (16, 16) and enc.image_positions.numel() == 256
    # the processor rescales uint8 by 1/255 in float32; the adapter starts from the same k/255 values
    torch.testing.assert_close(out["pixel_values"], enc.inputs["pixel_values"], atol=1e-5, rtol=0)


def test_cards_and_the_local_llava_med_folder(monkeypatch, tmp_path):
    cards = model_cards()
    assert cards["llava_1_5_7b"].source == "llava-hf/llava-1.5-7b-hf" and cards["llava_med"].family == "llava"
    monkeypatch.delenv("CXR_ATTRIB_LLAVA_MED", raising=False)
    with pytest.raises(ModelLoadError, match=r"model 'llava_med' is a local folder: set CXR_ATTRIB_LLAVA_MED"):
        load_adapter("llava_med", LoadOptions(device="cpu"))
    monkeypatch.setenv("CXR_ATTRIB_LLAVA_MED", str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=r"CXR_ATTRIB_LLAVA_MED=.*missing' is not a folder"):
        load_adapter("llava_med", LoadOptions(device="cpu"))


def test_llava_med_loads_from_the_folder_it_names(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("CXR_ATTRIB_LLAVA_MED", str(tiny_model_dir("llava")))
    adapter = model_cards()["llava_med"].load("ignored", LoadOptions(device="cpu"), name="llava_med")
    assert adapter.name == "llava_med" and adapter.family == "llava"


APPLICABLE = sorted(name for name, cls in methods().items()
                    if cls.uses_model and all(issubclass(LlavaAdapter, s) for s in cls.required_surfaces()))


def test_applicable_methods_are_all_but_the_dual_encoder_ones():
    assert set(methods()) - set(APPLICABLE) == {name for name, cls in methods().items() if not cls.uses_model} | {
        "similarity_map"}


@pytest.mark.parametrize("method", APPLICABLE)
def test_every_method_passes_check_method(llava, method):
    check_method(method, llava, params=FAST.get(method), images=conformance_images()[:1])


def test_occlusion_scores_its_65_sequences_in_one_forward_call(llava):
    image = np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8)
    result = attribute(llava, image, QUESTION, method="occlusion", answer="Yes")
    assert result.meta.params["tiles"] == 8
    assert result.meta.passes["forward_calls"] == 1 and result.meta.passes["forward_sequences"] == 65
