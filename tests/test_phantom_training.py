"""Phantom-model training and evaluation: exact inputs, learning, determinism, metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxr_attrib.adapter import Generation, Query, Scorer
from cxr_attrib.errors import DataError
from cxr_attrib.grounding import BoxConvention, evidence_prompt
from cxr_attrib_phantom import make_vqa_item
from cxr_attrib_phantom.evaluation import HELD_OUT_SEED_START, direct_verdicts, evaluate, format_report
from cxr_attrib_phantom.grounding_eval import grounding_items, pooled_hit_rate, side_prior
from train_phantom import (
    MODEL_OVERRIDES,
    TRAIN_SEED_LIMIT,
    TextEncoder,
    TrainingConfig,
    TrainingError,
    default_config,
    rationale_corpus,
    token_labels,
    train,
)
from cxr_attrib.testing import load_tiny_adapter

FAMILIES = sorted(MODEL_OVERRIDES)  # the families the phantom trainer builds (not every tiny recipe)

# The default tiny sizes (no overrides), a few direct steps on a handful of phantom pairs.
SMOKE = dict(pairs_per_batch=2, lr=3e-3, warmup=1, fresh_pairs=0, initial_pairs=1,
             model_overrides={}, log_every=100)


@pytest.fixture
def one_thread():
    """Train on one thread (as the shipped models were), then restore the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir):
    return {family: load_tiny_adapter(tiny_model_dir(family)) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["direct", "reasoning"])
def test_text_encoder_matches_the_adapters_turn_span(family, mode, adapters):
    adapter = adapters[family]
    item = make_vqa_item(11, "pleural_effusion", False, mode)
    encoding = adapter.encode([item.image], Query(item.question, mode, item.prompt, item.answer, "turn"))
    ids, start = TextEncoder(adapter)(item.prompt, item.answer)
    assert torch.equal(ids, encoding.inputs["input_ids"][0])
    # the loss covers exactly the assistant turn: the adapter's "turn" targets, to the end
    assert torch.equal(encoding.target_positions, torch.arange(start, ids.numel()))
    assert (ids == adapter.image_token_id).sum() == 64


