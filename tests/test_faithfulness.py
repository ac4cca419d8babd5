"""Deletion / insertion curves and the random-region drop, against hand-computed values.

``RegionAdapter`` is an honest fake: its target log-prob is a known linear function of
the mean of one working-frame region, so every curve point can be computed by hand.
The wired tiny models of the real classes check the same properties end to end.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import Adapter, Encoding, Generation, LoadOptions, Query, Scorer
from cxr_attrib.api import attribute
from cxr_attrib.errors import DataError
from cxr_attrib.scoring.faithfulness import (
    Curves,
    deletion_insertion,
    faithfulness,
    probability,
    random_region_drop,
)

QUERY = Query(
    question="Is there evidence of nodule in the image?", mode="direct",
    prompt="Is there evidence of nodule in the image? Answer directly with yes or no without any explanation.",
    answer="Yes", policy="answer",
)


class RegionAdapter(Scorer):
    """Target log-prob ``slope * (mean of region pixels - 1)`` (nats); answers by a threshold.

    Args:
        region: ``(x1, y1, x2, y2)`` working-frame pixels, exclusive ends.
        size: working-frame side S.
        slope: nats per unit of region mean.
        threshold: ``generate`` says "Yes." when the region mean exceeds it, else "No.".
    """

    family = "fake_region"

    def __init__(self, region: tuple[int, int, int, int], *, size: int = 16, slope: float = 2.0,
                 threshold: float = 0.6, name: str = "fake-region") -> None:
        super().__init__(name, LoadOptions(working_size=size, device="cpu"))
        self.region, self.slope, self.threshold = region, slope, threshold
        self.batches: list[list[np.ndarray]] = []
        self.queries: list[Query] = []
        self.prompts: list[str] = []

    def _mean(self, image: np.ndarray) -> float:
        x1, y1, x2, y2 = self.region
        return float(np.asarray(image, dtype=np.float64)[y1:y2, x1:x2].mean())

    def score(self, images: Sequence[np.ndarray], query: Query, *, batch_size: int | None = None) -> torch.Tensor:
        images = [np.array(image, dtype=np.float32) for image in images]
        step = batch_size or len(images)
        self.counter.forward_calls += -(-len(images) // step)
        self.counter.forward_sequences += len(images)
        self.batches.append(images)
        self.queries.append(query)
        return torch.tensor([[self.slope * (self._mean(image) - 1.0)] for image in images], dtype=torch.float32)

    def generate(self, image: np.ndarray, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        self.counter.generate_calls += 1
        self.prompts.append(prompt)
        return Generation("Yes." if self._mean(image) > self.threshold else "No.", (), ())

    def encode(self, images: Sequence[np.ndarray], query: Query) -> Encoding:
        return Encoding(
            inputs={}, image_positions=torch.arange(1), grid=(1, 1),
            target_positions=torch.tensor([1]), target_ids=torch.tensor([0]), target_tokens=(query.answer,),
            batch_size=len(images),
        )


REGION = (4, 8, 8, 12)  # 4 x 4 = 16 pixels = 1/16 of a 16 x 16 frame


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Image 0.5 with the region at 1.0; heatmap = indicator of the region."""
    image = np.full((16, 16), 0.5, dtype=np.float32)
    heat = np.zeros((16, 16), dtype=np.float32)
    x1, y1, x2, y2 = REGION
    image[y1:y2, x1:x2] = 1.0
    heat[y1:y2, x1:x2] = 1.0
    return image, heat


def _prob_auc(logprobs: list[float], steps: int) -> float:
    return float(np.trapezoid(np.exp(logprobs), np.arange(steps + 1) / steps))


def test_curves_of_the_decisive_region_by_hand() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=16)
    # Step 1 removes exactly the 16 region pixels: log-prob -2 from then on.
    expected_deletion = np.array([0.0] + [-2.0] * 16)
    expected_insertion = np.array([-2.0] + [0.0] * 16)
    np.testing.assert_allclose(curves.deletion, expected_deletion, atol=1e-6)
    np.testing.assert_allclose(curves.insertion, expected_insertion, atol=1e-6)
    np.testing.assert_allclose(curves.fractions, np.arange(17) / 16)
    # Probability curve [1, e^-2, ..., e^-2]: one trapezoid of width 1/16, then flat.
    low = np.exp(-2.0)
    assert curves.deletion_auc == pytest.approx((1 + low) / 32 + 15 * low / 16)
    assert curves.insertion_auc == pytest.approx((1 + low) / 32 + 15 / 16)
    assert curves.morf_lerf == pytest.approx(curves.insertion_auc - curves.deletion_auc)


