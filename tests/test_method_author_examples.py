"""The method-author reference's examples (CONTRIBUTING.md) run, conform and are right."""

from __future__ import annotations

import numpy as np
import pytest
from example_methods import CentreOcclusion, GradientTimesInput

from cxr_attrib import attribute, hookimpl
from cxr_attrib.testing import check_method, wired_adapter


class ExamplePlugin:
    @staticmethod
    @hookimpl
    def register_methods(register):
        register(CentreOcclusion)
        register(GradientTimesInput)


@pytest.fixture
def examples(registered_plugin):
    registered_plugin(ExamplePlugin)


@pytest.mark.parametrize("method", ["centre_occlusion", "gradient_x_input"])
def test_examples_pass_the_conformance_suite(examples, tiny_qwen_adapter, method):
    check_method(method, tiny_qwen_adapter)


def test_centre_occlusion_sees_only_a_region_it_covers(examples):
    image = np.full((224, 224), 200, np.uint8)
    inside = wired_adapter("qwen2_5_vl", (84, 84, 140, 140))  # 2 x 2 token cells at the centre
    outside = wired_adapter("qwen2_5_vl", (0, 0, 56, 56))  # top-left corner
    hit = attribute(inside, image, "Is there evidence of nodule in the image?", method="centre_occlusion",
                    answer="Yes", side=0.5)
    miss = attribute(outside, image, "Is there evidence of nodule in the image?", method="centre_occlusion",
                     answer="Yes", side=0.5)
    assert np.any(hit.heatmap != 0) and not np.any(miss.heatmap != 0)
    assert hit.boxes == ((56.0, 56.0, 168.0, 168.0),)
    assert dict(hit.meta.passes)["forward_calls"] == 1 and dict(hit.meta.passes)["forward_sequences"] == 2


def test_gradient_example_is_zero_outside_the_wired_region(examples):
    adapter = wired_adapter("gemma3", (0, 0, 112, 112))  # top-left quarter drives the answer
    image = np.random.default_rng(0).integers(1, 256, (224, 224), dtype=np.uint8)
    result = attribute(adapter, image, "Is there evidence of nodule in the image?", method="gradient_x_input",
                       answer="Yes")
    heat = result.heatmap
    assert heat[:112, :112].sum() > 0 and np.all(heat[:, 112:] == 0) and np.all(heat[112:, :] == 0)
    assert dict(result.meta.passes)["backward_calls"] == 1
