"""Adapter contract checks run on both families' tiny models (see docs/user-guide.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import Adapter, LoadOptions, Query
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import model_cards
from cxr_attrib.targets import TargetError, build_prompt
from cxr_attrib.testing import load_tiny_adapter, wired_adapter
from cxr_attrib.hf import logprobs as hf_logprobs

FAMILIES = ["qwen2_5_vl", "gemma3"]
END = {"qwen2_5_vl": "<|im_end|>", "gemma3": "<end_of_turn>"}
QUESTION = "Is there evidence of pleural effusion in the image?"
REASONING = "The left lung base is blunted. Answer: yes."


def images(count: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """Seeded grey working images on the 8-bit grid (k / 255), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (size, size)) / 255).astype(np.float32) for _ in range(count)]


def query(answer: str, mode: str = "direct", policy: str = "answer") -> Query:
    return Query(QUESTION, mode, build_prompt(QUESTION, mode), answer, policy)  # type: ignore[arg-type]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def adapter(family: str, request: pytest.FixtureRequest) -> Adapter:
    name = "tiny_qwen_adapter" if family == "qwen2_5_vl" else "tiny_gemma_adapter"
    return request.getfixturevalue(name)


@pytest.mark.parametrize(
    ("answer", "mode", "expected"),
    [
        ("Yes.", "direct", {"answer": "Yes", "response": "Yes.", "turn": "Yes.{end}\n"}),
        (
            REASONING,
            "reasoning",
            {"answer": " yes", "response": REASONING, "turn": REASONING + "{end}\n"},
        ),
        ("No evidence of effusion.", "direct", {"answer": "No", "response": "No evidence of effusion."}),
    ],
)
def test_span_policies_select_the_intended_tokens(adapter, family, answer, mode, expected):
    for policy, text in expected.items():
        enc = adapter.encode(images(1), query(answer, mode, policy))
        ids = enc.inputs["input_ids"][0]
        assert "".join(enc.target_tokens) == text.format(end=END[family])
        assert torch.equal(ids[enc.target_positions], enc.target_ids)
        # contiguous, and the text decoded from the first target onwards starts with it
        positions = enc.target_positions.tolist()
        assert positions == list(range(positions[0], positions[-1] + 1))
        tail = adapter.tokenizer.decode(ids[positions[0] :].tolist())
        assert tail.startswith(text.format(end=END[family]))
        assert torch.equal(enc.predictor_positions, enc.target_positions - 1)


def test_answer_policy_needs_a_verdict_word(adapter):
    with pytest.raises(TargetError, match="no yes/no verdict"):
        adapter.encode(images(1), query("The lungs look clear to me."))


def test_image_positions_and_grid(adapter):
    enc = adapter.encode(images(2), query("Yes."))
    gh, gw = enc.grid
    ids = enc.inputs["input_ids"]
    assert (gh, gw) == (8, 8) and enc.image_positions.numel() == gh * gw
    assert torch.equal(torch.nonzero(ids[0] == adapter.image_token_id)[:, 0], enc.image_positions)
    assert torch.equal(ids[0], ids[1]) and enc.batch_size == 2
    assert int(enc.image_positions[-1] - enc.image_positions[0]) == gh * gw - 1
    assert enc.target_positions.min() > enc.image_positions.max()


def test_score_equals_log_softmax_of_the_models_own_logits(adapter):
    pics = images(2, seed=1)
    q = query(REASONING, "reasoning", "response")
    enc = adapter.encode(pics, q)
    with torch.no_grad():
        logits = adapter.model(**enc.inputs).logits.double()
    reference = torch.log_softmax(logits, -1)[:, enc.predictor_positions]
    reference = reference.gather(2, enc.target_ids.view(1, -1, 1).expand(2, -1, 1))[..., 0]
    scores = adapter.score(pics, q)
    assert scores.dtype == torch.float32 and scores.shape == (2, len(enc.target_ids))
    torch.testing.assert_close(scores.double(), reference, atol=1e-5, rtol=0)


