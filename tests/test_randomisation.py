"""The model-randomisation helpers: what is re-drawn, what is left alone, the correlation."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.testing import randomisation_curve, rank_correlation, randomised_copy


def test_cascade_redraws_only_the_top_layers_and_never_the_original(tiny_qwen_adapter):
    original = {n: p.detach().clone() for n, p in tiny_qwen_adapter.model.named_parameters()}
    one = randomised_copy(tiny_qwen_adapter, 1, seed=3)
    two = randomised_copy(tiny_qwen_adapter, 2, seed=3)
    for name, param in tiny_qwen_adapter.model.named_parameters():
        assert param.equal(original[name]), f"{name} of the shared adapter changed"
    top, below = (f"language_model.layers.{i}." for i in (1, 0))
    for name, param in one.model.named_parameters():
        moved = not param.equal(original[name])
        constant = original[name].numel() > 1 and float(original[name].std()) == 0.0
        assert moved == (top in name and not constant), name
        if top in name and not constant:  # a re-drawn tensor keeps its trained scale
            assert abs(float(param.std()) / float(original[name].std()) - 1) < 0.35, name
    twos = dict(two.model.named_parameters())
    for name, param in one.model.named_parameters():
        if top in name:  # depth 2 is depth 1 plus one more layer
            assert param.equal(twos[name]), name
        elif below in name and float(original[name].std()) > 0:
            assert not twos[name].equal(original[name]), name


def test_depth_outside_the_layers_is_refused(tiny_gemma_adapter):
    with pytest.raises(MethodParameterError, match=r"depth must be an integer in \[0, 2\]"):
        randomised_copy(tiny_gemma_adapter, 3)


def test_rank_correlation_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert rank_correlation(a, a ** 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4) vs (2, 1, 4, 3): 1 - 6 * 4 / (4 * 15) = 0.6
    assert rank_correlation(a, np.array([[2.0, 1.0], [4.0, 3.0]])) == pytest.approx(0.6)
    assert rank_correlation(a, np.ones((2, 2))) == 0.0


def test_same_seed_compares_a_map_with_itself_and_another_seed_draws_new_samples(tiny_qwen_adapter):
    items = [(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), "Is there evidence of nodule?")]
    params = {"n_masks": 8, "batch_size": 9}
    same = randomisation_curve(tiny_qwen_adapter, "rise", items, params=params, depths=[0])
    other = randomisation_curve(tiny_qwen_adapter, "rise", items, params=params, depths=[0], compare_seed=1)
    assert same == {0: 1.0}
    assert other[0] < 0.99