def test_random_order_curve_by_hand_and_the_gains() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    steps = 8
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=steps, seed=5)
    batch = adapter.batches[-1]
    # [original, empty, del x 7, ins x 7, rnd x 7]; the random images remove round(256 k / 8) pixels
    randoms = batch[2 + 2 * (steps - 1):]
    assert [int((b != image).sum()) for b in randoms] == [32 * k for k in range(1, steps)]
    x1, y1, x2, y2 = REGION
    expected = [0.0] + [2.0 * (float(b[y1:y2, x1:x2].mean()) - 1.0) for b in randoms] + [-2.0]
    np.testing.assert_allclose(curves.random, expected, atol=1e-6)
    assert curves.random_auc == pytest.approx(_prob_auc(expected, steps))
    assert curves.deletion_gain == pytest.approx(curves.random_auc - curves.deletion_auc)
    assert curves.insertion_gain == pytest.approx(curves.insertion_auc - curves.random_auc)
    assert curves.deletion_gain > 0 and curves.insertion_gain > 0
    # The random order does not depend on the map: the same seed gives the same curve.
    other = deletion_insertion(RegionAdapter(REGION), image, QUERY, -heat, steps=steps, seed=5)
    np.testing.assert_array_equal(other.random, curves.random)
    assert other.deletion_gain < 0 < curves.deletion_gain


def test_marking_the_region_beats_the_inverted_map() -> None:
    image, heat = _scene()
    good = deletion_insertion(RegionAdapter(REGION), image, QUERY, heat, steps=16)
    bad = deletion_insertion(RegionAdapter(REGION), image, QUERY, -heat, steps=16)
    # Inverted: the region goes last, so the answer holds until the final step.
    low = np.exp(-2.0)
    assert bad.deletion_auc == pytest.approx(15 / 16 + (1 + low) / 32)
    assert bad.insertion_auc == pytest.approx(15 * low / 16 + (1 + low) / 32)
    assert good.deletion_auc < bad.deletion_auc
    assert good.insertion_auc > bad.insertion_auc
    assert good.morf_lerf > 0 > bad.morf_lerf


def test_lerf_is_insertion_read_backwards() -> None:
    """Removing the least relevant f keeps exactly the top 1 - f: the LeRF images are the insertion images."""
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    heat = heat + np.random.default_rng(0).random((16, 16))  # no ties
    steps = 4
    deletion_insertion(adapter, image, QUERY, heat, steps=steps)
    batch = adapter.batches[-1]
    order = np.argsort(-heat, axis=None)
    for k in range(1, steps):
        lerf = image.copy().reshape(-1)
        lerf[order[::-1][: 64 * k]] = 0.0  # remove the least relevant k / steps (256 px, zero fill)
        np.testing.assert_array_equal(batch[2 + (steps - 1) + (steps - k - 1)].reshape(-1), lerf)


def test_first_point_is_the_original_and_one_batched_call() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    original = float(adapter.score([image], QUERY).sum())
    adapter.counter.reset()
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=10)
    assert curves.deletion.shape == curves.insertion.shape == curves.random.shape == (11,)
    assert curves.deletion[0] == original == curves.insertion[-1] == curves.random[0] == curves.original
    assert adapter.counter.forward_calls == 1
    assert adapter.counter.forward_sequences == 29  # 3 * steps - 1 distinct images
    np.testing.assert_array_equal(adapter.batches[-1][0], image)  # original inside the batch
    adapter.counter.reset()
    deletion_insertion(adapter, image, QUERY, heat, steps=10, batch_size=6)
    assert (adapter.counter.forward_calls, adapter.counter.forward_sequences) == (5, 29)


