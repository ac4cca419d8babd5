"""MedFocus end to end on wired tiny models: right concept, fallback, frames, passes, tokens, SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import Query
from cxr_attrib.api import DEFAULT_METHOD
from cxr_attrib.errors import CxrAttribError, DataError, MethodParameterError, ModelLoadError, UnknownPoolError
from cxr_attrib.filtering import box_mask
from cxr_attrib.frames import ResizePad
from cxr_attrib.perturb import baseline_image
from cxr_attrib.pools import COMPOSITES, CONCEPTS
from cxr_attrib.registry import get_method
from cxr_attrib.segmentation import load_segmenter
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing import check_method
from cxr_attrib.testing.tiny_models import wired_adapter
from cxr_attrib_phantom import generate_phantom
from cxr_attrib_plugins.medfocus import method as medfocus_module
from cxr_attrib_plugins.medfocus.transfer import ConceptTransfer, transfer_concepts

Q = "Is there evidence of nodule in the image?"
CELL = 28  # token cell side at 224 (8 x 8 grid) in both tiny families
WIRED = (84.0, 56.0, 140.0, 112.0)  # 2 x 2 token cells
LEFT, RIGHT = (84.0, 56.0, 112.0, 112.0), (112.0, 56.0, 140.0, 112.0)  # its two halves
FAR = (0.0, 168.0, 28.0, 196.0)  # a cell the wired model cannot see
# The wired model's weights are random, so hiding its region moves each answer's log-prob up
# or down by chance, by hundredths of a nat; with seed 4 the answer "No" drops, and drops
# more the more is hidden. tau=1 keeps such a winner (fallback only when nothing drops).
SEED, ANSWER, KEEP = 4, "No", {"tau": 1.0}


def _fake_transfer(boxes: dict[str, tuple], masks: dict[str, np.ndarray] | None = None) -> ConceptTransfer:
    """A transfer whose concepts sit where the test says (every other concept on FAR)."""
    boxes = {c: boxes.get(c, FAR) for c in CONCEPTS}
    masks = {c: (masks or {}).get(c, box_mask([boxes[c]], (224, 224))) for c in CONCEPTS}
    return ConceptTransfer(pool="phantom", reference=0, reference_id="fake", boxes=boxes, masks=masks,
                           cost=0.0, scores=(0.0,))


@pytest.fixture
def fake_transfer(monkeypatch):
    """Make MedFocus use a hand-placed transfer: ``fake_transfer(boxes, masks=None)``."""

    def install(boxes, masks=None):
        found = _fake_transfer(boxes, masks)
        monkeypatch.setattr(medfocus_module, "transfer_concepts", lambda *a, **k: found)
        return found

    return install


@pytest.fixture(scope="module")
def wired_qwen():
    return wired_adapter("qwen2_5_vl", WIRED, seed=SEED)


def _overlap(box: tuple, cell: tuple) -> float:
    """Fraction of ``cell`` that ``box`` covers."""
    width = max(0.0, min(box[2], cell[2]) - max(box[0], cell[0]))
    height = max(0.0, min(box[3], cell[3]) - max(box[1], cell[1]))
    return width * height / ((cell[2] - cell[0]) * (cell[3] - cell[1]))


def _cells():
    return [(c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL) for r in range(8) for c in range(8)]


@pytest.fixture(scope="module")
def phantom_case():
    """A held-out phantom and its real transfer from the built-in pool (computed once).

    Seed 4250 is one whose transferred boxes leave a token cell that every concept box
    either holds whole or misses, so the expected winner is not a matter of chance.
    """
    pixels = generate_phantom(4250).to_uint8()
    working = ResizePad(224, 224, size=224).image_to_working(pixels)  # what attribute() hands the method
    return pixels, working, transfer_concepts(working, "phantom")


def _answer_that_drops(adapter, image: np.ndarray, cell: tuple) -> str:
    """"Yes" or "No": whichever the random model finds less likely once ``cell`` is black."""
    x1, y1, x2, y2 = map(int, cell)
    hidden = image.copy()
    hidden[y1:y2, x1:x2] = 0.0
    drops = {}
    for answer in ("Yes", "No"):
        query = Query(Q, "direct", build_prompt(Q, "direct"), answer, "answer")
        lp = adapter.score([image, hidden], query).sum(-1)
        drops[answer] = float(lp[0] - lp[1])
    return max(drops, key=drops.get)


# ---------------------------------------------------------------- the decision on a real transfer


def test_winner_is_the_concept_covering_the_decisive_region(phantom_case):
    pixels, working, transfer = phantom_case
    clean = [cell for cell in _cells() if all(_overlap(transfer.boxes[c], cell) in (0.0, 1.0) for c in CONCEPTS)
             and any(_overlap(transfer.boxes[c], cell) == 1.0 for c in CONCEPTS)]
    assert clean, "no token cell is held whole or missed by every concept box: pick another phantom"
    for cell in clean:
        covering = [c for c in CONCEPTS if _overlap(transfer.boxes[c], cell) == 1.0]
        area = {c: box_mask([transfer.boxes[c]], (224, 224)).sum() for c in covering}
        expected = min(covering, key=area.get)  # equal drops: the most specific concept wins
        adapter = wired_adapter("qwen2_5_vl", cell, seed=SEED)
        answer = _answer_that_drops(adapter, working, cell)
        result = attribute(adapter, pixels, Q, answer=answer, **KEEP)
        info, drops = result.meta.info, {n: c.score for n, c in result.concepts.items()}
        assert result.meta.method == "medfocus" and info["winner"] == expected and not info["fallback"]
        assert result.boxes == (tuple(transfer.boxes[expected]),)
        for c in CONCEPTS:
            if c in covering:
                assert drops[c] == pytest.approx(drops[expected], abs=1e-6) and drops[c] > 1e-4
            else:
                assert drops[c] < 1e-6, f"{c} misses the decisive cell yet its removal mattered"
        assert info["pool"] == "phantom" and info["reference_id"] == transfer.reference_id
        assert info["refinement"].startswith("none")


def test_a_cell_outside_every_transferred_concept_falls_back_to_the_whole_image(phantom_case):
    pixels, working, _ = phantom_case
    transfer = transfer_concepts(working, "phantom", mass_quantile=0.5)  # tighter boxes leave the corners free
    outside = [cell for cell in _cells() if all(_overlap(transfer.boxes[c], cell) == 0.0 for c in CONCEPTS)
               and working[int(cell[1]):int(cell[3]), int(cell[0]):int(cell[2])].max() > 0.05]
    assert outside, "every visible token cell touches a concept box: pick another phantom"
    adapter = wired_adapter("gemma3", outside[0])
    result = attribute(adapter, pixels, Q, answer="Yes", mass_quantile=0.5)
    assert result.meta.info["fallback"] and result.meta.info["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert result.boxes == ((0.0, 0.0, 224.0, 224.0),)
    assert max(c.score for c in result.concepts.values()) < 1e-6
    assert {c: result.concepts[c].boxes for c in CONCEPTS} == {c: (transfer.boxes[c],) for c in CONCEPTS}


def test_a_non_square_image_with_no_concept_on_the_region_falls_back(fake_transfer):
    # every concept away from the wired region: nothing any intervention hides is seen
    fake_transfer({c: (0.0, 0.0, 56.0, 56.0) for c in CONCEPTS[:6]})
    adapter = wired_adapter("gemma3", WIRED)
    result = attribute(adapter, np.full((300, 200), 180, np.uint8), Q, answer="Yes")
    assert result.meta.info["fallback"] and result.meta.info["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert result.boxes == ((0.0, 0.0, 200.0, 300.0),)
    assert max(c.score for c in result.concepts.values()) < 1e-6


# ---------------------------------------------------------------- frames, composites, shapes


def test_boxes_land_on_the_exact_finding_box_of_a_non_square_image(wired_qwen, fake_transfer):
    # input 448 tall x 224 wide: scale 0.5, content columns 56..168 of the working frame
    finding = (56.0, 112.0, 168.0, 224.0)  # input frame; its working-frame image is WIRED
    frame = ResizePad(448, 224, size=224)
    assert tuple(frame.boxes_to_working([finding])[0]) == WIRED
    fake_transfer({"left_lung": WIRED})
    pixels = np.random.default_rng(1).integers(40, 255, size=(448, 224), dtype=np.uint8)
    result = attribute(wired_qwen, pixels, Q, answer=ANSWER, **KEEP)
    assert result.meta.info["winner"] == "left_lung"
    assert result.boxes == (finding,)
    assert result.concepts["left_lung"].boxes == (finding,)
    assert result.concepts["left_lung"].score > 1e-3, "the intervention hit the model's region"
    assert result.heatmap.shape == (448, 224)
    assert result.heatmap[114:222, 58:166].min() == pytest.approx(result.concepts["left_lung"].score, rel=1e-5)


def test_a_composite_wins_and_reports_its_members_boxes(wired_qwen, fake_transfer):
    fake_transfer({"left_lung": LEFT, "right_lung": RIGHT})
    result = attribute(wired_qwen, np.full((224, 224), 200, np.uint8), Q, answer=ANSWER, **KEEP)
    scores = {n: c.score for n, c in result.concepts.items()}
    assert scores["bilateral_lungs"] > max(scores["left_lung"], scores["right_lung"]) > 1e-3
    assert result.meta.info["winner"] == "bilateral_lungs"
    assert result.boxes == (LEFT, RIGHT), "members' boxes, not their union"
    assert result.concepts["bilateral_lungs"].boxes == (LEFT, RIGHT)
    assert set(result.concepts) == set(CONCEPTS) | set(COMPOSITES)


def test_area_normalisation_divides_each_drop_by_the_share_hidden(wired_qwen, fake_transfer):
    big = (0.0, 0.0, 224.0, 224.0)
    fake_transfer({"left_hilar": LEFT, "cardiac_silhouette": big})
    image = np.full((224, 224), 200, np.uint8)
    plain = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP)
    scaled = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP, normalise="area")
    area = {"left_hilar": 28 * 56, "cardiac_silhouette": 224 * 224}
    for c, a in area.items():
        assert scaled.concepts[c].score == pytest.approx(plain.concepts[c].score * 224 * 224 / a, rel=1e-6)
    assert plain.meta.info["winner"] == "cardiac_silhouette"  # it hides the whole decisive region
    best = max(scaled.concepts, key=lambda n: scaled.concepts[n].score)
    assert scaled.meta.info["winner"] == best == "left_hilar"


def test_mask_shaped_interventions_fill_the_mask_not_the_box(wired_qwen, fake_transfer):
    ring = box_mask([(56.0, 28.0, 168.0, 140.0)], (224, 224)) & ~box_mask([WIRED], (224, 224))
    fake_transfer({"mediastinum": (56.0, 28.0, 168.0, 140.0)}, {"mediastinum": ring})
    image = np.full((224, 224), 200, np.uint8)
    boxed = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP)
    masked = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP, shape="mask")
    assert boxed.concepts["mediastinum"].score > 1e-3
    assert masked.concepts["mediastinum"].score < 1e-5 and masked.meta.info["fallback"]


@pytest.mark.parametrize("fill", ["zero", "mean", "blur", 0.5])
def test_each_intervention_fills_exactly_its_region_with_the_baseline(wired_qwen, fake_transfer, monkeypatch, fill):
    transfer = fake_transfer({"left_lung": LEFT, "right_lung": RIGHT, "cardiac_silhouette": (10.0, 20.0, 50.0, 90.0)})
    batches = []
    score = wired_qwen.score

    def spy(images, query, **options):
        batches.append(images)
        return score(images, query, **options)

    monkeypatch.setattr(wired_qwen, "score", spy)
    pixels = np.random.default_rng(7).integers(40, 255, size=(224, 224), dtype=np.uint8)
    attribute(wired_qwen, pixels, Q, answer=ANSWER, fill=fill)
    (images,) = batches
    working = pixels.astype(np.float32) / 255.0
    baseline = baseline_image(working, fill)
    assert len(images) == 16 and np.array_equal(images[0], working)
    for image, name in zip(images[1:], [*CONCEPTS, *COMPOSITES]):
        region = box_mask(transfer.member_boxes(name), (224, 224))
        np.testing.assert_array_equal(image[region], baseline[region])
        np.testing.assert_array_equal(image[~region], working[~region])


# ---------------------------------------------------------------- passes and token-level drops


def test_original_and_15_interventions_share_one_forward_call(wired_qwen, fake_transfer):
    fake_transfer({"left_lung": LEFT, "right_lung": RIGHT})
    image = np.full((224, 224), 200, np.uint8)
    one = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP)
    assert one.meta.passes == {"forward_calls": 1, "forward_sequences": 16, "backward_calls": 0,
                               "backward_sequences": 0, "generate_calls": 0}
    four = attribute(wired_qwen, image, Q, answer=ANSWER, **KEEP, batch_size=4)
    assert four.meta.passes["forward_calls"] == 4 and four.meta.passes["forward_sequences"] == 16
    for name, concept in one.concepts.items():
        assert four.concepts[name].score == pytest.approx(concept.score, abs=1e-5)


def test_token_scores_are_the_winners_per_token_drops(wired_qwen, fake_transfer):
    fake_transfer({"left_lung": WIRED})
    pixels = np.random.default_rng(5).integers(40, 255, size=(224, 224), dtype=np.uint8)
    answer = "No, there is no nodule."
    result = attribute(wired_qwen, pixels, Q, answer=answer, target="response")
    working = pixels.astype(np.float32) / 255.0
    hidden = working.copy()
    hidden[56:112, 84:140] = 0.0
    query = Query(Q, "direct", result.meta.prompt, answer, "response")
    lp = wired_qwen.score([working, hidden], query).double().numpy()
    by_hand = np.maximum(0.0, lp[0] - lp[1])
    assert len(result.tokens) == lp.shape[1] > 1
    assert [t.token for t in result.tokens] == list(result.target.tokens)
    np.testing.assert_allclose([t.score for t in result.tokens], by_hand, atol=1e-5)
    assert result.concepts["left_lung"].score == pytest.approx(by_hand.sum(), abs=1e-5)


# ---------------------------------------------------------------- refinement with a tiny SAM


def test_tiny_sam_refines_all_concept_boxes_in_one_call(wired_qwen, fake_transfer, tiny_sam_dir):
    boxes = {c: (20.0 + 8 * i, 30.0 + 5 * i, 120.0 + 6 * i, 150.0 + 4 * i) for i, c in enumerate(CONCEPTS)}
    fake_transfer(boxes)
    segmenter = load_segmenter(tiny_sam_dir)
    calls = []
    handle = segmenter.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        pixels = np.random.default_rng(2).integers(40, 255, size=(224, 224), dtype=np.uint8)
        result = attribute(wired_qwen, pixels, Q, answer=ANSWER, **KEEP, sam=str(tiny_sam_dir))
        assert len(calls) == 1
        expected = segmenter.segment(pixels.astype(np.float32) / 255.0, [boxes[c] for c in CONCEPTS])
    finally:
        handle.remove()
    assert result.meta.info["refinement"] == f"sam: {segmenter.source}"
    for i, c in enumerate(CONCEPTS):
        want = boxes[c] if i in expected.empty else expected.boxes[i]
        assert result.concepts[c].boxes == (want,)


# ---------------------------------------------------------------- bad input, before any pass


@pytest.mark.parametrize("params, error, words", [
    ({"tau": 0.0}, MethodParameterError, r"'tau' = 0.0 is invalid; expected a number in \(0, 1\]"),
    ({"tau": 1.5}, MethodParameterError, "tau"),
    ({"mass_quantile": 0.0}, MethodParameterError, r"'mass_quantile' = 0.0 is invalid; expected a number in \(0, 1\]"),
    ({"mass_quantile": 2}, MethodParameterError, "mass_quantile"),
    ({"pool": "phantoms"}, UnknownPoolError, "unknown pool 'phantoms'.*Did you mean 'phantom'"),
    ({"sam": "/nonexistent/medsam"}, MethodParameterError, "'sam' = '/nonexistent/medsam' does not exist"),
    ({"shape": "circle"}, MethodParameterError, "'shape' = 'circle' is invalid; expected one of 'box', 'mask'"),
    ({"normalise": "size"}, MethodParameterError, "'normalise' = 'size' is invalid; expected one of 'none', 'area'"),
    ({"selection": "best"}, MethodParameterError, "selection"),
    ({"fill": "purple"}, MethodParameterError, "'fill' = 'purple' is invalid; expected one of 'zero'"),
    ({"batch_size": 0}, MethodParameterError, r"'batch_size' = 0 is invalid; expected an integer in \[1, "),
])
def test_bad_parameters_are_refused_before_any_model_pass(tiny_qwen_adapter, params, error, words):
    tiny_qwen_adapter.counter.reset()
    with pytest.raises(error, match=words):
        attribute(tiny_qwen_adapter, np.full((40, 30), 120, np.uint8), Q, answer="Yes", **params)
    assert tiny_qwen_adapter.counter.forward_calls == 0
    assert issubclass(error, CxrAttribError)


def test_a_cache_folder_inside_the_data_root_is_refused(tiny_qwen_adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path))
    with pytest.raises(DataError):
        attribute(tiny_qwen_adapter, np.full((40, 30), 120, np.uint8), Q, answer="Yes",
                  cache_dir=str(tmp_path / "cache"))


def test_a_black_image_is_a_recorded_whole_image_fallback(tiny_qwen_adapter):
    result = attribute(tiny_qwen_adapter, np.zeros((40, 30), np.uint8), Q, answer="Yes")
    assert result.meta.info["fallback"] and "no concept transfer" in result.meta.info["fallback_reason"]
    assert result.boxes == ((0.0, 0.0, 30.0, 40.0),) and result.meta.passes["forward_calls"] == 0
    assert any("fell back to the whole image" in w for w in result.meta.warnings)


def test_an_unusable_transport_plan_is_a_recorded_fallback_never_a_winner(tiny_qwen_adapter):
    """No selection solve converges in one iteration (degenerate plans: tests/test_concept_transfer.py)."""
    pixels = np.random.default_rng(11).integers(30, 255, size=(60, 50), dtype=np.uint8)
    result = attribute(tiny_qwen_adapter, pixels, Q, answer="Yes", max_iter=1)
    reason = "did not converge"
    assert result.meta.info["fallback"] and "concept transfer failed" in result.meta.info["fallback_reason"]
    assert reason in result.meta.info["fallback_reason"]
    assert any(reason in w and "whole image" in w for w in result.meta.warnings)
    assert result.boxes == ((0.0, 0.0, 50.0, 60.0),) and "winner" not in result.meta.info


# ---------------------------------------------------------------- registry and conformance


def test_medfocus_is_the_default_method():
    assert DEFAULT_METHOD == "medfocus" and get_method(DEFAULT_METHOD).output == "concepts"


@pytest.mark.parametrize("family", ["tiny_qwen_adapter", "tiny_gemma_adapter"])
def test_medfocus_conforms(family, request):
    results = check_method("medfocus", request.getfixturevalue(family))
    for result in results:
        assert set(result.concepts) == set(CONCEPTS) | set(COMPOSITES)
        assert result.meta.passes["forward_sequences"] == 16
        assert torch.isfinite(torch.tensor([c.score for c in result.concepts.values()])).all()


def test_a_cache_folder_lets_a_second_model_reuse_the_concept_boxes(tiny_qwen_adapter, tiny_gemma_adapter, tmp_path,
                                                                    monkeypatch):
    from cxr_attrib_plugins.medfocus import transfer as transfer_module

    pixels = np.random.default_rng(11).integers(30, 255, size=(60, 50), dtype=np.uint8)
    first = attribute(tiny_qwen_adapter, pixels, Q, answer="Yes", cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("*.json"))) == 1 and len(list(tmp_path.glob("*.npz"))) == 1

    def no_solve(*args, **kwargs):
        raise AssertionError("the cached transfer should have been read from the folder")

    monkeypatch.setattr(transfer_module, "solve_uot", no_solve)
    second = attribute(tiny_gemma_adapter, pixels, Q, answer="Yes", cache_dir=str(tmp_path))
    assert {n: c.boxes for n, c in second.concepts.items()} == {n: c.boxes for n, c in first.concepts.items()}
    assert second.meta.info["reference_id"] == first.meta.info["reference_id"]