def test_batched_scoring_equals_one_by_one_and_counts_passes(adapter):
    pics = images(5, seed=2)
    q = query(REASONING, "reasoning", "response")
    adapter.counter.reset()
    together = adapter.score(pics, q)
    assert adapter.counter.forward_calls == 1 and adapter.counter.forward_sequences == 5
    alone = torch.cat([adapter.score([p], q) for p in pics])
    chunked = adapter.score(pics, q, batch_size=2)
    assert adapter.counter.forward_calls == 1 + 5 + 3 and adapter.counter.forward_sequences == 15
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, chunked, atol=1e-5, rtol=0)
    assert together.std(0).max() > 0, "different images must give different scores"
    adapter.counter.reset()


def test_forward_equals_score_and_counts_each_backward(adapter):
    pics = images(3, seed=3)
    q = query("Yes.", policy="turn")
    working = torch.from_numpy(np.stack(pics)).requires_grad_(True)
    adapter.counter.reset()
    result = adapter.forward(working, q)
    assert result.logprobs.dtype == torch.float32 and result.logprobs.shape == (3, 4)
    torch.testing.assert_close(result.logprobs.detach(), adapter.score(pics, q), atol=1e-5, rtol=0)
    result.backward()
    torch.autograd.grad(adapter.forward(working[:1], q).total.sum(), working)  # as Captum runs it
    assert adapter.counter.as_dict() == {
        "forward_calls": 3, "forward_sequences": 7, "backward_calls": 2, "backward_sequences": 4, "generate_calls": 0,
    }
    assert working.grad.shape == (3, 224, 224) and torch.isfinite(working.grad).all()
    assert (working.grad.abs().sum(dim=(1, 2)) > 0).all()
    adapter.counter.reset()


def test_torch_pixel_path_equals_the_processor(adapter):
    pics = images(2, seed=7) + [np.random.default_rng(3).random((224, 224), dtype=np.float32)]
    expected = adapter.pixel_inputs(pics)
    got = adapter.pixel_values(torch.from_numpy(np.stack(pics)))
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_forward_captures_layers_with_their_gradients(adapter):
    q = query("Yes.")
    result = adapter.forward(torch.from_numpy(np.stack(images(2, seed=8))), q, hidden=(0, -1), vision=(-1,), grad=True)
    length = adapter.encode(images(1), q).inputs["input_ids"].shape[1]
    (ph, pw) = adapter.geometry.patch_grid
    width = adapter.model.config.get_text_config().hidden_size
    assert result.hidden[0].shape == result.hidden[-1].shape == (2, length, width)
    assert result.vision[-1].shape[:2] == (2, ph * pw)
    result.backward()
    for capture in (result.hidden[0], result.hidden[-1], result.vision[-1]):
        assert capture.grad is not None and capture.grad.shape == capture.shape
    # the last layer's output reaches the target only through the predictor rows
    last = result.hidden[-1].grad
    # exact zero by construction: no later computation reads these rows
    assert last[:, result.image_positions].abs().max() == 0
    assert last[:, result.predictor_positions].abs().sum() > 0
    assert result.hidden[0].grad[:, result.image_positions].abs().sum() > 0


@pytest.mark.parametrize(("field", "index"), [("hidden", 2), ("hidden", -3), ("vision", 5)])
def test_forward_rejects_layers_outside_the_model(adapter, field, index):
    with pytest.raises(IndexError, match=rf"{field} layer {index} is out of range"):
        adapter.forward(torch.zeros(1, 224, 224), query("Yes."), **{field: (index,)})


@pytest.mark.parametrize("space", ["pixel", "patch", "token"])
def test_maps_back_sum_preserves_totals_and_mean_preserves_levels(adapter, space):
    geometry = adapter.geometry
    shape = {
        "pixel": tuple(adapter.pixel_values(torch.zeros(2, 224, 224)).shape),
        "patch": (2, geometry.patch_grid[0] * geometry.patch_grid[1]),
        "token": (2, geometry.token_grid[0] * geometry.token_grid[1]),
    }[space]
    values = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    summed = adapter.to_working(values, space, "sum")
    assert summed.shape == (2, 224, 224) and summed.dtype == torch.float32
    torch.testing.assert_close(summed.sum(dim=(1, 2)), values.flatten(1).sum(1), rtol=1e-5, atol=0)
    level = adapter.to_working(torch.full(shape, 0.25), space, "mean")
    torch.testing.assert_close(level, torch.full((2, 224, 224), 0.25))