def test_default_config_names_and_errors():
    assert default_config("qwen").family == "qwen2_5_vl"
    assert default_config("gemma3", steps=7).steps == 7
    with pytest.raises(TrainingError, match="unknown family"):
        default_config("llama")
    with pytest.raises(TrainingError, match="steps"):
        default_config("qwen", steps=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_steps_lower_the_loss_and_the_folder_loads(family, tmp_path, one_thread):
    config = TrainingConfig(family=family, steps=12, **SMOKE)
    result = train(config, tmp_path / "model", seed=0, log=lambda line: None)
    assert result.steps == 12 and len(result.losses) == 12
    assert np.mean(result.losses[-3:]) < 0.8 * np.mean(result.losses[:3])
    names = {p.name for p in result.folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    reloaded = load_tiny_adapter(result.folder)
    assert type(reloaded.model) is type(result.adapter.model)
    assert all(v.dtype == torch.float32 for v in load_file(result.folder / "model.safetensors").values())
    item = make_vqa_item(HELD_OUT_SEED_START, "nodule", True, "direct")
    scores = reloaded.score([item.image], Query(item.question, "direct", item.prompt, "Yes"))
    assert scores.shape == (1, 1) and float(scores[0, 0]) < 0.0


def test_training_is_deterministic_in_the_seed(tmp_path, one_thread):
    config = TrainingConfig(family="qwen2_5_vl", steps=3, **SMOKE)
    first = train(config, tmp_path / "a", seed=0, log=lambda line: None)
    again = train(config, tmp_path / "b", seed=0, log=lambda line: None)
    other = train(config, tmp_path / "c", seed=1, log=lambda line: None)
    assert torch.tensor([1e-40]).mul(1.0).item() != 0.0, "train() must not flush denormals process-wide"
    assert first.losses == again.losses != other.losses
    a, b = load_file(first.folder / "model.safetensors"), load_file(again.folder / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_continues_the_saved_weights(tmp_path, one_thread):
    first = train(TrainingConfig(family="gemma3", steps=2, **SMOKE), tmp_path / "one", log=lambda line: None)
    frozen = TrainingConfig(family="gemma3", steps=1, **{**SMOKE, "lr": 0.0})
    second = train(frozen, tmp_path / "two", seed=1, init_from=first.folder, log=lambda line: None)
    a, b = load_file(first.folder / "model.safetensors"), load_file(second.folder / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # lr 0: unchanged


def test_token_labels_mark_the_cells_the_finding_changed():
    mask = np.zeros((224, 224), dtype=bool)
    mask[30:70, 100:110] = True  # cols 100..109 lie in cell column 3
    mask[84:88, 100:110] = True  # 40 of cell (3, 3)'s 784 pixels: 5%, under the 10% threshold
    # rows 30..55 cover 260 px of cell (1, 3), rows 56..69 cover 140 px of cell (2, 3)
    labels = token_labels(mask, "mass", (8, 8)).reshape(8, 8)
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[1, 3] = expected[2, 3] = 1 + 1  # "mass" is FINDINGS[1]
    assert torch.equal(labels, torch.from_numpy(expected))
    mask[:] = False
    mask[0:2, 0:28] = True  # 56 of 784 pixels: 7%, under the 10% threshold
    assert not token_labels(mask, "nodule", (8, 8)).any()
    assert not token_labels(np.ones((224, 224), bool), None, (8, 8)).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_token_labels_follow_the_models_image_token_order(family, adapters):
    """Cell k of the labels is the k-th image token: a bright cell moves only that token's embedding."""
    adapter = adapters[family]
    model = adapter.model
    image = np.zeros((224, 224), dtype=np.float32)
    lit = image.copy()
    lit[56:84, 140:168] = 1.0  # cell (2, 5)
    no_text = torch.zeros(1, 1, dtype=torch.long)
    embed = []
    with torch.no_grad():
        for x in (image, lit):
            inputs = adapter.vision_inputs(adapter.pixel_values(torch.from_numpy(x[None])), no_text)
            vision = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_grid_thw")}
            embed.append(model.model.get_image_features(**vision).pooler_output[0])
    moved = (embed[1] - embed[0]).abs().sum(-1)
    mask = np.zeros((224, 224), dtype=bool)
    mask[56:84, 140:168] = True
    assert int(moved.argmax()) == int(token_labels(mask, "nodule", (8, 8)).argmax()) == 2 * 8 + 5


def test_rationale_corpus_makes_rationales_a_few_tokens(adapters, tmp_path, one_thread):
    result = train(TrainingConfig(family="qwen2_5_vl", steps=1, **SMOKE), tmp_path / "q", log=lambda line: None)
    answers = rationale_corpus()
    assert len(answers) == 12 * 6 * 2 and all(a.endswith(("Answer: yes.", "Answer: no.")) for a in answers)
    held_out = make_vqa_item(HELD_OUT_SEED_START + 3, "pneumothorax", True, "reasoning").answer
    trained = len(result.adapter.tokenizer(held_out)["input_ids"])
    plain = len(adapters["qwen2_5_vl"].tokenizer(held_out)["input_ids"])
    assert trained < 0.5 * plain


def test_the_probe_is_not_saved_and_changes_training(tmp_path, one_thread):
    with_probe = train(TrainingConfig(family="qwen2_5_vl", steps=3, **SMOKE), tmp_path / "p", log=lambda line: None)
    without = TrainingConfig(family="qwen2_5_vl", steps=3, **{**SMOKE, "probe_weight": 0.0})
    plain = train(without, tmp_path / "n", log=lambda line: None)
    a, b = load_file(with_probe.folder / "model.safetensors"), load_file(plain.folder / "model.safetensors")
    assert a.keys() == b.keys()  # the same model class, no probe weights
    assert with_probe.losses[0] == plain.losses[0]  # the logged loss is the answer loss
    assert with_probe.losses[1:] != plain.losses[1:]  # the probe's gradient reached the model


def test_wall_time_guard_stops_early_and_says_so(tmp_path):
    lines: list[str] = []
    config = TrainingConfig(family="gemma3", steps=50, **SMOKE)
    result = train(config, tmp_path / "g", seed=0, max_minutes=0.0, log=lines.append)
    assert result.steps == 1
    assert any("WARNING: stopped after 1 of 50 steps" in line for line in lines)


def test_seed_ranges_are_disjoint():
    assert TRAIN_SEED_LIMIT <= HELD_OUT_SEED_START


class _Constant(Scorer):
    """Answers the same verdict whatever the image (direct scores and reasoning text)."""

    family = "constant"

    def __init__(self, verdict: str) -> None:
        super().__init__("constant")
        self.verdict = verdict

    def score(self, images: Sequence[np.ndarray], query: Query, *, batch_size: int | None = None) -> torch.Tensor:
        wanted = query.answer.lower() == self.verdict
        return torch.full((len(images), 1), -0.1 if wanted else -3.0)

    def generate(self, image: np.ndarray, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        return Generation(f"Both lungs look fine. Answer: {self.verdict}.", (), ())

    def encode(self, images, query):
        raise AssertionError("not used")


def test_an_always_yes_model_is_sensitive_but_never_specific_nor_causal():
    report = evaluate(_Constant("yes"), per_finding=2, reasoning_per_finding=2, findings=("nodule",))
    m = report.per_finding["nodule"]
    # 2 positives (yes: right), 1 normal + 1 other negative (yes: wrong) -> 2 / 4
    assert (m.accuracy, m.sensitivity, m.specificity_normal, m.specificity_other) == (0.5, 1.0, 0.0, 0.0)
    assert (m.flip_rate, m.retention) == (0.0, 0.0)  # "removed" is never answered no
    assert (m.reasoning_parse_rate, m.reasoning_accuracy) == (1.0, 0.5)
    assert report.accuracy == 0.5 and report.retention == 0.0
    assert "nodule" in format_report(report)


def test_an_always_no_model_is_specific_only():
    report = evaluate(_Constant("no"), per_finding=2, reasoning_per_finding=0, findings=("cardiomegaly",))
    m = report.per_finding["cardiomegaly"]
    assert (m.accuracy, m.sensitivity, m.specificity_normal, m.specificity_other) == (0.5, 0.0, 1.0, 1.0)
    assert m.retention == 0.0 and np.isnan(m.reasoning_accuracy)


def test_direct_verdicts_compare_yes_with_no():
    images = [np.zeros((224, 224), np.float32)] * 3
    assert direct_verdicts(_Constant("yes"), images, "mass").tolist() == [True, True, True]
    assert direct_verdicts(_Constant("no"), images, "mass").tolist() == [False, False, False]


@pytest.mark.parametrize("kwargs", [{"per_finding": 3}, {"reasoning_per_finding": 1}, {"findings": ("edema",)}])
def test_evaluate_rejects_bad_arguments(kwargs):
    with pytest.raises(DataError):
        evaluate(_Constant("yes"), **kwargs)


class _Grounder(_Constant):
    """Says yes, and states scripted boxes (in a 112-px model frame) for each grounding case."""

    box_convention = BoxConvention(key="bbox_2d", order="xyxy", frame=(112.0, 112.0))

    def __init__(self, answers: dict[bytes, dict[str, str]]) -> None:
        super().__init__("yes")
        self.answers = answers  # image bytes -> {"evidence": text, "where": text}
        self.prompts: list[str] = []

    def generate(self, image: np.ndarray, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        self.prompts.append(prompt)
        question = "evidence" if "The answer is" in prompt else "where"
        return Generation(self.answers[image.tobytes()][question], (), ())


def _stated(*boxes) -> str:
    """The JSON a Qwen-style model writes: working-frame boxes halved into its 112-px frame."""
    return json.dumps([{"bbox_2d": [v / 2 for v in box]} for box in boxes])


def test_grounding_scores_the_first_stated_box_against_the_exact_box_beside_the_side_prior():
    cases = grounding_items("mass", 2, HELD_OUT_SEED_START)
    truth = [tuple(item.case.boxes[0]) for item in cases]
    assert truth == [(50.0, 96.0, 90.0, 136.0), (142.0, 81.0, 173.0, 113.0)]  # right, then left mass
    # shifted right by half the width: overlap w/2 of 3w/2 -> IoU exactly 1/3
    shifted = [(50.0 + 20, 96.0, 90.0 + 20, 136.0), (142.0 + 15.5, 81.0, 173.0 + 15.5, 113.0)]
    model = _Grounder({
        cases[0].image.tobytes(): {"evidence": _stated(truth[0]), "where": "I cannot tell."},
        cases[1].image.tobytes(): {"evidence": _stated(shifted[1], truth[1]),  # only the first box counts
                                   "where": f"Here:\n```json\n{_stated(truth[1])}\n```"},
    })
    report = evaluate(model, per_finding=2, reasoning_per_finding=0, findings=("mass",),
                      grounding_per_finding=2, prior_cases=5)
    g = report.grounding["mass"]
    assert g.evidence.ious == pytest.approx((1.0, 1 / 3)) and g.evidence.parsed == (True, True)
    assert (g.evidence.parse_rate, g.evidence.hit_rate) == (1.0, 0.5)
    assert g.evidence.mean_iou == pytest.approx(2 / 3)
    assert g.where.ious == (0.0, 1.0) and (g.where.parse_rate, g.where.mean_iou, g.where.hit_rate) == (0.5, 0.5, 0.5)
    # side prior over training seeds 0..4: right = median of seeds 1, 4; left = median of seeds 0, 2, 3
    assert side_prior("mass", range(5)) == {"left": (133.0, 70.0, 176.0, 112.0), "right": (46.0, 86.0, 90.0, 129.0)}
    # right: overlap 40 x 33 = 1320 of 1600 + 1892 - 1320; left: 31 x 31 = 961 of 992 + 1806 - 961
    assert g.prior.ious == pytest.approx((1320 / 2172, 961 / 1837)) and g.prior.hit_rate == 1.0
    assert report.grounding_hit_rate("evidence") == 0.5 and report.grounding_hit_rate("prior") == 1.0
    question = "Is there evidence of mass in the image?"
    assert model.prompts == [evidence_prompt(question, "Yes", model.box_convention)] * 2 \
        + ["Where is the mass? Answer with a bounding box."] * 2
    text = format_report(report)
    assert "large, pooled hit" in text and "grounding sample mass" in text


def test_grounding_is_off_by_default_and_rejects_bad_counts():
    assert evaluate(_Constant("yes"), per_finding=2, reasoning_per_finding=0, findings=("mass",)).grounding == {}
    with pytest.raises(DataError, match="grounding_per_finding"):
        evaluate(_Constant("yes"), grounding_per_finding=-1)
    assert np.isnan(pooled_hit_rate([], "evidence"))
    with pytest.raises(DataError, match="source"):
        pooled_hit_rate([], "said")
