"""integrated_gradients, gradcam and gradcampp on tiny real-class models of both families.

Values, not just shapes: IG completeness at 64 steps, IG exactly zero where the wired
model cannot see, Grad-CAM blank at the last decoder layer (no gradient reaches its
image tokens) and not at the default layer, one forward and one backward per Grad-CAM,
the weighting rules by hand, and every bad parameter refused before any model pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import ForwardResult, Geometry, GradientSurface, PassCounter, Query, Scorer
from cxr_attrib.errors import MethodParameterError, ModelCapabilityError
from cxr_attrib.frames import cells_to_working
from cxr_attrib.method import MethodRequest
from cxr_attrib.testing import check_method, wired_adapter
from cxr_attrib.hf import HFAdapter
from cxr_attrib_plugins.gradcam import GradCAM, gradcam_weights
from cxr_attrib_plugins.gradcampp import gradcampp_weights

Q = "Is there evidence of nodule in the image?"
FAMILIES = ["qwen2_5_vl", "gemma3"]
REGION = (112, 56, 224, 168)  # 4 x 4 token cells on the right


@pytest.fixture(params=FAMILIES)
def tiny(request: pytest.FixtureRequest):
    return request.getfixturevalue("tiny_qwen_adapter" if request.param == "qwen2_5_vl" else "tiny_gemma_adapter")


@pytest.fixture(scope="module", params=FAMILIES)
def wired(request: pytest.FixtureRequest):
    return wired_adapter(request.param, REGION)


def _image(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 255, size=(224, 224), dtype=np.uint8)


@pytest.mark.parametrize(
    ("method", "params"),
    [("integrated_gradients", {"steps": 3, "internal_batch_size": 2}), ("gradcam", {}), ("gradcampp", {"layer": 0})],
)
def test_conformance(tiny, method, params):
    results = check_method(method, tiny, params=params)
    assert all(r.meta.passes["backward_calls"] >= 1 for r in results)


def test_integrated_gradients_is_complete_at_64_steps(wired):
    result = attribute(wired, _image(), Q, method="integrated_gradients", answer="Yes", steps=64,
                       internal_batch_size=32)
    info = result.meta.info
    change = info["target_image"] - info["target_baseline"]
    print(f"{wired.family}: F(x) - F(black) = {change:.5f} nats, sum = {info['attribution_sum']:.5f}, "
          f"delta = {info['convergence_delta']:.2e} ({info['relative_delta']:.2%})")
    assert abs(change) > 0.05, "the wired region must matter for the test to mean anything"
    assert abs(info["attribution_sum"] - change) <= 0.05 * abs(change)
    assert info["convergence_delta"] == pytest.approx(info["attribution_sum"] - change, abs=1e-6)
    assert float(result.heatmap.sum()) == pytest.approx(info["attribution_sum"], rel=1e-4)
    x1, y1, x2, y2 = REGION
    outside = result.heatmap.copy()
    outside[y1:y2, x1:x2] = 0
    assert np.abs(outside).max() == 0, "pixels the model cannot see get exactly nothing"
    passes = result.meta.passes
    assert (passes["backward_calls"], passes["backward_sequences"]) == (2, 64)
    assert (passes["forward_calls"], passes["forward_sequences"]) == (3, 66)  # 2 x 32 steps, both ends


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_integrated_gradients_baselines_are_the_path_start(tiny, baseline):
    result = attribute(tiny, _image(), Q, method="integrated_gradients", answer="Yes", steps=2, baseline=baseline)
    info = result.meta.info
    assert info["baseline"] == baseline
    black = attribute(tiny, _image(), Q, method="integrated_gradients", answer="Yes", steps=2)
    assert info["target_image"] == pytest.approx(black.meta.info["target_image"], abs=1e-6)
    assert info["target_baseline"] != pytest.approx(black.meta.info["target_baseline"], abs=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_last_decoder_layer_map_is_blank_and_the_default_is_not(tiny, method):
    last = attribute(tiny, _image(), Q, method=method, answer="Yes", layer=-1)
    default = attribute(tiny, _image(), Q, method=method, answer="Yes")
    assert last.meta.info["layer"] == len(tiny.decoder_layers()) - 1
    assert np.all(last.heatmap == 0) and np.all(last.grid == 0)
    assert default.meta.info["layer"] == tiny.default_layer % len(tiny.decoder_layers())
    assert default.heatmap.max() > 0 and np.count_nonzero(default.grid) > 1


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
@pytest.mark.parametrize("layer", [None, 0, "vision"])
def test_grad_cam_is_one_forward_and_one_backward(tiny, method, layer):
    result = attribute(tiny, _image(), Q, method=method, answer="Yes", layer=layer)
    assert dict(result.meta.passes) == {
        "forward_calls": 1, "forward_sequences": 1, "backward_calls": 1, "backward_sequences": 1, "generate_calls": 0,
    }
    assert result.heatmap.min() >= 0 and result.heatmap.max() > 0
    assert (result.grid is None) == (layer == "vision")


def test_gradcam_weights_average_the_gradient_over_positions():
    gradients = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [2.0, 2.0]]])
    assert gradcam_weights(torch.zeros(1, 3, 2), gradients).tolist() == [[2.0, 0.0]]


def test_gradcampp_weights_by_hand():
    activations = torch.tensor([[[1.0, 2.0], [0.5, 0.0]]])
    gradients = torch.tensor([[[2.0, 0.0], [-1.0, 0.0]]])
    # channel 0: sum_n A g^3 = 1 * 8 + 0.5 * -1 = 7.5; alpha = g^2 / (2 g^2 + 7.5)
    # w_0 = 4 / 15.5 * relu(2) + 1 / 9.5 * relu(-1); channel 1: no gradient, weight 0
    expected = torch.tensor([[4 / 15.5 * 2, 0.0]])
    torch.testing.assert_close(gradcampp_weights(activations, gradients), expected)
    # with one position and A = 0 it reduces to relu(g) / 2
    torch.testing.assert_close(
        gradcampp_weights(torch.zeros(1, 1, 3), torch.tensor([[[1.0, -1.0, 4.0]]])), torch.tensor([[0.5, 0.0, 2.0]])
    )


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("integrated_gradients", {"steps": 0}, r"'steps' = 0 is invalid; expected an integer in \[1, "),
        ("integrated_gradients", {"internal_batch_size": 0}, r"'internal_batch_size' = 0 is invalid; expected an integer in \[1, "),
        ("integrated_gradients", {"steps": 2.5}, r"'steps' = 2.5 is invalid; expected an integer"),
        ("integrated_gradients", {"baseline": "white"}, r"'baseline' = 'white' is invalid; expected one of 'black', 'blur', 'mean'"),
        ("gradcam", {"layer": 2}, r"'layer' must be .* index in \[-2, 1\], got 2"),
        ("gradcampp", {"layer": -3}, r"'layer' must be .* index in \[-2, 1\], got -3"),
        ("gradcam", {"layer": "text"}, r"'layer' = 'text' is invalid; expected one of 'vision' or an integer or None"),
    ],
)
def test_bad_parameters_fail_before_any_model_pass(tiny, method, params, message):
    tiny.counter.reset()
    with pytest.raises(MethodParameterError, match=message):
        attribute(tiny, _image(), Q, method=method, **params)  # no answer: would generate first
    assert set(tiny.counter.as_dict().values()) == {0}


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam", "gradcampp"])
def test_a_model_without_gradient_support_is_refused_before_any_pass(tiny, method, monkeypatch):
    monkeypatch.setattr(HFAdapter, "supports_gradients", property(lambda self: False))
    tiny.counter.reset()
    with pytest.raises(ModelCapabilityError, match=rf"method '{method}' needs gradients, but the weights of model .* carry none"):
        attribute(tiny, _image(), Q, method=method)
    assert set(tiny.counter.as_dict().values()) == {0}


class _ScoreOnly(Scorer):
    """A model with no gradient surface: only the black-box side of the contract."""

    family = "score_only"

    def encode(self, images, query):
        raise AssertionError("no model pass may run")

    def score(self, images, query, *, batch_size=None):
        raise AssertionError("no model pass may run")

    def generate(self, image, prompt, *, max_new_tokens=256):
        raise AssertionError("no model pass may run")


def test_a_scorer_without_gradient_surface_is_refused():
    with pytest.raises(ModelCapabilityError, match=r"method 'gradcam' needs the adapter surface GradientSurface .*'score-only'"):
        attribute(_ScoreOnly("score-only"), _image(), Q, method="gradcam")


class _LinearSurface(GradientSurface):
    """Hidden states A (1, L, D) of one decoder layer, target = sum over image rows of A @ c.

    The gradient at every image row is c, so Grad-CAM's weights are c and its map is
    ReLU(A[n] @ c) per image token; rows outside the image carry large values that a
    method reading the wrong positions would pick up.
    """

    def __init__(self, hidden: torch.Tensor, image_positions: torch.Tensor, c: torch.Tensor) -> None:
        self.hidden, self.positions, self.c = hidden, image_positions, c
        self.counter = PassCounter()

    @property
    def geometry(self) -> Geometry:
        return Geometry(4, (4, 4), 2, (2, 2), (2, 2), (1, 1), torch.arange(4))

    def decoder_layers(self):
        return [torch.nn.Identity()] * 3

    def forward(self, images, query, *, hidden=(), vision=(), grad=False):
        states = self.hidden.clone().requires_grad_(True)
        states.retain_grad()
        logprobs = (states[:, self.positions] @ self.c).sum(1, keepdim=True)
        return ForwardResult(logprobs, {i: states for i in hidden}, {}, self.positions, torch.tensor([0]))

    def to_working(self, values, space, reduce):
        assert (space, reduce) == ("token", "mean")
        return cells_to_working(values.reshape(-1, 2, 2), 4, reduce)

    def pixel_inputs(self, images):
        raise AssertionError("not used")

    def pixel_values(self, images):
        raise AssertionError("not used")

    def vision_layers(self):
        raise AssertionError("not used")


def test_grad_cam_map_by_hand_on_a_linear_surface():
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, -4.0], [0.5, 0.5], [-1.0, 0.0], [9.0, -9.0]]])
    surface = _LinearSurface(hidden, torch.tensor([1, 2, 3, 4]), c=torch.tensor([2.0, 1.0]))
    request = MethodRequest(
        adapter=surface, image=np.zeros((4, 4), np.float32), content_mask=np.ones((4, 4), bool),
        query=Query(Q, "direct", Q, "Yes", "answer"), params={"layer": 1},
    )
    out = GradCAM().attribute(request)
    # A[n] @ c over the image rows: 4, 2, 1.5, -2 -> ReLU
    np.testing.assert_allclose(out.grid, [[4.0, 2.0], [1.5, 0.0]])
    np.testing.assert_allclose(out.heatmap, np.kron([[4.0, 2.0], [1.5, 0.0]], np.ones((2, 2))))
    assert out.info["layer"] == 1