def test_generation_scores_equal_teacher_forced_scores(family, tiny_model_dir):
    adapter = load_tiny_adapter(tiny_model_dir(family))
    tok = adapter.tokenizer
    first = tok.convert_tokens_to_ids(["Yes", "No"])
    later = [tok.encode(word, add_special_tokens=False)[0] for word in (" yes", " no", " lung", " heart", ".")]
    # keep greedy text re-tokenisable: only whole words may be generated, never an end token
    allowed = set(first + later)
    adapter.model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in allowed]
    adapter.model.generation_config.begin_suppress_tokens = later
    prompt = build_prompt(QUESTION, "direct")
    gen = adapter.generate(images(1, seed=4)[0], prompt, max_new_tokens=6)
    assert len(gen.token_ids) == 6 and len(gen.logprobs) == 6 and adapter.counter.generate_calls == 1
    assert gen.text == tok.decode(list(gen.token_ids))
    q = Query(QUESTION, "direct", prompt, gen.text, "response")
    enc = adapter.encode(images(1, seed=4), q)
    assert enc.target_ids.tolist() == list(gen.token_ids)
    forced = adapter.score(images(1, seed=4), q)[0]
    torch.testing.assert_close(forced, torch.tensor(gen.logprobs), atol=1e-4, rtol=0)


def test_generation_stops_at_end_of_turn_and_strips_it(family, tiny_model_dir):
    adapter = load_tiny_adapter(tiny_model_dir(family))
    tok = adapter.tokenizer
    yes, end = tok.convert_tokens_to_ids(["Yes", END[family]])
    assert end < yes
    head = adapter.model.get_output_embeddings().weight
    with torch.no_grad():
        head[end] = head[yes]  # equal logits: greedy argmax takes the lower id, the end token
    adapter.model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in (yes, end)]
    adapter.model.generation_config.begin_suppress_tokens = [end]
    gen = adapter.generate(images(1)[0], build_prompt(QUESTION, "direct"), max_new_tokens=40)
    assert gen.token_ids == (yes,) and gen.text == "Yes" and len(gen.logprobs) == 1


def test_token_logprobs_chunks_match_a_full_log_softmax(monkeypatch):
    monkeypatch.setattr(hf_logprobs, "VOCAB_CHUNK_ELEMENTS", 7 * 16)  # 7 vocabulary rows per chunk
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    hidden = torch.randn(6, 16, dtype=torch.bfloat16)
    targets = torch.tensor([0, 7, 13, 49, 21, 21])
    got = hf_logprobs.token_logprobs(hidden, head, targets)
    reference = torch.log_softmax(head(hidden.float()).double(), -1).gather(1, targets[:, None])[:, 0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference, atol=1e-5, rtol=0)


def test_decoder_layers_and_describe(adapter):
    layers = adapter.decoder_layers()
    assert len(layers) == adapter.model.config.get_text_config().num_hidden_layers == 2
    assert len(adapter.vision_layers()) == 2 and adapter.supports_gradients
    facts = adapter.describe()
    assert facts["dtype"] == "float32" and facts["grid"] == [8, 8] and facts["family"] == adapter.family
    assert facts["patch_grid"] == [16, 16]


def test_geometry_of_the_tiny_models(adapter):
    geometry = adapter.geometry
    assert (geometry.working_size, geometry.model_size, geometry.patch_size) == (224, (224, 224), 14)
    assert (geometry.patch_grid, geometry.token_grid, geometry.patches_per_token) == ((16, 16), (8, 8), (2, 2))
    assert sorted(geometry.patch_order.tolist()) == list(range(256))


