"""Every faithfulness score lies in its stated range, whatever the model and the map.

Hypothesis draws maps (noise, blocks, constants, huge and tiny values) and scores
them on fakes (one of them more "yes" on the empty image than on the original), the
tiny models of both real classes and the two embedded phantom models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_faithfulness import QUERY, REGION, RegionAdapter

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.scoring.faithfulness import faithfulness

UNIT = ("deletion_auc", "insertion_auc", "random_auc")
SIGNED = ("deletion_gain", "insertion_gain", "morf_lerf")


class DarkIsYesAdapter(RegionAdapter):
    """log p(yes) = log sigmoid(6 - 12 * mean of the image): the blanked image is MORE "yes"."""

    def score(self, images: Sequence[np.ndarray], query: Query, *, batch_size: int | None = None) -> torch.Tensor:
        means = torch.tensor([float(np.mean(image)) for image in images], dtype=torch.float64)
        self.counter.forward_calls += 1
        self.counter.forward_sequences += len(images)
        return torch.nn.functional.logsigmoid(6.0 - 12.0 * means)[:, None].to(torch.float32)


def _maps(size: int) -> st.SearchStrategy[np.ndarray]:
    def build(kind: str, seed: int, scale: float) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if kind == "noise":
            return rng.normal(size=(size, size)) * scale
        if kind == "blocks":
            cells = rng.random((4, 4)) * scale
            return np.kron(cells, np.ones((size // 4, size // 4)))
        return np.full((size, size), scale)

    return st.builds(build, st.sampled_from(["noise", "blocks", "constant"]), st.integers(0, 2**16),
                     st.sampled_from([1e-30, 1.0, 1e12, -3.0]))


def _assert_bounded(adapter: Adapter, image: np.ndarray, heat: np.ndarray, query: Query, seed: int) -> None:
    curves, drop = faithfulness(adapter, image, query, heat, steps=4, n=2, seed=seed)
    for name in UNIT:
        assert 0.0 <= getattr(curves, name) <= 1.0, (name, getattr(curves, name))
    for name in SIGNED:
        assert -1.0 <= getattr(curves, name) <= 1.0, (name, getattr(curves, name))
    for value in (drop.top_drop, drop.random_drop, drop.gain):
        assert -1.0 <= value <= 1.0
    assert 0.0 <= drop.beats_random <= 1.0
    assert curves.deletion_gain == pytest.approx(curves.random_auc - curves.deletion_auc)


def test_the_dark_model_is_more_yes_on_the_empty_image() -> None:
    adapter = DarkIsYesAdapter(REGION)
    image = np.full((16, 16), 0.6, dtype=np.float32)
    full, empty = adapter.score([image, np.zeros_like(image)], QUERY)[:, 0].tolist()
    assert empty > full  # the case that drove the old normalised AUCs out of range


@settings(max_examples=25)
@given(heat=_maps(16), seed=st.integers(0, 1000), dark=st.booleans(), level=st.floats(0.0, 1.0))
def test_fakes_stay_in_range(heat: np.ndarray, seed: int, dark: bool, level: float) -> None:
    adapter = DarkIsYesAdapter(REGION) if dark else RegionAdapter(REGION)
    image = np.full((16, 16), level, dtype=np.float32)
    image[REGION[1]:REGION[3], REGION[0]:REGION[2]] = 1.0
    _assert_bounded(adapter, image, heat, QUERY, seed)


def _phantom_image() -> np.ndarray:
    from cxr_attrib_phantom.benchmark import phantom_sample

    pixels = np.asarray(phantom_sample(10_000_003, "pleural_effusion").load_image(), dtype=np.float32)
    return pixels / 255.0


MODELS = ["tiny_qwen_adapter", "tiny_gemma_adapter", "phantom-qwen", "phantom-gemma"]


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> Adapter:
    if request.param.startswith("tiny"):
        return request.getfixturevalue(request.param)
    from cxr_attrib.models import load_adapter

    return load_adapter(request.param)


@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(heat=_maps(224), seed=st.integers(0, 1000), answer=st.sampled_from(["Yes", "No"]))
def test_real_classes_stay_in_range(model: Adapter, heat: np.ndarray, seed: int, answer: str) -> None:
    query = Query(question="Is there evidence of pleural effusion in the image?", mode="direct",
                  prompt=QUERY.prompt.replace("nodule", "pleural effusion"), answer=answer)
    _assert_bounded(model, _phantom_image(), heat, query, seed)
