"""Occlusion on tiny real-class models: right tile, right pass count, conformance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cxr_attrib import attribute
from cxr_attrib.cli import cli
from cxr_attrib.testing import check_method
from cxr_attrib.testing.tiny_models import wired_adapter
from cxr_attrib_plugins.occlusion import tile_mask

Q = "Is there evidence of nodule in the image?"
REGION = (140.0, 56.0, 168.0, 84.0)  # one 28-px token cell = occlusion tile (row 2, col 5)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "gemma3"])
def wired(request):
    return wired_adapter(request.param, REGION)


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(60, 255, size=(224, 224), dtype=np.uint8)


def test_occlusion_peaks_on_the_decisive_tile_and_nowhere_else(wired):
    result = attribute(wired, _image(), Q, method="occlusion", answer="Yes")
    heat = np.abs(result.heatmap)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert REGION[0] <= x < REGION[2] and REGION[1] <= y < REGION[3]
    outside = np.ones_like(heat, dtype=bool)
    outside[56:84, 140:168] = False
    assert heat[~outside].min() > 1e-3, "hiding the decisive tile changes the answer"
    assert heat[outside].max() < 1e-5, "tiles the model cannot see have no effect"


def test_occlusion_makes_65_sequences_in_one_batch(wired):
    result = attribute(wired, _image(), Q, method="occlusion", answer="Yes")
    assert result.meta.passes["forward_sequences"] == 65
    assert result.meta.passes["forward_calls"] == 1
    assert result.meta.passes["backward_calls"] == 0
    small = attribute(wired, _image(), Q, method="occlusion", answer="Yes", batch_size=16)
    assert small.meta.passes["forward_calls"] == 4 and small.meta.passes["forward_sequences"] == 68
    np.testing.assert_allclose(small.heatmap, result.heatmap, atol=1e-5)


def test_tile_mask_covers_every_pixel_once():
    mask = tile_mask(224, 8)
    assert np.bincount(mask.ravel()).tolist() == [28 * 28] * 64
    odd = tile_mask(10, 3)
    assert sorted(set(odd.ravel())) == list(range(9))


@pytest.mark.parametrize("method, params", [("whole_image", {}), ("center", {})])  # model methods: test_sanity.py
def test_builtin_methods_conform(tiny_qwen_adapter, method, params):
    check_method(method, tiny_qwen_adapter, params=params)


def test_cli_attribute_end_to_end_on_a_saved_model_folder(tiny_model_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "cxr.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8)).save(image)
    folder = tiny_model_dir("qwen2_5_vl")
    out = tmp_path / "overlay.png"
    result = CliRunner().invoke(cli, ["attribute", str(image), "-q", Q, "-m", str(folder), "--method", "occlusion",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] >= 200
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["meta"]["method"] == "occlusion" and data["meta"]["image_size"] == [300, 200]
    assert data["heatmap"]["shape"] == [300, 200]
    assert data["meta"]["passes"]["forward_sequences"] == 65
