"""``similarity_map``: a hand-computed cosine grid, the upsampling, a wired peak, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.errors import MethodParameterError, ModelCapabilityError
from cxr_attrib.testing.tiny_models import load_tiny_adapter
from cxr_attrib_adapters.contrastive.tiny import save_tiny_dual_encoder
from cxr_attrib_plugins.similarity_map import upsample_grid

QUESTION = "Is there evidence of mass in the image?"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("simmap")
    return {family: load_tiny_adapter(save_tiny_dual_encoder(family, root / family, seed=1))
            for family in ("clip", "siglip")}


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (224, 224), dtype=np.uint8)


def hand_grid(adapter, pixels: np.ndarray) -> np.ndarray:
    """Cosine of each patch with "mass", from the model's own modules (independent of the adapter)."""
    model = adapter.model
    working = torch.from_numpy(pixels.astype(np.float32) / 255)[None, None].expand(-1, 3, -1, -1)
    from transformers import AutoImageProcessor  # noqa: F401  (mean/std are the processor's, read off the adapter)

    mean = torch.tensor(adapter.image_mean)[None, :, None, None]
    std = torch.tensor(adapter.image_std)[None, :, None, None]
    with torch.no_grad():
        out = model.vision_model(pixel_values=(working - mean) / std)
        if adapter.family == "clip":
            patches = model.visual_projection(model.vision_model.post_layernorm(out.last_hidden_state[:, 1:]))
            tokens = adapter.tokenizer(["mass"], return_tensors="pt")
            text = model.text_projection(model.text_model(**tokens).pooler_output)
        else:
            patches = out.last_hidden_state
            tokens = adapter.tokenizer(["mass"], padding="max_length", max_length=16, return_tensors="pt")
            text = model.text_model(input_ids=tokens["input_ids"]).pooler_output
    cos = torch.nn.functional.cosine_similarity(patches[0], text[0][None], dim=-1)
    side = int(np.sqrt(cos.numel()))
    return cos.reshape(side, side).numpy()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_grid_equals_hand_cosine_and_sigma_zero_nearest_is_the_grid_upsampled(family, adapters):
    adapter = adapters[family]
    pixels = image(2)
    adapter.counter.reset()
    result = attribute(adapter, pixels, QUESTION, method="similarity_map", answer="Yes", sigma=0.0)
    expected = hand_grid(adapter, pixels)
    np.testing.assert_allclose(result.grid, expected, atol=1e-5)
    cell = 224 // expected.shape[0]
    np.testing.assert_allclose(result.heatmap, np.kron(expected, np.ones((cell, cell))), atol=1e-5)
    assert result.meta.passes["forward_calls"] == 1 and result.meta.passes["backward_calls"] == 0
    assert result.meta.info["prompt"] == "mass"


def test_smoothing_is_a_gaussian_in_patch_units(adapters):
    from scipy.ndimage import gaussian_filter

    adapter = adapters["clip"]
    pixels = image(3)
    result = attribute(adapter, pixels, QUESTION, method="similarity_map", answer="Yes", sigma=1.5)
    smoothed = gaussian_filter(hand_grid(adapter, pixels).astype(np.float64), 1.5, mode="nearest")
    np.testing.assert_allclose(result.heatmap[::32, ::32], smoothed, atol=1e-5)


def test_bilinear_upsampling_interpolates_between_patch_centres():
    grid = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    size = 12
    up = upsample_grid(grid, size, "bilinear")

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # pixel centre p -> patch coordinate (p + 0.5) n / S - 0.5, clamped at the edges
        g = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        lo = np.floor(g).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, g - lo

    r0, r1, fr = axis(3)
    c0, c1, fc = axis(4)
    top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c1] * fc
    bottom = grid[r1][:, c0] * (1 - fc) + grid[r1][:, c1] * fc
    expected = top * (1 - fr[:, None]) + bottom * fr[:, None]
    np.testing.assert_allclose(up, expected, atol=1e-6)
    np.testing.assert_array_equal(upsample_grid(grid[:2, :2], 8, "nearest"), np.kron(grid[:2, :2], np.ones((4, 4))))


def test_wired_dual_encoder_peaks_where_its_patches_match_the_prompt(tmp_path):
    adapter = load_tiny_adapter(save_tiny_dual_encoder("clip", tmp_path / "wired", seed=4))
    positive, _, _ = adapter._prompt_embeddings("mass")
    grid = adapter.geometry.patch_grid[0]
    inside = torch.zeros(grid, grid, dtype=torch.bool)
    inside[1:3, 4:6] = True  # rows 1-2, cols 4-5: working pixels x 128..192, y 32..96
    inside = inside.flatten()
    rng = torch.Generator().manual_seed(0)

    def wire(module, args, output):
        if output.ndim != 3:  # the CLS embedding: left alone
            return output
        noise = torch.randn(output.shape, generator=rng) * 0.1
        far = -positive + noise  # outside: pointing away from the prompt
        return torch.where(inside[None, :, None], positive + noise, far)

    adapter.model.visual_projection.register_forward_hook(wire)
    result = attribute(adapter, image(5), QUESTION, method="similarity_map", answer="Yes", sigma=0.0)
    rows, cols = np.nonzero(result.heatmap == result.heatmap.max())
    assert rows.min() >= 32 and rows.max() < 96 and cols.min() >= 128 and cols.max() < 192
    assert result.grid.reshape(-1)[inside.numpy()].min() > 0.9 > result.grid.reshape(-1)[~inside.numpy()].max()


def test_models_without_a_joint_space_are_refused_before_any_pass(tiny_qwen_adapter):
    tiny_qwen_adapter.counter.reset()
    with pytest.raises(ModelCapabilityError, match="similarity_map.*EmbeddingSurface"):
        attribute(tiny_qwen_adapter, image(), QUESTION, method="similarity_map")
    assert tiny_qwen_adapter.counter.as_dict() == dict.fromkeys(tiny_qwen_adapter.counter.as_dict(), 0)


@pytest.mark.parametrize("params", [{"sigma": -1.0}, {"sigma": "wide"}, {"upsample": "cubic"}, {"zoom": 2}])
def test_bad_parameters_are_refused_before_the_model_loads(params):
    with pytest.raises(MethodParameterError):
        attribute("no-such-model-folder", image(), QUESTION, method="similarity_map", **params)