@pytest.mark.parametrize("batch_size", [1, 4, 7, 40])
def test_forward_calls_at_most_images_over_batch_size(batch_size: int) -> None:
    """Deletion, insertion, random order and the random regions share the batched calls."""
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    faithfulness(adapter, image, QUERY, heat, steps=6, n=5, batch_size=batch_size)
    images = 3 * 6 - 1 + 1 + 5
    assert adapter.counter.forward_sequences == images
    assert adapter.counter.forward_calls <= -(-images // batch_size)


def test_fraction_counts_round_half_up_and_padding_never_changes() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    content = np.zeros((16, 16), dtype=bool)
    content[:, 3:13] = True  # 160 content pixels; columns 0-2 and 13-15 are padding
    heat[:, :3] = 100.0  # padding must never be ranked
    deletion_insertion(adapter, image, QUERY, heat, steps=3, content_mask=content)
    batch = adapter.batches[-1]
    for perturbed in batch:
        np.testing.assert_array_equal(perturbed[~content], image[~content])
    # [original, empty, del(1/3), del(2/3), ins(1/3), ins(2/3), rnd(1/3), rnd(2/3)]: round(160 k / 3) = 53, 107.
    removed = [int((b[content] != image[content]).sum()) for b in batch]
    assert removed == [0, 160, 53, 107, 160 - 53, 160 - 107, 53, 107]
    # The region (highest scores among content) goes first.
    x1, y1, x2, y2 = REGION
    assert np.all(batch[2][y1:y2, x1:x2] == 0.0)


def test_flat_map_ties_are_seeded_not_row_major() -> None:
    image, _ = _scene()
    flat = np.zeros((16, 16), dtype=np.float32)
    a, b, c = RegionAdapter(REGION), RegionAdapter(REGION), RegionAdapter(REGION)
    deletion_insertion(a, image, QUERY, flat, steps=4, seed=3)
    deletion_insertion(b, image, QUERY, flat, steps=4, seed=3)
    deletion_insertion(c, image, QUERY, flat, steps=4, seed=4)
    first_a, first_b, first_c = a.batches[-1][2], b.batches[-1][2], c.batches[-1][2]
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(first_a, first_c)
    removed_rows = np.nonzero(first_a == 0.0)[0]
    assert removed_rows.max() > 4  # not simply the first 4 rows


def test_constant_map_has_no_gain_in_expectation() -> None:
    """A flat map removes pixels in a seeded random order: over seeds its gain averages 0."""
    image, _ = _scene()
    flat = np.zeros((16, 16), dtype=np.float32)
    gains = np.array([deletion_insertion(RegionAdapter(REGION), image, QUERY, flat, steps=8, seed=s).deletion_gain
                      for s in range(40)])
    half_width = 1.96 * gains.std(ddof=1) / np.sqrt(gains.size)
    assert gains.std() > 0  # the two orders differ, so the test can fail
    assert abs(gains.mean()) <= half_width, (gains.mean(), half_width)


def test_random_region_drop_by_hand() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    drop = random_region_drop(adapter, image, QUERY, heat, fraction=1 / 16, n=6, seed=1)
    assert drop.area == 16
    assert drop.top_drop == pytest.approx(1.0 - np.exp(-2.0))  # the whole region removed
    batch = adapter.batches[-1]
    assert len(batch) == 1 + 1 + 6 and adapter.counter.forward_calls == 1
    for perturbed, expected in zip(batch[2:], drop.random_drops):
        changed = perturbed != image
        assert changed.sum() == 16
        rows, cols = np.nonzero(changed)
        assert np.ptp(rows) <= 5 and np.ptp(cols) <= 5  # a compact disc, not scattered pixels
        x1, y1, x2, y2 = REGION
        overlap = changed[y1:y2, x1:x2].sum()
        assert expected == pytest.approx(1.0 - np.exp(-2.0 * overlap / 16), abs=1e-6)
    assert drop.random_drop < drop.top_drop
    assert drop.gain == pytest.approx(drop.top_drop - drop.random_drop)
    assert drop.beats_random == pytest.approx(np.mean(drop.random_drops < drop.top_drop - 1e-9))


def test_combined_call_matches_the_separate_ones_with_one_original() -> None:
    image, heat = _scene()
    adapter = RegionAdapter(REGION)
    curves, drop = faithfulness(adapter, image, QUERY, heat, steps=5, fraction=0.1, n=4, seed=2)
    assert (adapter.counter.forward_calls, adapter.counter.forward_sequences) == (1, 3 * 5 - 1 + 1 + 4)
    alone = deletion_insertion(RegionAdapter(REGION), image, QUERY, heat, steps=5, seed=2)
    drop_alone = random_region_drop(RegionAdapter(REGION), image, QUERY, heat, fraction=0.1, n=4, seed=2)
    # exact: RegionAdapter scores each image alone in float64, whatever the batch
    np.testing.assert_array_equal(curves.deletion, alone.deletion)
    np.testing.assert_array_equal(curves.insertion, alone.insertion)
    np.testing.assert_array_equal(curves.random, alone.random)
    np.testing.assert_array_equal(drop.random, drop_alone.random)
    assert drop.top == drop_alone.top


def test_mean_fill_and_inputs_untouched() -> None:
    image, heat = _scene()
    image.setflags(write=False)
    adapter = RegionAdapter(REGION)
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=2, fill="mean")
    mean = float(image.mean())
    assert curves.empty == pytest.approx(2.0 * (mean - 1.0), abs=1e-6)
    assert np.all(image[8:12, 4:8] == 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"heatmap_working": np.zeros((8, 8))}, {"heatmap_working": np.full((16, 16), np.nan)},
     {"content_mask": np.zeros((16, 16), dtype=bool)}, {"fill": "smudge"}],
)
def test_bad_inputs_raise_data_error(kwargs: dict) -> None:
    image, heat = _scene()
    args = {"heatmap_working": heat, **kwargs}
    heatmap = args.pop("heatmap_working")
    with pytest.raises(DataError):
        deletion_insertion(RegionAdapter(REGION), image, QUERY, heatmap, **args)
    with pytest.raises(DataError, match="fraction"):
        random_region_drop(RegionAdapter(REGION), image, QUERY, heat, fraction=0.0)


