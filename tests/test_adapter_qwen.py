"""Qwen2.5-VL specifics: token grid from image_grid_thw, M-RoPE inputs, patch un-permute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import load_tiny_adapter
from cxr_attrib_adapters.qwen2_5_vl import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, token_grid

QUESTION = "Is there evidence of nodule in the image?"
QUERY = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes.", "turn")
FAMILY = "qwen2_5_vl"


def image(size: int = 224, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (size, size)) / 255).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((224, 224), (8, 8)),
        ((112, 196), (4, 7)),  # wide
        ((196, 84), (7, 3)),  # tall
        ((300, 100), (11, 4)),  # resized to 308 x 112
        ((2000, 1000), (45, 22)),  # bounded by max_pixels: resized to 1260 x 616
    ],
)
def test_token_grid_matches_the_processor_for_non_square_images(tiny_qwen_adapter, shape, expected):
    out = tiny_qwen_adapter.image_processor(
        images=[np.zeros((*shape, 3), np.float32)], return_tensors="pt", do_rescale=False,
        size={"shortest_edge": DEFAULT_MIN_PIXELS, "longest_edge": DEFAULT_MAX_PIXELS},
    )
    grid_thw = out["image_grid_thw"][0]
    assert token_grid(grid_thw, 2) == expected
    assert out["pixel_values"].shape[0] == expected[0] * expected[1] * 4


@pytest.mark.parametrize(("shape", "cell"), [((112, 196), (2, 5)), ((196, 84), (6, 0)), ((224, 224), (0, 7))])
def test_merged_tokens_are_row_major_over_the_grid(tiny_model_dir, shape, cell):
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY))
    with torch.no_grad():
        for block in adapter.model.model.visual.blocks:
            block.attn.proj.weight.zero_()
            block.attn.proj.bias.zero_()
    base = np.random.default_rng(1).random((*shape, 3)).astype(np.float32)
    changed = base.copy()
    r, c = cell
    changed[28 * r : 28 * r + 28, 28 * c : 28 * c + 28] = 0.0
    feats = []
    for picture in (base, changed):
        out = adapter.image_processor(images=[picture], return_tensors="pt", do_rescale=False)
        with torch.no_grad():
            features = adapter.model.model.get_image_features(out["pixel_values"], out["image_grid_thw"])
            feats.append(features.pooler_output[0])
    gh, gw = token_grid(out["image_grid_thw"][0], 2)
    moved = (feats[0] - feats[1]).abs().sum(-1).view(gh, gw)
    assert torch.nonzero(moved).tolist() == [[r, c]]


@pytest.mark.parametrize(
    ("working_size", "max_pixels", "grid", "patches"),
    [(224, None, (8, 8), 256), (448, None, (16, 16), 1024), (112, None, (4, 4), 64),
     (100, None, (4, 4), 64), (448, 224 * 224, (8, 8), 256)],
)
def test_working_sizes_give_the_processor_grid(tiny_model_dir, working_size, max_pixels, grid, patches):
    options = LoadOptions(dtype="float32", device="cpu", working_size=working_size, max_pixels=max_pixels)
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY), options)
    enc = adapter.encode([image(working_size)] * 2, QUERY)
    assert enc.grid == grid and enc.image_positions.numel() == grid[0] * grid[1]
    assert enc.inputs["image_grid_thw"].tolist() == [[1, 2 * grid[0], 2 * grid[1]]] * 2
    assert enc.inputs["pixel_values"].shape == (2 * patches, 3 * 2 * 14 * 14)
    assert adapter.pixel_inputs([image(working_size)]).shape == (1, patches, 1176)
    back = adapter.to_working(adapter.pixel_inputs([image(working_size)]), "pixel", "sum")
    assert back.shape == (1, working_size, working_size)
    scores = adapter.score([image(working_size)], QUERY)
    assert torch.isfinite(scores).all()


def test_mm_token_type_ids_give_3d_positions_in_grid_order(tiny_qwen_adapter):
    enc = tiny_qwen_adapter.encode([image()], QUERY)
    inputs = enc.inputs
    is_image = inputs["input_ids"][0] == tiny_qwen_adapter.image_token_id
    assert torch.equal(inputs["mm_token_type_ids"][0].bool(), is_image)
    positions, _ = tiny_qwen_adapter.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    img = enc.image_positions
    rows = (positions[1, 0, img] - positions[1, 0, img[0]]).view(8, 8)
    cols = (positions[2, 0, img] - positions[2, 0, img[0]]).view(8, 8)
    assert torch.equal(rows, torch.arange(8)[:, None].expand(8, 8))
    assert torch.equal(cols, torch.arange(8)[None, :].expand(8, 8))


def test_pixel_map_rebuilds_the_image_exactly(tiny_qwen_adapter):
    picture = image(seed=5)
    picture[:112, 112:] = 1.0  # a bright top-right quadrant: must come back top-right
    pixels = tiny_qwen_adapter.pixel_inputs([picture])
    processor = tiny_qwen_adapter.image_processor
    expected = sum(2 * (picture - m) / s for m, s in zip(processor.image_mean, processor.image_std))
    back = tiny_qwen_adapter.to_working(pixels, "pixel", "sum")[0]
    torch.testing.assert_close(back, torch.from_numpy(expected.astype(np.float32)), atol=1e-4, rtol=0)
    level = tiny_qwen_adapter.to_working(pixels, "pixel", "mean")[0]
    torch.testing.assert_close(level, torch.from_numpy(expected.astype(np.float32)) / 6, atol=1e-5, rtol=0)


def test_merge_window_storage_order_is_undone(tiny_qwen_adapter):
    attribution = torch.zeros(1, 256, 1176)
    attribution[0, 0:4] = 1.0  # the 4 patches of merged token (0, 0)
    attribution[0, 4 + 2] = 1.0  # patch (row 1, col 0) of merged token (0, 1)
    back = tiny_qwen_adapter.to_working(attribution, "pixel", "sum")[0]
    expected = torch.zeros(224, 224)
    expected[0:28, 0:28] = 3 * 2  # channels x temporal copies
    expected[14:28, 28:42] = 3 * 2
    assert torch.equal(back, expected)


def test_vision_blocks_follow_the_geometry_patch_order(tiny_model_dir):
    adapter = load_tiny_adapter(tiny_model_dir(FAMILY))
    with torch.no_grad():
        for block in adapter.model.model.visual.blocks:
            block.attn.proj.weight.zero_()
            block.attn.proj.bias.zero_()
    base = image(seed=2)
    changed = base.copy()
    changed[70:84, 196:210] = 0.0  # patch (row 5, col 14)
    outputs = [
        adapter.forward(torch.from_numpy(x[None]), QUERY, vision=(-1,)).vision[-1][0] for x in (base, changed)
    ]
    moved = (outputs[0] - outputs[1]).abs().sum(-1)
    assert adapter.geometry.patch_order[torch.nonzero(moved)[:, 0]].tolist() == [5 * 16 + 14]
    back = adapter.to_working(moved[None], "patch", "sum")[0]
    assert torch.nonzero(back.sum(0)).flatten().tolist() == list(range(196, 210))
    assert torch.nonzero(back.sum(1)).flatten().tolist() == list(range(70, 84))
