"""The worked adapter of docs/adapter-guide.md, executed: registered by key, black-box methods run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cxr_attrib import attribute
from cxr_attrib.errors import ModelCapabilityError
from cxr_attrib.models import clear_adapter_cache, load_adapter

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "example_adapter" / "cxr_attrib_toy_adapter.py"
Q = "Is there evidence of nodule in the image?"


@pytest.fixture
def toy(registered_plugin):
    spec = importlib.util.spec_from_file_location("cxr_attrib_toy_adapter", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registered_plugin(module)
    clear_adapter_cache()
    yield load_adapter("toy_quarter")
    clear_adapter_cache()


def quarter_image() -> np.ndarray:
    image = np.full((128, 160), 40, np.uint8)
    image[:64, :80] = 250  # the upper-left quarter of the (resize-padded) working frame
    return image


def test_the_guide_shows_the_worked_adapter_verbatim():
    assert SOURCE.read_text() in (ROOT / "docs" / "adapter-guide.md").read_text()


def test_the_registry_key_reaches_load(toy):
    assert toy.name == "toy_quarter" and toy.family == "toy"


def test_occlusion_finds_the_quarter_in_one_call(toy):
    result = attribute(toy, quarter_image(), Q, method="occlusion", tiles=4)
    assert result.answer == "Yes" and result.meta.passes["forward_calls"] == 1
    heat = result.heatmap
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert peak[0] < 64 and peak[1] < 80, peak
    # exact zero: hiding a tile outside the quarter changes nothing the toy reads
    assert heat[72:, :].max() == 0 and heat.max() > 0


@pytest.mark.parametrize("method", ["medfocus", "rise", "whole_image", "center", "anatomy_prior"])
def test_the_black_box_methods_run(toy, method):
    params = {"n_masks": 8} if method == "rise" else {}
    result = attribute(toy, quarter_image(), Q, method=method, answer="Yes", **params)
    assert result.meta.model == "toy_quarter"


def test_a_gradient_method_is_refused_before_any_pass(toy):
    toy.counter.reset()
    with pytest.raises(ModelCapabilityError, match=r"needs the adapter surface GradientSurface .* model 'toy_quarter'"):
        attribute(toy, quarter_image(), Q, method="gradcam")
    assert set(toy.counter.as_dict().values()) == {0}
