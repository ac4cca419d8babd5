"""Box-prompted segmentation on a tiny random SAM of the real transformers classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.errors import ModelLoadError
from cxr_attrib.pools import mask_box
from cxr_attrib.segmentation import BoxSegmenter, load_segmenter
from cxr_attrib.testing import tiny_sam

BOXES = [(20.0, 30.0, 110.0, 150.0), (120.0, 40.0, 200.0, 190.0), (60.0, 60.0, 160.0, 120.0)]


@pytest.fixture(scope="module")
def segmenter(tiny_sam_dir):
    return BoxSegmenter.from_folder(tiny_sam_dir)


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((224, 224)).astype(np.float32)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_all_boxes_of_an_image_go_through_one_model_call(tiny_sam_dir):
    seg = BoxSegmenter.from_folder(tiny_sam_dir)
    model_calls, encoder_calls = _count_calls(seg.model), _count_calls(seg.model.vision_encoder)
    result = seg.segment(_image(), BOXES)
    assert model_calls[0] == 1 and encoder_calls[0] == 1
    assert result.masks.shape == (3, 224, 224) and result.masks.dtype == bool
    assert len(result.boxes) == 3 and result.iou.shape == (3,)


def test_each_box_becomes_the_tight_box_of_its_highest_iou_mask(segmenter):
    image = _image()
    result = segmenter.segment(image, BOXES)
    # the same prompts through the raw model: the chosen mask is the candidate with the best predicted IoU
    rgb = np.repeat(np.round(image * 255).astype(np.uint8)[..., None], 3, -1)
    enc = segmenter.processor(images=rgb, input_boxes=[[list(b) for b in BOXES]], return_tensors="pt")
    with torch.no_grad():
        out = segmenter.model(pixel_values=enc["pixel_values"], input_boxes=enc["input_boxes"].float())
    candidates = segmenter.processor.image_processor.post_process_masks(
        out.pred_masks, enc["original_sizes"], enc["reshaped_input_sizes"])[0]
    for i in range(len(BOXES)):
        best = int(out.iou_scores[0, i].argmax())
        np.testing.assert_array_equal(result.masks[i], candidates[i, best].numpy())
        assert result.iou[i] == pytest.approx(float(out.iou_scores[0, i].max()))
        expected = mask_box(result.masks[i]) or BOXES[i]
        assert result.boxes[i] == expected
        if i not in result.empty:
            assert result.masks[i][int(expected[1]):int(expected[3]), int(expected[0]):int(expected[2])].sum() \
                == result.masks[i].sum(), "the tight box holds the whole mask"


def test_batched_prompts_match_one_prompt_at_a_time(segmenter):
    image = _image()
    together = segmenter.segment(image, BOXES)
    for i, box in enumerate(BOXES):
        alone = segmenter.segment(image, [box])
        # A batch of 1 and a batch of n may run the decoder's matmuls in other orders, so
        # a logit within rounding of the threshold may flip: allow a few such pixels
        # (a wrong pairing of prompts and masks differs in thousands) and 1 px on boxes.
        assert np.count_nonzero(alone.masks[0] != together.masks[i]) <= 0.001 * alone.masks[0].size
        assert alone.boxes[0] == pytest.approx(together.boxes[i], abs=1.0)


def test_an_empty_best_mask_keeps_the_prompt_box():
    class Blank(torch.nn.Module):
        """A SAM stand-in whose every mask is empty (all logits negative)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, input_boxes, multimask_output):
            from types import SimpleNamespace

            n = input_boxes.shape[1]
            return SimpleNamespace(pred_masks=-torch.ones(1, n, 3, 16, 16), iou_scores=torch.rand(1, n, 3))

    result = BoxSegmenter(Blank(), tiny_sam()[1]).segment(_image(), BOXES[:2])
    assert result.boxes == tuple(BOXES[:2]) and result.empty == (0, 1) and not result.masks.any()


def test_unreadable_folders_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="sam=.*not a readable SAM checkpoint folder"):
        BoxSegmenter.from_folder(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    with pytest.raises(ModelLoadError, match="holds a 'qwen2_5_vl' model; expected a SAM checkpoint"):
        BoxSegmenter.from_folder(tmp_path)
    (tmp_path / "config.json").write_text("not json")
    with pytest.raises(ModelLoadError, match="config.json is not a JSON object"):
        BoxSegmenter.from_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "sam"}')
    with pytest.raises(ModelLoadError, match="cannot load a SAM model"):
        BoxSegmenter.from_folder(tmp_path)
    with pytest.raises(ValueError, match="at least one prompt box"):
        BoxSegmenter(*tiny_sam()).segment(_image(), [])


def test_load_segmenter_loads_a_folder_once(tiny_sam_dir):
    assert load_segmenter(tiny_sam_dir) is load_segmenter(str(tiny_sam_dir))
