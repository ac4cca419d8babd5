"""Phantom suite: exact masks, laterality, findings, counterfactuals and VQA items."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_attrib.errors import CxrAttribError
from cxr_attrib_phantom import (
    COMPOSITES,
    CONCEPTS,
    DISPLAY_NAMES,
    FINDINGS,
    PhantomParameterError,
    UnknownFindingError,
    cardiothoracic_ratio,
    generate_phantom,
    make_case,
)
from cxr_attrib_phantom._draw import box_mask, draw_segments, smoothstep, tight_box
from cxr_attrib_phantom.anatomy import render_phantom, sample_anatomy
from cxr_attrib_phantom.findings import VISIBLE_STEP
from cxr_attrib_phantom.vqa import make_vqa_item, reference_pool, vqa_items
from cxr_attrib.targets import parse_yes_no

SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
FAST = settings(max_examples=8, deadline=None)


def _inside(box: np.ndarray, size: int) -> np.ndarray:
    return box_mask(box, (size, size))


# ---------------------------------------------------------------- primitives


def test_tight_box_is_exclusive_and_empty_gives_zeros():
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:7] = True
    assert tight_box(mask).tolist() == [3.0, 2.0, 7.0, 4.0]
    assert tight_box(np.zeros((3, 3), dtype=bool)).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert box_mask(np.array([3.0, 2.0, 7.0, 4.0]), (6, 8)).sum() == 8


def test_smoothstep_values():
    assert smoothstep([-1.0, 0.0, 0.5, 1.0, 2.0]).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_draw_segments_profile_is_a_projected_cylinder():
    canvas = np.zeros((9, 20), dtype=np.float32)
    draw_segments(canvas, np.array([[2.0, 4.0, 17.0, 4.0, 2.0, 0.5]]))
    assert canvas[4, 10] == pytest.approx(0.5)  # on the axis: full amplitude
    assert canvas[3, 10] == pytest.approx(0.5 * np.sqrt(1 - 0.25), rel=1e-5)  # d = 1, w = 2
    assert canvas[2, 10] == 0.0 and canvas[6, 10] == 0.0  # d = w: nothing
    assert canvas[4, 0] == 0.0  # beyond the end cap (d = 2)


def test_cardiothoracic_ratio_by_hand():
    names = ("cardiac_silhouette", "left_lung", "right_lung")
    masks = {name: np.zeros((10, 50), dtype=bool) for name in names}
    masks["right_lung"][2:8, 5:20] = True
    masks["left_lung"][2:8, 30:45] = True
    masks["cardiac_silhouette"][5:9, 18:28] = True
    assert cardiothoracic_ratio(masks) == pytest.approx(10 / 40)


# ---------------------------------------------------------------- normal phantoms


@FAST
@given(SEEDS)
def test_phantom_masks_exact_lateral_and_in_range(seed):
    phantom = generate_phantom(seed)
    size = 224
    assert phantom.image.shape == (size, size) and phantom.image.dtype == np.float32
    assert phantom.image.min() >= 0.0 and phantom.image.max() <= 1.0
    assert set(phantom.masks) == set(CONCEPTS)
    half = size / 2.0
    for name in CONCEPTS:
        mask = phantom.masks[name]
        assert mask.shape == (size, size) and mask.dtype == bool and mask.any(), name
        centroid_x = np.nonzero(mask)[1].mean() + 0.5
        if name.startswith("left_"):
            assert centroid_x > half, name  # patient's left is the image's right
        if name.startswith("right_"):
            assert centroid_x < half, name
    heart_x = np.nonzero(phantom.masks["cardiac_silhouette"])[1].mean() + 0.5
    assert heart_x > half
    assert cardiothoracic_ratio(phantom.masks) < 0.52
    assert not (phantom.masks["left_lung"] & phantom.masks["right_lung"]).any()
    assert not (phantom.masks["left_lung"] & phantom.masks["cardiac_silhouette"]).any()
    assert (phantom.masks["upper_mediastinum"] <= phantom.masks["mediastinum"]).all()
    for side in ("left", "right"):
        assert (phantom.masks[f"{side}_costophrenic_angle"] <= phantom.masks[f"{side}_lung"]).all()
    for name, parts in COMPOSITES.items():
        assert np.array_equal(phantom.mask(name), phantom.masks[parts[0]] | phantom.masks[parts[1]])


def test_phantom_is_deterministic_and_seeds_differ():
    a, b, c = generate_phantom(11), generate_phantom(11), generate_phantom(12)
    assert np.array_equal(a.image, b.image)
    assert all(np.array_equal(a.masks[n], b.masks[n]) for n in CONCEPTS)
    assert not np.array_equal(a.image, c.image)
    assert np.array_equal(a.to_uint8(), np.round(a.image * 255).astype(np.uint8))
    assert np.array_equal(render_phantom(sample_anatomy(11)).image, a.image)


def test_phantom_scales_with_size():
    small, large = generate_phantom(5, 224), generate_phantom(5, 448)
    assert large.image.shape == (448, 448)
    for name in ("left_lung", "cardiac_silhouette", "right_clavicle"):
        ratio = large.masks[name].sum() / small.masks[name].sum()
        assert ratio == pytest.approx(4.0, rel=0.1), name


@pytest.mark.parametrize(
    ("seed", "size"), [(-1, 224), (1.5, 224), (True, 224), (0, 32), (0, "224")]
)
def test_bad_seed_or_size_is_refused(seed, size):
    with pytest.raises(PhantomParameterError) as info:
        generate_phantom(seed, size)
    assert isinstance(info.value, CxrAttribError) and "expected" in str(info.value)


def test_unknown_concept_and_finding_are_named():
    with pytest.raises(PhantomParameterError, match="cardiac_silhouette"):
        generate_phantom(0).mask("heart")
    with pytest.raises(UnknownFindingError, match="pleural_effusion"):
        make_case(0, "effusion")


# ---------------------------------------------------------------- findings


@settings(max_examples=18, deadline=None)
@given(SEEDS, st.sampled_from(FINDINGS))
def test_case_ground_truth_and_counterfactuals(seed, finding):
    case = make_case(seed, finding)
    size = case.size
    normal = generate_phantom(seed)
    assert case.finding == finding and case.boxes.shape == (1, 4) and case.boxes.dtype == np.float64
    box = case.boxes[0]
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size
    assert box.tolist() == [round(v) for v in box]
    inside = _inside(box, size)
    # removed = exactly the normal phantom, differing only inside the box, and somewhere there
    assert np.array_equal(case.removed, normal.image)
    differs = case.image != case.removed
    assert differs.any() and not (differs & ~inside).any()
    assert np.array_equal(differs, case.finding_mask)
    assert (np.abs(case.image - case.removed)[differs] >= VISIBLE_STEP).all()
    if finding != "cardiomegaly":
        assert np.array_equal(tight_box(case.finding_mask), box)  # tight box of drawn pixels
    # kept edits: identical inside the box, different somewhere outside
    for edited in (case.kept, case.kept_normal):
        assert edited.dtype == np.float32 and edited.min() >= 0.0 and edited.max() <= 1.0
        assert np.array_equal(edited[inside], case.image[inside])
        assert (edited != case.image)[~inside].any()
    assert not np.array_equal(case.kept, case.kept_normal)
    # the box lies on the finding's region
    assert case.region in CONCEPTS and (case.masks[case.region] & inside).any()


def test_case_is_deterministic():
    a, b = make_case(21, "pneumothorax"), make_case(21, "pneumothorax")
    for name in ("image", "boxes", "removed", "kept", "kept_normal", "finding_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.details == b.details


def test_normal_case_has_no_box_and_no_counterfactuals():
    case = make_case(4, None)
    assert case.boxes.shape == (0, 4) and not case.finding_mask.any()
    assert case.removed is None and case.kept is None and case.kept_normal is None
    assert np.array_equal(case.image, generate_phantom(4).image)


@pytest.mark.parametrize("seed", range(6))
def test_finding_sizes_and_contrast_are_visible_at_token_scale(seed):
    nodule, mass = make_case(seed, "nodule"), make_case(seed, "mass")
    for case, low, high in ((nodule, 14, 25), (mass, 28, 52)):
        x1, y1, x2, y2 = case.boxes[0]
        assert low <= x2 - x1 <= high and low <= y2 - y1 <= high
        lift = (case.image - case.removed)[case.finding_mask]
        assert lift.mean() > 0.15  # bright, high contrast
    pneumothorax = make_case(seed, "pneumothorax")
    assert (pneumothorax.image - pneumothorax.removed)[pneumothorax.finding_mask].mean() < -0.03
    effusion = make_case(seed, "pleural_effusion")
    side = effusion.details["side"]
    angle = effusion.masks[f"{side}_costophrenic_angle"]
    assert (effusion.image - effusion.removed)[angle].mean() > 0.15  # the angle is blunted


def test_nodule_scales_with_size():
    small, large = make_case(3, "nodule", 224), make_case(3, "nodule", 448)
    width_small = small.boxes[0, 2] - small.boxes[0, 0]
    width_large = large.boxes[0, 2] - large.boxes[0, 0]
    assert width_large == pytest.approx(2 * width_small, abs=3)


@settings(max_examples=6, deadline=None)
@given(SEEDS)
def test_cardiomegaly_enlarges_the_heart(seed):
    case = make_case(seed, "cardiomegaly")
    normal_heart = case.phantom.masks["cardiac_silhouette"]
    heart = case.masks["cardiac_silhouette"]
    assert cardiothoracic_ratio(case.masks) > 0.55
    assert cardiothoracic_ratio(case.phantom.masks) < 0.52
    assert (normal_heart <= heart).all() and heart.sum() > 1.2 * normal_heart.sum()
    assert (heart <= _inside(case.boxes[0], case.size)).all()


# ---------------------------------------------------------------- VQA


def test_vqa_items_are_balanced_and_answers_match():
    items = list(vqa_items(range(1000, 1024), "direct"))
    assert len(items) == 24
    positives = [item for item in items if item.present]
    assert len(positives) == 12
    for finding in FINDINGS:
        asked = [item for item in items if item.finding == finding]
        assert sum(item.present for item in asked) == len(asked) / 2
    for item in items:
        assert item.question == f"Is there evidence of {DISPLAY_NAMES[item.finding]} in the image?"
        assert item.prompt.startswith(item.question) and item.prompt.endswith("without any explanation.")
        assert item.answer == ("Yes" if item.present else "No")
        assert (item.case.finding == item.finding) == item.present
        if not item.present:
            assert (item.case.finding is None) == (item.negative == "normal")
    normals = sum(item.negative == "normal" for item in items if not item.present)
    assert 2 <= normals <= 10  # about half of 12


def test_paired_items_share_anatomy():
    pos, neg = list(vqa_items([77], "direct", findings=("nodule",), normal_fraction=1.0, paired=True))
    assert pos.present and not neg.present and neg.negative == "normal"
    assert np.array_equal(neg.image, pos.case.removed)  # the exact counterfactual


@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize("finding", FINDINGS)
def test_reasoning_answers_end_with_the_verdict(finding, present):
    item = make_vqa_item(31, finding, present, "reasoning", negative="other")
    verdict = "yes" if present else "no"
    assert item.answer.endswith(f"Answer: {verdict}.")
    assert parse_yes_no(item.answer, mode="reasoning") == verdict
    assert item.prompt.endswith("Think step by step and answer with yes or no.")
    if present:
        side = item.case.details.get("side")
        assert (side in item.answer) if side else "cardiac silhouette" in item.answer
    assert item.answer == make_vqa_item(31, finding, present, "reasoning", negative="other").answer


def test_an_other_negative_can_show_a_chosen_finding():
    positive = make_vqa_item(41, "mass", True, "reasoning")
    swapped = make_vqa_item(41, "nodule", False, "reasoning", negative="other", other="mass")
    assert swapped.case.finding == "mass" and swapped.negative == "other"
    assert np.array_equal(swapped.image, positive.image)  # the positive's own image, another question
    assert swapped.question == "Is there evidence of nodule in the image?"
    assert "a mass" in swapped.answer and swapped.answer.endswith("Answer: no.")
    with pytest.raises(PhantomParameterError, match="other="):
        make_vqa_item(41, "nodule", False, "direct", negative="other", other="nodule")
    with pytest.raises(PhantomParameterError, match="other="):
        make_vqa_item(41, "nodule", False, "direct", negative="other", other="fracture")


def test_vqa_refuses_bad_arguments():
    with pytest.raises(PhantomParameterError, match="non-negative"):
        make_vqa_item(-3, "nodule", True, "direct")
    with pytest.raises(PhantomParameterError, match="non-negative"):
        next(vqa_items([-1], "direct"))
    with pytest.raises(UnknownFindingError):
        make_vqa_item(0, "tumour", True, "direct")
    with pytest.raises(CxrAttribError, match="mode"):
        make_vqa_item(0, "nodule", True, "verbose")
    with pytest.raises(PhantomParameterError, match="normal_fraction"):
        next(vqa_items([0], "direct", normal_fraction=1.5))


def test_reference_pool_is_normal_distinct_and_deterministic():
    pool = reference_pool(n=4, seed=9)
    assert len(pool) == 4 and len({p.seed for p in pool}) == 4
    assert all(set(p.masks) == set(CONCEPTS) for p in pool)
    assert [p.seed for p in pool] == [p.seed for p in reference_pool(n=4, seed=9)]
    with pytest.raises(PhantomParameterError):
        reference_pool(n=0)
