"""Gemma 3 specifics: square token grid, agreement with Gemma3Processor, pixel mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.hf import render_chat
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import load_tiny_adapter, save_tiny_model

QUESTION = "Is there evidence of cardiomegaly in the image?"
ANSWER = "The heart is large. Answer: yes."
QUERY = Query(QUESTION, "reasoning", build_prompt(QUESTION, "reasoning"), ANSWER, "turn")
FAMILY = "gemma3"


def image(size: int = 224, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (size, size)) / 255).astype(np.float32)


@pytest.mark.parametrize("shape", [(224, 224), (100, 300), (500, 200), (64, 64)])
def test_processor_image_tokens_match_the_grid(tiny_gemma_adapter, shape):
    processor = tiny_gemma_adapter.processor
    text = render_chat(tiny_gemma_adapter.tokenizer, tiny_gemma_adapter.chat_template, "Describe.", None)
    picture = np.zeros((*shape, 3), np.uint8)
    out = processor(text=[text], images=[[picture]], return_tensors="pt", add_special_tokens=False)
    gh, gw = tiny_gemma_adapter.grid
    assert (gh, gw) == (8, 8)
    assert int((out["input_ids"][0] == tiny_gemma_adapter.image_token_id).sum()) == gh * gw
    assert out["pixel_values"].shape == (1, 3, 224, 224)


def test_encode_equals_the_full_processor(tiny_gemma_adapter):
    pictures = [image(seed=1), image(seed=2)]
    enc = tiny_gemma_adapter.encode(pictures, QUERY)
    text = render_chat(tiny_gemma_adapter.tokenizer, tiny_gemma_adapter.chat_template, QUERY.prompt, QUERY.answer)
    uint8 = [[np.repeat(np.round(p * 255).astype(np.uint8)[:, :, None], 3, 2)] for p in pictures]
    out = tiny_gemma_adapter.processor(
        text=[text] * 2, images=uint8, return_tensors="pt", add_special_tokens=False
    )
    assert torch.equal(out["input_ids"], enc.inputs["input_ids"])
    assert torch.equal(out["token_type_ids"], enc.inputs["token_type_ids"])
    torch.testing.assert_close(out["pixel_values"], enc.inputs["pixel_values"], atol=1e-6, rtol=0)
    assert tiny_gemma_adapter.processing_note == "full processor Gemma3Processor"


def test_grid_follows_mm_tokens_per_image(tmp_path):
    adapter = load_tiny_adapter(save_tiny_model(FAMILY, tmp_path, mm_tokens_per_image=16))
    enc = adapter.encode([image()], QUERY)
    assert enc.grid == (4, 4) and enc.image_positions.numel() == 16
    assert torch.isfinite(adapter.score([image()], QUERY)).all()


def test_tokens_are_row_major_over_the_grid(tiny_model_dir):
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY))
    with torch.no_grad():
        for layer in adapter.model.model.vision_tower.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    base = image(seed=3)
    changed = base.copy()
    changed[28 * 5 : 28 * 6, 28 * 2 : 28 * 3] = 0.0  # cell (row 5, col 2)
    with torch.no_grad():
        feats = [
            adapter.model.model.get_image_features(adapter.pixel_inputs([p])).pooler_output[0]
            for p in (base, changed)
        ]
    moved = (feats[0] - feats[1]).abs().sum(-1).view(8, 8)
    assert torch.nonzero(moved).tolist() == [[5, 2]]


def test_token_type_ids_mark_exactly_the_image_tokens(tiny_gemma_adapter):
    enc = tiny_gemma_adapter.encode([image()], QUERY)
    marked = torch.nonzero(enc.inputs["token_type_ids"][0])[:, 0]
    assert torch.equal(marked, enc.image_positions)


@pytest.mark.parametrize("working_size", [112, 224, 448])
def test_pixels_map_back_by_channel_reduction_and_exact_resampling(tiny_model_dir, working_size):
    options = LoadOptions(dtype="float32", device="cpu", working_size=working_size)
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY), options)
    assert adapter.pixel_inputs([image(working_size)]).shape == (1, 3, 224, 224)
    assert adapter.encode([image(working_size)], QUERY).grid == (8, 8)
    attribution = torch.zeros(1, 3, 224, 224)
    attribution[0, 0, :2, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    attribution[0, 2, :2, :2] = 1.0  # channel sums [[2, 3], [4, 5]], channel means a third of that
    summed = adapter.to_working(attribution, "pixel", "sum")[0]
    mean = adapter.to_working(attribution, "pixel", "mean")[0]
    assert summed.shape == mean.shape == (working_size, working_size)
    assert float(summed.sum()) == pytest.approx(14.0)  # gradients keep their total
    if working_size == 112:
        assert summed[0, 0] == pytest.approx(14.0) and mean[0, 0] == pytest.approx(14.0 / 12)
    elif working_size == 224:
        # exact: sums of two small integers are exactly representable in any order
        assert torch.equal(summed[:2, :2], torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    else:
        quarter = torch.tensor([[2.0, 2, 3, 3], [2, 2, 3, 3], [4, 4, 5, 5], [4, 4, 5, 5]])
        torch.testing.assert_close(summed[:4, :4], quarter / 4)
        torch.testing.assert_close(mean[:4, :4], quarter / 3)
    nonzero = 1 if working_size == 112 else (2 if working_size == 224 else 4)
    # exact: cells fed only by zero pixels sum zeros
    assert summed[nonzero:].abs().sum() == 0 and summed[:, nonzero:].abs().sum() == 0


def test_torch_path_resizes_like_the_processor(tiny_model_dir):
    """Working 112 -> model 224: PIL resizes an 8-bit copy, so they agree to about one grey level."""
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY), LoadOptions(dtype="float32", device="cpu", working_size=112))
    picture = (np.round(image(112, seed=4) * 255) / 255).astype(np.float32)
    expected = adapter.pixel_inputs([picture])
    got = adapter.pixel_values(torch.from_numpy(picture[None]))
    assert got.shape == expected.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got, expected, atol=2 * 2 / 255, rtol=0)  # std 0.5: one grey level = 2/255