def test_curves_round_trip_and_read_only() -> None:
    log_half = float(np.log(0.5))
    curves = Curves(fractions=[0.0, 0.5, 1.0], deletion=[0.0, log_half, -np.inf], insertion=[-np.inf, log_half, 0.0],
                    random=[0.0, 0.0, -np.inf])
    data = curves.to_dict()
    assert data["deletion_auc"] == pytest.approx(0.5) and data["insertion_auc"] == pytest.approx(0.5)
    assert data["random_auc"] == pytest.approx(0.75) and data["deletion_gain"] == pytest.approx(0.25)
    again = Curves.from_dict(data)
    np.testing.assert_array_equal(again.deletion, curves.deletion)
    assert again.to_dict() == data
    with pytest.raises(ValueError):
        curves.deletion[0] = 1.0  # read-only
    with pytest.raises(DataError, match="curves"):
        Curves.from_dict({"fractions": [0.0, 1.0]})
    assert probability([1e-9]).tolist() == [1.0]  # a log-prob a rounding error above 0


# ---------------------------------------------------------------- wired tiny model

WIRED_REGION = (56, 56, 112, 112)  # 2 x 2 token cells of the 224 px frame; 3136 of 50176 pixels


@functools.cache
def wired_gemma() -> Adapter:
    """Tiny Gemma 3 of the real class whose answer depends only on WIRED_REGION (built once)."""
    from cxr_attrib.testing.tiny_models import wired_adapter

    return wired_adapter("gemma3", WIRED_REGION)


def _wired_scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((224, 224), 0.5, dtype=np.float32)
    heat = np.zeros((224, 224), dtype=np.float32)
    x1, y1, x2, y2 = WIRED_REGION
    image[y1:y2, x1:x2] = 1.0
    heat[y1:y2, x1:x2] = 1.0
    return image, heat


def _falling_answer(adapter: Adapter, image: np.ndarray) -> tuple[Query, float]:
    """The answer (Yes / No) whose log-prob falls most when the image is blanked.

    The wired model's weights are random, so which answer the region supports is
    whatever it is; the test needs one it supports (span > 0).
    """
    spans = {}
    for answer in ("Yes", "No"):
        query = Query(question=QUERY.question, mode="direct", prompt=QUERY.prompt, answer=answer)
        full, empty = adapter.score([image, np.zeros_like(image)], query).sum(-1).tolist()
        spans[answer] = (query, full - empty)
    query, span = max(spans.values(), key=lambda item: item[1])
    assert span > 0.05, spans
    return query, span


def test_wired_model_decisive_region_beats_inverted_map_random_map_and_random_regions() -> None:
    wired = wired_gemma()
    image, heat = _wired_scene()
    query, span = _falling_answer(wired, image)
    wired.counter.reset()
    good, drop = faithfulness(wired, image, query, heat, steps=5, fraction=3136 / 50176, n=4, seed=0)
    assert (wired.counter.forward_calls, wired.counter.forward_sequences) == (1, 3 * 5 - 1 + 1 + 4)
    bad = deletion_insertion(wired, image, query, -heat, steps=5)
    noise = deletion_insertion(wired, image, query, np.random.default_rng(0).random((224, 224)), steps=5)
    floor_map = attribute("none", image, query.question, method="random", answer=query.answer, seed=0).heatmap
    floor = deletion_insertion(wired, image, query, floor_map, steps=5)  # the `random` reference row
    # Pixels outside the region have exactly no effect: the first 20% removes the whole
    # region (probabilities p0, pe, ..., pe), the inverted map keeps it until the last step.
    p0, pe = float(np.exp(good.original)), float(np.exp(good.empty))
    assert good.original - good.empty == pytest.approx(span, abs=1e-4)
    assert good.deletion_auc == pytest.approx(0.1 * (p0 + pe) + 0.8 * pe, abs=1e-4)
    assert good.insertion_auc == pytest.approx(0.1 * (p0 + pe) + 0.8 * p0, abs=1e-4)
    assert bad.deletion_auc == pytest.approx(0.8 * p0 + 0.1 * (p0 + pe), abs=1e-4)
    assert good.deletion_gain > 0 and good.insertion_gain > 0
    assert good.deletion_gain > noise.deletion_gain and good.insertion_gain > noise.insertion_gain
    assert good.deletion_gain > floor.deletion_gain and good.insertion_gain > floor.insertion_gain
    assert bad.deletion_gain < 0
    assert drop.area == 3136
    assert drop.top_drop == pytest.approx(p0 - pe, abs=1e-4)
    assert drop.random_drop < drop.top_drop
