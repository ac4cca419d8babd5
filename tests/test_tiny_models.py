"""Tiny offline models: real classes, real special tokens, family-like templates, wiring."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxr_attrib.adapter import Query
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import (
    FAMILIES,
    load_tiny_adapter,
    save_tiny_model,
    tiny_config,
    tiny_tokenizer,
    wired_adapter,
)

QUESTION = "Is there evidence of effusion in the image?"
QUERY = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes.", "turn")
CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "gemma3": "Gemma3ForConditionalGeneration",
           "llava": "LlavaForConditionalGeneration"}
SPECIALS = {
    "qwen2_5_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|image_pad|>", "<|video_pad|>"],
    "gemma3": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
               "<end_of_image>", "<image_soft_token>"],
    "llava": ["<unk>", "<s>", "</s>", "<image>", "<pad>"],
}


def image(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).integers(0, 256, (224, 224)) / 255).astype(np.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_is_the_real_class_small_and_quick(family, tmp_path):
    save_tiny_model(family, tmp_path / "warm")
    start = time.perf_counter()
    folder = save_tiny_model(family, tmp_path / "timed")
    assert time.perf_counter() - start < 2.0
    adapter = load_tiny_adapter(folder)
    assert type(adapter.model).__name__ == CLASSES[family]
    assert 100_000 < sum(p.numel() for p in adapter.model.parameters()) < 1_000_000
    names = {p.name for p in folder.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"}
    assert expected <= names


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights_other_seed_other_weights(family, tiny_model_dir, tmp_path):
    first = load_file(tiny_model_dir(family) / "model.safetensors")
    again = load_file(save_tiny_model(family, tmp_path / "again") / "model.safetensors")
    other = load_file(save_tiny_model(family, tmp_path / "other", seed=1) / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_has_the_real_special_tokens_and_round_trips(family):
    tokenizer = tiny_tokenizer(family)
    for token in SPECIALS[family]:
        assert tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]
    text = "The left costophrenic angle is blunted. Answer: yes.\nNo evidence of pneumothorax."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2
    assert tiny_tokenizer(family).get_vocab() == tokenizer.get_vocab()


def test_llava_template_renders_like_llava_1_5():
    tokenizer = tiny_tokenizer("llava")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}
    full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": "Yes."}], tokenize=False)
    prompt = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert full == "<s>USER: <image>\nQ? ASSISTANT: Yes.</s>" and full.startswith(prompt)
    assert prompt == "<s>USER: <image>\nQ? ASSISTANT: "


def test_qwen_template_renders_like_qwen2_5_vl():
    tokenizer = tiny_tokenizer("qwen2_5_vl")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}
    full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": "Yes."}], tokenize=False)
    assert full == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\nYes.<|im_end|>\n"
    )
    system = {"role": "system", "content": "Be brief."}
    prompt = tokenizer.apply_chat_template([system, user], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_gemma_template_renders_like_gemma3():
    tokenizer = tiny_tokenizer("gemma3")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Q? "}]}
    full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": " Yes. "}], tokenize=False)
    assert full == (
        "<bos><start_of_turn>user\n<start_of_image>Q?<end_of_turn>\n<start_of_turn>model\nYes.<end_of_turn>\n"
    )
    system = {"role": "system", "content": "Be brief."}
    prompt = tokenizer.apply_chat_template([system, user], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>Q?<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template([user, user], tokenize=False)


def test_config_overrides_merge_into_the_defaults():
    config = tiny_config("qwen2_5_vl", text_config={"num_hidden_layers": 3}, vision_config={"depth": 1})
    assert config.text_config.num_hidden_layers == 3 and config.text_config.hidden_size == 64
    assert config.vision_config.depth == 1 and config.vision_config.patch_size == 14
    with pytest.raises(ValueError, match="unknown tiny model family"):
        tiny_config("blip2")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_image_matters(family, request):
    adapter = request.getfixturevalue("tiny_qwen_adapter" if family == "qwen2_5_vl" else "tiny_gemma_adapter")
    if family == "gemma3":
        assert adapter.model.model.multi_modal_projector.mm_input_projection_weight.abs().min() > 0
    scores = adapter.score([image(), np.zeros((224, 224), np.float32)], QUERY).sum(-1)
    assert abs(float(scores[0] - scores[1])) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_wired_adapter_depends_only_on_its_region(family):
    adapter = wired_adapter(family, (56, 28, 140, 112))  # token columns 2-4, rows 1-3
    base = image(1)
    outside, inside = base.copy(), base.copy()
    outside[112:, :] = 0.0
    outside[:, 140:] = 1.0
    outside[:28, :] = 0.5
    inside[40:100, 60:130] = 0.0
    scores = adapter.score([base, outside, inside], QUERY).sum(-1)
    assert scores[0] == scores[1], "pixels outside the region must have no effect at all"
    assert abs(float(scores[0] - scores[2])) > 1e-3
    working = torch.from_numpy(base[None].copy()).requires_grad_(True)
    adapter.forward(working, QUERY).backward()
    space = working.grad[0].abs()
    mask = torch.zeros(224, 224, dtype=torch.bool)
    mask[28:112, 56:140] = True
    assert space[~mask].max() == 0 and (space[mask].view(3, 28, 3, 28).sum(dim=(1, 3)) > 0).all()


def test_wired_region_must_align_with_the_token_grid():
    with pytest.raises(ValueError, match="whole token cells"):
        wired_adapter("gemma3", (10, 0, 112, 112))


def test_hook_register_tiny_models(registered_plugin, tmp_path):
    """A family's recipe registered through the hook is what save_tiny_model builds."""
    import json

    from cxr_attrib import hookimpl
    from cxr_attrib.errors import UnknownFamilyError
    from cxr_attrib.testing import tiny_families
    from cxr_attrib_adapters.qwen2_5_vl_tiny import QwenTinyRecipe

    class Narrow(QwenTinyRecipe):
        family = "narrow_stub"

        def config_values(self, tokenizer):
            values = super().config_values(tokenizer)
            values["text_config"]["intermediate_size"] = 96
            return values

    with pytest.raises(UnknownFamilyError, match="unknown tiny model family 'narrow_stub'.*gemma3, llava, qwen2_5_vl"):
        save_tiny_model("narrow_stub", tmp_path / "before")
    registered_plugin(type("NarrowPlugin", (), {"register_tiny_models": staticmethod(
        hookimpl(specname="register_tiny_models")(lambda register: register(Narrow())))}))
    assert "narrow_stub" in tiny_families()
    config = json.loads((save_tiny_model("narrow_stub", tmp_path / "m") / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["text_config"]["intermediate_size"] == 96


def test_the_core_never_branches_on_a_model_family():
    """No comparison in cxr_attrib/ against a family name: families live in adapters/."""
    import ast
    from pathlib import Path

    import cxr_attrib

    hits = []
    for path in Path(cxr_attrib.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if any(isinstance(v, str) and ("qwen" in v.lower() or "gemma" in v.lower()) for v in names):
                    hits.append(f"{path.name}:{node.lineno}")
    assert not hits, hits
