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
from cxr_attrib.errors import DataError
from cxr_attrib.scoring.faithfulness import (
    MIN_SPAN,
    Curves,
    deletion_insertion,
    faithfulness,
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
    assert curves.span == pytest.approx(2.0)
    # Normalised deletion curve [1, 0, ..., 0]: one triangle of width 1/16.
    assert curves.deletion_auc == pytest.approx(1 / 32)
    assert curves.insertion_auc == pytest.approx(31 / 32)
    assert curves.deletion_auc_raw == pytest.approx(-2.0 + 1 / 16)
    assert curves.insertion_auc_raw == pytest.approx(-1 / 16)


def test_marking_the_region_beats_the_inverted_map() -> None:
    image, heat = _scene()
    good = deletion_insertion(RegionAdapter(REGION), image, QUERY, heat, steps=16)
    bad = deletion_insertion(RegionAdapter(REGION), image, QUERY, -heat, steps=16)
    # Inverted: the region goes last, so the answer holds until the final step.
    assert bad.deletion_auc == pytest.approx(31 / 32)
    assert bad.insertion_auc == pytest.approx(1 / 32)
    assert good.deletion_auc < bad.deletion_auc
    assert good.insertion_auc > bad.insertion_auc


def test_first_point_is_the_original_and_one_batched_call() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    original = float(adapter.score([image], QUERY).sum())
    adapter.counter.reset()
    curves = deletion_insertion(adapter, image, QUERY, heat, steps=10)
    assert curves.deletion.shape == curves.insertion.shape == (11,)
    assert curves.deletion[0] == original == curves.insertion[-1] == curves.original
    assert adapter.counter.forward_calls == 1
    assert adapter.counter.forward_sequences == 20  # 2 * steps distinct images
    np.testing.assert_array_equal(adapter.batches[-1][0], image)  # original inside the batch
    adapter.counter.reset()
    deletion_insertion(adapter, image, QUERY, heat, steps=10, batch_size=6)
    assert (adapter.counter.forward_calls, adapter.counter.forward_sequences) == (4, 20)


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
    # [original, empty, del(1/3), del(2/3), ins(1/3), ins(2/3)]: round(160 k / 3) = 53, 107.
    removed = [int((b[content] != image[content]).sum()) for b in batch]
    assert removed == [0, 160, 53, 107, 160 - 53, 160 - 107]
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


def test_unnormalisable_when_removing_everything_does_not_lower_the_answer() -> None:
    adapter = RegionAdapter(REGION)
    image = np.full((16, 16), 0.5, dtype=np.float32)
    image[8:12, 4:8] = 0.0  # the region is already black: zero fill changes nothing there
    curves = deletion_insertion(adapter, image, QUERY, np.ones((16, 16)), steps=4)
    assert curves.span < MIN_SPAN
    assert curves.deletion_auc is None and curves.insertion_auc is None
    assert curves.deletion_auc_raw == pytest.approx(2.0 * (0.0 - 1.0))


def test_random_region_drop_by_hand() -> None:
    adapter = RegionAdapter(REGION)
    image, heat = _scene()
    drop = random_region_drop(adapter, image, QUERY, heat, fraction=1 / 16, n=6, seed=1)
    assert drop.area == 16
    assert drop.top_drop == pytest.approx(2.0)  # the whole region removed
    batch = adapter.batches[-1]
    assert len(batch) == 1 + 1 + 6 and adapter.counter.forward_calls == 1
    for perturbed, expected in zip(batch[2:], drop.random_drops):
        changed = perturbed != image
        assert changed.sum() == 16
        rows, cols = np.nonzero(changed)
        assert np.ptp(rows) <= 5 and np.ptp(cols) <= 5  # a compact disc, not scattered pixels
        x1, y1, x2, y2 = REGION
        overlap = changed[y1:y2, x1:x2].sum()
        assert expected == pytest.approx(2.0 * overlap / 16, abs=1e-6)
    assert drop.random_drop < drop.top_drop
    assert drop.gain == pytest.approx(drop.top_drop - drop.random_drop)
    assert drop.beats_random == pytest.approx(np.mean(drop.random_drops < 2.0 - 1e-9))


def test_combined_call_matches_the_separate_ones_with_one_original() -> None:
    image, heat = _scene()
    adapter = RegionAdapter(REGION)
    curves, drop = faithfulness(adapter, image, QUERY, heat, steps=5, fraction=0.1, n=4, seed=2)
    assert (adapter.counter.forward_calls, adapter.counter.forward_sequences) == (1, 2 * 5 + 1 + 4)
    alone = deletion_insertion(RegionAdapter(REGION), image, QUERY, heat, steps=5, seed=2)
    drop_alone = random_region_drop(RegionAdapter(REGION), image, QUERY, heat, fraction=0.1, n=4, seed=2)
    # exact: RegionAdapter scores each image alone in float64, whatever the batch
    np.testing.assert_array_equal(curves.deletion, alone.deletion)
    np.testing.assert_array_equal(curves.insertion, alone.insertion)
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
     {"content_mask": np.zeros((16, 16), dtype=bool)}],
)
def test_bad_inputs_raise_data_error(kwargs: dict) -> None:
    image, heat = _scene()
    args = {"heatmap_working": heat, **kwargs}
    heatmap = args.pop("heatmap_working")
    with pytest.raises(DataError):
        deletion_insertion(RegionAdapter(REGION), image, QUERY, heatmap, **args)
    with pytest.raises(DataError, match="fraction"):
        random_region_drop(RegionAdapter(REGION), image, QUERY, heat, fraction=0.0)


def test_curves_to_dict_round_numbers() -> None:
    curves = Curves(fractions=[0.0, 0.5, 1.0], deletion=[0.0, -1.0, -2.0], insertion=[-2.0, -1.0, 0.0])
    data = curves.to_dict()
    assert data["deletion_auc"] == pytest.approx(0.5) and data["insertion_auc"] == pytest.approx(0.5)
    assert data["deletion_auc_raw"] == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        curves.deletion[0] = 1.0  # read-only


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


def test_wired_model_decisive_region_beats_inverted_map_and_random_regions() -> None:
    wired = wired_gemma()
    image, heat = _wired_scene()
    query, span = _falling_answer(wired, image)
    wired.counter.reset()
    good, drop = faithfulness(wired, image, query, heat, steps=5, fraction=3136 / 50176, n=4, seed=0)
    assert (wired.counter.forward_calls, wired.counter.forward_sequences) == (1, 2 * 5 + 1 + 4)
    bad = deletion_insertion(wired, image, query, -heat, steps=5)
    # Pixels outside the region have exactly no effect: the first 20% removes the whole
    # region (curve 1, 0, ..., 0), the inverted map keeps it until the last step.
    assert good.span == pytest.approx(span, abs=1e-4)
    assert good.deletion_auc == pytest.approx(0.1, abs=1e-3)
    assert good.insertion_auc == pytest.approx(0.9, abs=1e-3)
    assert bad.deletion_auc == pytest.approx(0.9, abs=1e-3)
    assert bad.insertion_auc == pytest.approx(0.1, abs=1e-3)
    assert drop.area == 3136
    assert drop.top_drop == pytest.approx(span, abs=1e-4)
    assert drop.random_drop < drop.top_drop