def test_encode_rejects_images_outside_the_working_frame(adapter):
    with pytest.raises(ValueError, match=r"expected the working frame \(224, 224\)"):
        adapter.encode([np.zeros((100, 224), np.float32)], query("Yes."))


@pytest.mark.parametrize("key", ["qwen2_5_vl_3b", "medgemma_4b"])
def test_registry_key_without_local_weights_is_a_clear_error(key, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    card = model_cards()[key]
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(key, LoadOptions(device="cpu"))
    message = str(caught.value)
    assert key in message and card.source in message and "\n" not in message
    assert "not available locally" in message and "local folder" in message


def test_cards_cover_the_six_models():
    cards = model_cards()
    expected = {
        "qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "gemma3_4b": "google/gemma-3-4b-it", "gemma3_12b": "google/gemma-3-12b-it",
        "medgemma_4b": "google/medgemma-4b-it", "medgemma1_5_4b": "google/medgemma-1.5-4b-it",
    }
    assert {key: cards[key].source for key in expected} == expected
    assert {cards[key].family for key in expected} == {"qwen2_5_vl", "gemma3"}


def test_folder_loads_through_resolve_adapter(family, tiny_model_dir):
    adapter = load_adapter(tiny_model_dir(family), LoadOptions(dtype="auto", device="cpu"))
    assert adapter.family == family and adapter.name == str(tiny_model_dir(family))
    assert next(adapter.model.parameters()).dtype == torch.float32  # "auto" on the CPU
    assert not any(p.requires_grad for p in adapter.model.parameters())


def test_resolve_ignores_other_references(tmp_path):
    from cxr_attrib.registry import plugin_manager

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    hook = plugin_manager().hook.resolve_adapter
    assert hook(reference=str(tmp_path), options=LoadOptions()) is None
    assert hook(reference=str(tmp_path / "missing"), options=LoadOptions()) is None
    assert hook(reference="not-a-hub-id", options=LoadOptions()) is None


def test_load_options_pick_device_and_dtype(monkeypatch):
    from cxr_attrib.hf import resolve_device_dtype

    assert resolve_device_dtype(LoadOptions(device="cpu")) == (torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_dtype(LoadOptions()) == (torch.device("cuda"), torch.bfloat16)
    assert resolve_device_dtype(LoadOptions(device_map="auto")) == (None, torch.bfloat16)
    assert resolve_device_dtype(LoadOptions(device="cpu", dtype="float16")) == (torch.device("cpu"), torch.float16)
    with pytest.raises(ModelLoadError, match="dtype='fp8' is invalid; expected one of 'auto'"):
        resolve_device_dtype(LoadOptions(dtype="fp8"))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_gradient_confined_to_the_top_right_corner_comes_back_there(family, monkeypatch):
    """Qwen's merge-window storage order is undone, Gemma's map is not spread across cells."""
    adapter = wired_adapter(family, (168, 0, 224, 56))  # the top-right 2 x 2 token cells
    kept = []
    packed = adapter.pixel_values

    def keep(images: torch.Tensor) -> torch.Tensor:
        pixels = packed(images)
        pixels.retain_grad()
        kept.append(pixels)
        return pixels

    monkeypatch.setattr(adapter, "pixel_values", keep)
    working = torch.from_numpy(np.stack(images(1, seed=6))).requires_grad_(True)
    adapter.forward(working, query("Yes.", policy="turn")).backward()
    for space in (working.grad[0], adapter.to_working(kept[0].grad, "pixel", "sum")[0]):
        corner = space[:56, 168:]
        outside = space.abs().clone()
        outside[:56, 168:] = 0
        # Exact zero by construction: the wiring multiplies the features of every token
        # outside the corner by 0, so those pixels get no gradient at all. (Comparing the
        # sum over the image with the sum over the corner is not exact: the two sums run
        # in different orders and differ in the last bit on some CPUs.)
        assert outside.max() == 0 and corner.abs().sum() > 0, "all gradient lies in the corner"
        assert (corner.abs().reshape(2, 28, 2, 28).sum(dim=(1, 3)) > 0).all(), "in each of its 4 token cells"
