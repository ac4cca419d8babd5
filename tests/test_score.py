"""``score()``: localisation through the frame round trip and faithfulness from the result."""

from __future__ import annotations

import numpy as np
import pytest
from test_faithfulness import RegionAdapter

from cxr_attrib.errors import DataError
from cxr_attrib.frames import ResizePad
from cxr_attrib.result import Attribution, Meta, Target
from cxr_attrib.scoring.aggregate import aggregate
from cxr_attrib.scoring.faithfulness import faithfulness
from cxr_attrib.scoring.score import Scores, score

SHAPE = (300, 200)  # (H, W): not square, so the working frame has padding on the sides
BOX = (50.0, 80.0, 130.0, 200.0)  # input pixels, exclusive ends
PROMPT = "Is there evidence of nodule in the image? Answer directly with yes or no without any explanation."


def _attribution(heatmap=None, boxes=(), image=None, working_size=224, method="m") -> Attribution:
    meta = Meta(method=method, model="fake-region", question="Is there evidence of nodule in the image?",
                prompt=PROMPT, image_size=SHAPE, working_size=working_size)
    return Attribution(answer="Yes", target=Target(text="Yes", policy="answer", mode="direct"), meta=meta,
                       heatmap=heatmap, boxes=boxes, image=image)


def _indicator(box=BOX, shape=SHAPE) -> np.ndarray:
    heat = np.zeros(shape, dtype=np.float32)
    x1, y1, x2, y2 = (int(v) for v in box)
    heat[y1:y2, x1:x2] = 1.0
    return heat


def test_indicator_heatmap_recovers_its_box_after_the_frame_round_trip() -> None:
    scores = score(_attribution(_indicator()), [BOX])
    # One working pixel is 300/224 = 1.34 input pixels; the bilinear edge of the box
    # falls below the 0.9 quantile, so each edge may move inwards by up to 2 input px.
    (pred,) = scores.pred_boxes
    assert np.allclose(pred, BOX, atol=2.0)
    assert scores.iou > 0.95 and scores.precision == pytest.approx(1.0)
    assert scores.pointing_game == 1.0
    assert scores.energy == pytest.approx(1.0)


def test_shifted_ground_truth_gives_the_hand_computed_iou() -> None:
    gt = (90.0, 80.0, 170.0, 200.0)  # the box moved right by half its width
    scores = score(_attribution(_indicator()), [gt])
    # Exact boxes would give intersection 40 x 120 over union 120 x 120: IoU 1/3, P = R = 1/2.
    assert scores.iou == pytest.approx(1 / 3, abs=0.03)
    assert scores.precision == pytest.approx(0.5, abs=0.03)
    assert scores.recall == pytest.approx(0.5, abs=0.03)
    assert scores.energy == pytest.approx(0.5)  # exact: pixel centres of the input heatmap
    # the plateau of maximal pixels is the box, half of it inside the shifted GT
    assert scores.pointing_game == pytest.approx(0.5, abs=0.05)


def test_boxes_only_method_is_judged_on_its_own_boxes_exactly() -> None:
    result = _attribution(boxes=[(0.0, 0.0, 40.0, 40.0)])
    scores = score(result, [(20.0, 0.0, 60.0, 40.0)])
    assert scores.iou == pytest.approx(1 / 3)
    assert (scores.precision, scores.recall, scores.f1) == (0.5, 0.5, 0.5)
    assert scores.pointing_game is None and scores.energy is None


def test_regions_boxes_overrides_the_heatmap() -> None:
    result = _attribution(_indicator(), boxes=[(0.0, 0.0, 40.0, 40.0)])
    assert score(result, [BOX], regions="boxes").iou == 0.0
    with pytest.raises(DataError, match="no heatmap"):
        score(_attribution(boxes=[(0.0, 0.0, 4.0, 4.0)]), [BOX], regions="heatmap")


def test_zero_heatmap_predicts_the_whole_image() -> None:
    scores = score(_attribution(np.zeros(SHAPE, dtype=np.float32)), [BOX])
    assert scores.pred_boxes == ((0.0, 0.0, 200.0, 300.0),)
    assert scores.iou == pytest.approx(80 * 120 / (200 * 300))


