"""RISE: the estimator by hand, its masks, its seeding, its passes and its bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_attrib import attribute
from cxr_attrib.adapter import Query
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.method import MethodRequest
from cxr_attrib.registry import get_method
from cxr_attrib_plugins.rise import Rise, draw_grids, expand_masks

Q = "Is there evidence of nodule in the image?"
QUERY = Query(Q, "direct", Q, "Yes")


class FakeScorer:
    """Implements only ``score``: log-prob = log(prob(image)), one target token; logs every call."""

    def __init__(self, prob):
        self.prob = prob
        self.calls: list[np.ndarray] = []

    def score(self, images, query, *, batch_size=None):
        batch = np.stack([np.asarray(i, dtype=np.float64) for i in images])
        self.calls.append(batch)
        return torch.from_numpy(np.log([self.prob(x) for x in batch]))[:, None].float()


def _request(image, adapter, seed=0, **params):
    image = np.asarray(image, dtype=np.float32)
    return MethodRequest(
        adapter=adapter, image=image, content_mask=np.ones(image.shape, bool), query=QUERY,
        params={**Rise.defaults, **params}, seed=seed,
    )


def test_rise_is_registered_with_the_paper_defaults():
    assert get_method("rise") is Rise
    assert dict(Rise.defaults) == {"n_masks": 500, "cells": 8, "p": 0.5, "smooth": True, "fill": "zero",
                                   "batch_size": 64}


@pytest.mark.parametrize("smooth", [True, False])
def test_estimator_equals_a_direct_numpy_computation(smooth):
    """sum_i (P_i / P_0) M_i / (N p), with M_i recovered from the images the scorer saw."""
    image = np.random.default_rng(1).uniform(0.5, 1.0, (40, 40))
    scorer = FakeScorer(lambda x: 0.05 + 0.9 * x[5:15, 20:30].mean())
    n, p, batch = 23, 0.3, 5
    out = Rise().attribute(_request(image, scorer, n_masks=n, p=p, cells=4, batch_size=batch, smooth=smooth))
    assert [len(c) for c in scorer.calls] == [5, 5, 5, 5, 4]  # ceil(24 / 5) calls, original in the first
    seen = np.concatenate(scorer.calls)
    np.testing.assert_allclose(seen[0], image.astype(np.float32))
    masks = seen[1:] / image.astype(np.float32)  # zero fill: masked image = mask * image
    assert masks.shape == (n, 40, 40) and masks.min() >= -1e-6 and masks.max() <= 1 + 1e-6
    probs = np.array([0.05 + 0.9 * x[5:15, 20:30].mean() for x in seen[1:]])
    p0 = 0.05 + 0.9 * seen[0, 5:15, 20:30].mean()
    expected = (probs[:, None, None] / p0 * masks).sum(0) / (n * p)
    np.testing.assert_allclose(out.heatmap, expected, rtol=1e-5, atol=1e-6)
    assert out.info["original_logprob"] == pytest.approx(np.log(p0), rel=1e-6)


def test_mean_fill_blends_towards_the_image_mean():
    image = np.random.default_rng(2).uniform(0.0, 1.0, (24, 24))
    scorer = FakeScorer(lambda x: 0.5)
    Rise().attribute(_request(image, scorer, n_masks=6, cells=3, fill="mean", smooth=False))
    masked = scorer.calls[0][1:]
    grey = image.astype(np.float32).mean()
    kept = np.isclose(masked, image.astype(np.float32), atol=1e-6)
    filled = np.isclose(masked, grey, atol=1e-6)
    assert np.all(kept | filled) and filled.any() and kept.any()


def test_hard_tiles_give_the_hand_computed_expectation():
    """P = 0.05 + 0.9 * (pixel (3, 20) kept), so P_0 = 0.95. On that pixel's tile the map is exactly
    (0.95 / 0.95) K / (N p), K the masks that keep it (about 1); elsewhere it estimates
    E[P] E[M] / (p P_0) = (0.05 + 0.9 p) / 0.95 = 0.5 / 0.95."""
    scorer = FakeScorer(lambda x: 0.05 + 0.9 * x[3, 20])
    out = Rise().attribute(_request(np.ones((32, 32)), scorer, n_masks=4000, cells=4, p=0.5, smooth=False,
                                    batch_size=4001))
    tile = np.zeros((32, 32), bool)
    tile[0:8, 16:24] = True
    kept = int(sum(batch[1:, 3, 20].sum() for batch in scorer.calls))
    np.testing.assert_allclose(out.heatmap[tile], kept / (4000 * 0.5), rtol=1e-6)
    assert abs(kept / 4000 - 0.5) < 0.03
    assert abs(out.heatmap[~tile].mean() - 0.5 / 0.95) < 0.02
    assert np.abs(out.heatmap[~tile] - 0.5 / 0.95).max() < 0.08  # 4000 masks: sd of each tile's estimate ~0.012


def test_hard_masks_are_binary_tiles_on_the_occlusion_grid():
    grids, _ = draw_grids(np.random.default_rng(0), 50, 4, 0.5, 32)
    masks = expand_masks(grids, np.zeros((50, 2), int), 32, smooth=False).numpy()
    assert set(np.unique(masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(masks[:, ::8, ::8], grids)
    np.testing.assert_array_equal(masks, np.repeat(np.repeat(grids, 8, axis=1), 8, axis=2))


def test_smooth_masks_interpolate_cells_and_shift_them():
    ones = expand_masks(np.ones((1, 8, 8), np.float32), np.array([[5, 9]]), 224).numpy()
    # bilinear weights of a constant sum to 1 up to float32 rounding (a few ulps)
    np.testing.assert_allclose(ones, 1.0, rtol=0, atol=1e-6)
    grids, shifts = draw_grids(np.random.default_rng(0), 400, 8, 0.3, 224)
    assert shifts.min() == 0 and shifts.max() == 27  # offsets in [0, ceil(224 / 8))
    masks = expand_masks(grids, shifts, 224).numpy()
    assert masks.shape == (400, 224, 224) and masks.min() >= 0.0 and masks.max() <= 1.0
    assert abs(masks.mean() - 0.3) < 0.02
    assert 0.1 < np.mean((masks > 0.01) & (masks < 0.99)) < 0.9  # soft edges, not tiles
    same_grid = np.repeat(grids[:1], 2, axis=0)
    a, b = expand_masks(same_grid, np.array([[0, 0], [14, 3]]), 224).numpy()
    assert not np.allclose(a, b)
    up = torch.nn.functional.interpolate(torch.from_numpy(grids[:1])[:, None], size=(252, 252), mode="bilinear")
    # the same interpolation at another batch size: float32 rounding at most (values in [0, 1])
    np.testing.assert_allclose(b, up[0, 0, 14:238, 3:227].numpy(), rtol=0, atol=1e-6)


def test_same_seed_same_map_other_seed_other_map(tiny_qwen_adapter):
    image = np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8)
    run = lambda seed: attribute(tiny_qwen_adapter, image, Q, method="rise", answer="Yes", seed=seed,  # noqa: E731
                                 n_masks=12, batch_size=13).heatmap
    first, again, other = run(0), run(0), run(1)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_calls_are_ceil_of_masks_plus_one_over_batch_and_batching_does_not_change_the_map(tiny_gemma_adapter):
    image = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    maps = {}
    for batch in (7, 21, 64):
        result = attribute(tiny_gemma_adapter, image, Q, method="rise", answer="Yes", n_masks=20, batch_size=batch)
        passes = result.meta.passes
        assert passes["forward_calls"] == math.ceil(21 / batch) and passes["forward_sequences"] == 21
        assert passes["backward_calls"] == 0
        maps[batch] = result.heatmap
    np.testing.assert_allclose(maps[7], maps[64], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(maps[21], maps[64], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"n_masks": 0}, "n_masks"), ({"n_masks": 2.5}, "n_masks"), ({"n_masks": True}, "n_masks"),
        ({"p": 0.0}, "p (keep probability)"), ({"p": 1.0}, "p (keep probability)"), ({"p": -0.2}, "p"),
        ({"cells": 0}, "cells"), ({"cells": 41}, "cells"), ({"batch_size": 0}, "batch_size"),
        ({"smooth": "yes"}, "smooth"), ({"fill": "plaid"}, "fill"), ({"fill": 2.0}, "fill"),
    ],
)
def test_bad_parameters_name_themselves_and_the_range_before_any_pass(params, named):
    scorer = FakeScorer(lambda x: 0.5)
    with pytest.raises(MethodParameterError, match=r"rise: " + named.replace("(", r"\(").replace(")", r"\)")) as info:
        Rise().attribute(_request(np.ones((40, 40)), scorer, **params))
    assert scorer.calls == []
    message = str(info.value)
    if named == "cells":
        assert "[1, 40]" in message
    if named.startswith("p"):
        assert "(0, 1)" in message


@settings(max_examples=25)
@given(
    cells=st.integers(1, 12), size=st.integers(12, 40), p=st.floats(0.05, 0.95),
    smooth=st.booleans(), seed=st.integers(0, 2**16),
)
def test_masks_lie_in_the_unit_interval_with_the_frame_shape(cells, size, p, smooth, seed):
    grids, shifts = draw_grids(np.random.default_rng(seed), 3, cells, p, size)
    assert shifts.min() >= 0 and shifts.max() < math.ceil(size / cells)
    masks = expand_masks(grids, shifts, size, smooth=smooth).numpy()
    assert masks.shape == (3, size, size) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    if not smooth:
        assert set(np.unique(masks)) <= {0.0, 1.0}
