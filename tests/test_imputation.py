"""Noisy linear imputation (ROAD): exact on what a linear fill must reproduce, and as a scorer fill."""

from __future__ import annotations

import numpy as np
import pytest
from test_faithfulness import QUERY, REGION, RegionAdapter

from cxr_attrib.errors import DataError
from cxr_attrib.imputation import noisy_linear_impute
from cxr_attrib.perturb import check_removal_fill, pixel_remover
from cxr_attrib.scoring.faithfulness import deletion_insertion


def _square(size: int = 32, lo: int = 10, hi: int = 22) -> np.ndarray:
    hole = np.zeros((size, size), dtype=bool)
    hole[lo:hi, lo:hi] = True
    return hole


def test_a_constant_image_stays_constant() -> None:
    image = np.full((32, 32), 0.37)
    removed = np.random.default_rng(1).random((32, 32)) < 0.6
    np.testing.assert_allclose(noisy_linear_impute(image, removed, noise=0.0), image, atol=1e-6)
    noisy = noisy_linear_impute(image, removed, noise=0.01, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(noisy[~removed], np.float32(0.37))
    assert abs(noisy[removed].mean() - 0.37) < 0.002 and noisy[removed].std() == pytest.approx(0.01, rel=0.1)


def test_a_linear_ramp_is_reproduced_inside_a_removed_square() -> None:
    rows, cols = np.mgrid[0:32, 0:32]
    ramp = 0.1 + 0.012 * rows + 0.015 * cols  # in [0.1, 0.93]
    hole = _square()
    filled = noisy_linear_impute(ramp, hole, noise=0.0)
    np.testing.assert_allclose(filled[hole], ramp[hole], atol=1e-6)


def test_padding_is_neither_used_nor_filled() -> None:
    image = np.full((16, 16), 0.8)
    image[:, :4] = 0.0  # padding columns
    valid = np.ones((16, 16), dtype=bool)
    valid[:, :4] = False
    removed = np.zeros((16, 16), dtype=bool)
    removed[:, :8] = True  # touches the padding
    filled = noisy_linear_impute(image, removed, valid=valid, noise=0.0)
    np.testing.assert_allclose(filled[:, 4:], 0.8, atol=1e-6)  # not pulled towards the black padding
    np.testing.assert_array_equal(filled[:, :4], 0.0)


def test_a_region_with_no_known_neighbour_takes_the_mean() -> None:
    image = np.linspace(0.0, 1.0, 64).reshape(8, 8)
    everything = np.ones((8, 8), dtype=bool)
    np.testing.assert_allclose(noisy_linear_impute(image, everything, noise=0.0), image.mean(), atol=1e-6)


def test_noise_is_seeded_and_the_output_stays_in_range() -> None:
    image = np.random.default_rng(3).random((24, 24))
    hole = _square(24, 4, 20)
    a = noisy_linear_impute(image, hole, noise=0.5, rng=np.random.default_rng(7))
    b = noisy_linear_impute(image, hole, noise=0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0


@pytest.mark.parametrize("kwargs", [{"removed": np.ones((3, 3), dtype=bool)}, {"removed": np.ones((8, 8))},
                                    {"noise": -0.1}])
def test_bad_input(kwargs: dict) -> None:
    args = {"removed": np.ones((8, 8), dtype=bool), **kwargs}
    with pytest.raises(DataError):
        noisy_linear_impute(np.zeros((8, 8)), **args)


def test_scorer_fill_imputes_each_removed_set() -> None:
    image = np.full((16, 16), 0.5, dtype=np.float32)
    image[REGION[1]:REGION[3], REGION[0]:REGION[2]] = 1.0
    heat = (image == 1.0).astype(np.float32)
    adapter = RegionAdapter(REGION)
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=4, fill="noisy_linear", seed=1)
    deleted = adapter.batches[-1][2]  # the region removed: filled from its 0.5 surroundings
    region = deleted[REGION[1]:REGION[3], REGION[0]:REGION[2]]
    assert abs(region.mean() - 0.5) < 0.02
    assert curves.deletion_gain > 0
    again = deletion_insertion(RegionAdapter(REGION), image, QUERY, heat, steps=4, fill="noisy_linear", seed=1)
    np.testing.assert_array_equal(again.random, curves.random)  # the noise is seeded
    assert check_removal_fill("noisy_linear") == "noisy_linear"
    with pytest.raises(DataError, match="noisy_linear"):
        check_removal_fill("noisy_linaer")
    with pytest.raises(DataError):
        pixel_remover(image, "noisy_linaer")