def _scene(working_size: int = 16) -> tuple[np.ndarray, np.ndarray, RegionAdapter]:
    """An input image whose decisive region is bright and a heatmap marking it."""
    frame = ResizePad(*SHAPE, working_size)
    region = (6, 6, 10, 10)  # working pixels, inside the content box
    x1, y1, x2, y2 = frame.boxes_to_input([region])[0]
    image = np.full(SHAPE, 128, dtype=np.uint8)
    image[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = 255
    heat = _indicator((x1, y1, x2, y2))
    return image, heat, RegionAdapter(region, size=working_size)


def test_faithfulness_from_the_result_one_batch_and_matching_values() -> None:
    image, heat, adapter = _scene()
    result = _attribution(heat, image=image, working_size=16)
    scores = score(result, model=adapter, steps=4, fraction=0.1, n_random=3, split="direct", dataset="toy")
    assert (adapter.counter.forward_calls, adapter.counter.forward_sequences) == (1, 3 * 4 - 1 + 1 + 3)
    query = adapter.queries[-1]
    assert (query.prompt, query.answer, query.mode, query.policy) == (PROMPT, "Yes", "direct", "answer")
    frame = ResizePad(*SHAPE, 16)
    curves, drop = faithfulness(RegionAdapter(adapter.region, size=16), frame.image_to_working(image), query,
                                frame.heatmap_to_working(heat), steps=4, fraction=0.1, n=3,
                                content_mask=frame.content_mask(), fill="noisy_linear")  # score()'s default
    assert scores.deletion_auc == pytest.approx(curves.deletion_auc)
    assert scores.insertion_auc == pytest.approx(curves.insertion_auc)
    assert scores.deletion_gain == pytest.approx(curves.deletion_gain) and scores.deletion_gain > 0
    assert scores.morf_lerf == pytest.approx(curves.insertion_auc - curves.deletion_auc)
    raw = scores.raw_curves()
    assert raw["deletion"] == curves.deletion.tolist() and raw["random"] == curves.random.tolist()
    assert raw["region_random"] == drop.random.tolist()
    assert scores.top_drop == pytest.approx(drop.top_drop)
    assert scores.deletion_auc < 0.5 < scores.insertion_auc
    assert scores.iou is None  # no ground truth given


def test_faithfulness_ranks_a_boxes_only_result_by_its_boxes() -> None:
    image, heat, adapter = _scene()
    frame = ResizePad(*SHAPE, 16)
    boxes = [tuple(frame.boxes_to_input([adapter.region])[0])]
    good = score(_attribution(boxes=boxes, image=image, working_size=16), model=adapter, steps=8)
    bad = score(_attribution(boxes=[(0.0, 0.0, 60.0, 60.0)], image=image, working_size=16),
                model=RegionAdapter(adapter.region, size=16), steps=8)
    assert good.deletion_auc < bad.deletion_auc
    assert good.insertion_auc > bad.insertion_auc


def test_faithfulness_needs_an_image() -> None:
    _, heat, adapter = _scene()
    with pytest.raises(DataError, match="image"):
        score(_attribution(heat, working_size=16), model=adapter)


def test_as_row_feeds_the_aggregator() -> None:
    result = _attribution(_indicator(), method="occlusion")
    row = score(result, [BOX], dataset="vindr_cxr", sample="s1").as_row()
    assert set(row) == {"model", "split", "method", "dataset", "sample", *Scores.METRICS}
    assert (row["model"], row["split"], row["method"], row["dataset"]) == (
        "fake-region", "direct", "occlusion", "vindr_cxr")
    assert row["deletion_auc"] is None
    (summary, _macro) = aggregate([row], metrics=["iou", "pointing_game"], n_boot=10)
    assert summary.metrics["pointing_game"].mean == 100.0


def test_inconsistent_frames_are_rejected() -> None:
    meta = Meta(method="m", model="x", image_size=(10, 10))
    result = Attribution(answer="Yes", target=Target("Yes", "answer", "direct"), meta=meta,
                         heatmap=np.zeros((12, 10), dtype=np.float32))
    with pytest.raises(DataError, match="image_size"):
        score(result, [BOX])
