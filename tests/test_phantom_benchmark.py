"""The phantom benchmark (registered plugin) and its exact counterfactuals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cxr_attrib import registry
from cxr_attrib.errors import DataError
from cxr_attrib.filtering import box_mask
from cxr_attrib_phantom import FINDINGS, make_case
from cxr_attrib_phantom.benchmark import HELD_OUT_START, PhantomCounterfactuals, phantom_sample


def test_phantom_benchmark_is_registered_and_held_out():
    bench = registry.get_benchmark("phantom")
    samples = list(itertools.islice(bench.samples(split="direct"), 12))
    assert [s.extra["finding_key"] for s in samples[:6]] == list(FINDINGS)
    assert all(s.index >= HELD_OUT_START and s.answer == "Yes" for s in samples)
    assert len({s.id for s in samples}) == 12
    first = samples[0]
    case = make_case(first.index, first.extra["finding_key"])
    assert np.array_equal(first.boxes, case.boxes)
    assert first.load_image().shape == (224, 224) and first.load_image().dtype == np.uint8
    assert first.question == f"Is there evidence of {first.finding} in the image?"


@pytest.mark.parametrize("finding", FINDINGS)
def test_exact_counterfactuals_differ_only_where_they_should(finding):
    sample = phantom_sample(HELD_OUT_START + 3, finding)
    image = sample.load_image()
    cf = PhantomCounterfactuals().counterfactuals(sample)
    inside = box_mask(sample.boxes, image.shape)
    assert not cf.approximate
    assert np.any(cf.removed[inside] != image[inside])
    assert np.array_equal(cf.removed[~inside], image[~inside])
    for kept in (cf.kept, cf.kept_normal):
        assert np.array_equal(kept[inside], image[inside])
        assert np.any(kept[~inside] != image[~inside])


def test_unknown_split_and_foreign_sample_are_refused():
    with pytest.raises(DataError, match="splits 'direct' and 'reasoning'"):
        next(registry.get_benchmark("phantom").samples(split="cot"))
    foreign = phantom_sample(HELD_OUT_START, "nodule")
    foreign = type(foreign)(**{**foreign.__dict__, "extra": {}})
    with pytest.raises(DataError, match="not a phantom sample"):
        PhantomCounterfactuals().counterfactuals(foreign)
