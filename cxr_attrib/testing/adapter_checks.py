"""The checks of the adapter conformance suite, one function per contract rule.

Each check takes the :class:`Kit` (the adapter under test, how to build more of it,
the working size) and raises :class:`AdapterConformanceError` with a message that
names the broken rule, what was expected, what came back and the public helper that
keeps the rule (docs/adapter-guide.md). :func:`cxr_attrib.testing.check_adapter`
runs them in order. Float comparisons use the tolerance their arithmetic allows:
sums taken in another order (batching, chunking) agree to 1e-5, never bit for bit;
"exactly zero" is asserted only where zero holds by construction (pixels a wired
model never reads, rows no later computation reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..adapter import AttentionSurface, GradientSurface, Query, Scorer
from ..targets import TargetError, build_prompt

__all__ = ["AdapterConformanceError", "AdapterFactory", "Kit", "CHECKS"]

Region = tuple[int, int, int, int]
AdapterFactory = Callable[..., Scorer]
"""``factory(region=None) -> adapter``: a fresh tiny adapter of the family under test;
with ``region`` (x1, y1, x2, y2 working-frame pixels, whole token cells) one whose
answer depends only on those pixels (:func:`cxr_attrib.testing.wired_adapter`)."""

QUESTION = "Is there evidence of pleural effusion in the image?"
REASONING = "The left lung base is blunted. Answer: yes."
TOLERANCE = 1e-5
"""Float32 sums of the same terms in another order (batch, chunk) agree to this (log-prob, nats)."""


class AdapterConformanceError(AssertionError):
    """An adapter broke a rule of the contract; the message names the rule and the fix."""


@dataclass
class Kit:
    """What the checks share.

    Attributes:
        adapter (Scorer): the adapter under test (fresh from the factory).
        factory (AdapterFactory): builds more adapters of the same family.
        label (str): the family or adapter name, for messages.
    """

    adapter: Scorer
    factory: AdapterFactory
    label: str

    @property
    def size(self) -> int:
        """Side S of the working frame."""
        return self.adapter.working_size

    def images(self, count: int, seed: int = 0) -> list[np.ndarray]:
        """Seeded grey working images on the 8-bit grid (k / 255), (S, S) float32 in [0, 1]."""
        rng = np.random.default_rng(seed)
        return [(rng.integers(0, 256, (self.size, self.size)) / 255).astype(np.float32) for _ in range(count)]

    def fail(self, rule: str, problem: str) -> AdapterConformanceError:
        """The error for a broken ``rule`` (one line: adapter, rule, problem and fix)."""
        return AdapterConformanceError(f"adapter {self.label!r} breaks the rule '{rule}': {problem}")


def query(answer: str, mode: str = "direct", policy: str = "answer") -> Query:
    """A query about :data:`QUESTION` with ``answer`` teacher-forced."""
    return Query(QUESTION, mode, build_prompt(QUESTION, mode), answer, policy)  # type: ignore[arg-type]


def _decode(kit: Kit, ids: Any) -> str:
    return kit.adapter.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def check_encoding(kit: Kit) -> None:
    """Image tokens fill the grid contiguously; targets follow them; every batch row is the same text."""
    adapter, rule = kit.adapter, "encode: image and target positions"
    enc = adapter.encode(kit.images(2), query("Yes."))
    gh, gw = enc.grid
    ids = enc.inputs["input_ids"]
    if enc.image_positions.numel() != gh * gw or enc.batch_size != 2:
        raise kit.fail(rule, f"{enc.image_positions.numel()} image positions for a {gh}x{gw} grid "
                             f"(batch_size {enc.batch_size}, expected 2)")
    image_ids = set(ids[0, enc.image_positions].tolist())
    token_id = getattr(adapter, "image_token_id", None)
    if token_id is not None and image_ids != {int(token_id)}:
        raise kit.fail(rule, f"the image positions hold ids {sorted(image_ids)}, expected only "
                             f"adapter.image_token_id = {token_id}")
    if not torch.equal(ids[0], ids[1]):
        raise kit.fail(rule, "the two rows of a batch hold different ids; one text is shared by every image")
    if not torch.equal(ids[0, enc.target_positions], enc.target_ids):
        raise kit.fail(rule, "input_ids at target_positions differ from target_ids")
    if int(enc.target_positions.min()) <= int(enc.image_positions.max()):
        raise kit.fail(rule, "a target token precedes an image token; the answer follows the image")
    if not torch.equal(enc.predictor_positions, enc.target_positions - 1):
        raise kit.fail(rule, "predictor_positions are not target_positions - 1")


def check_span_policies(kit: Kit) -> None:
    """``answer`` = the verdict word, ``response`` = the response, ``turn`` = response + closing tokens."""
    adapter, rule = kit.adapter, "span policies"
    image = kit.images(1)
    texts = {}
    for policy in ("answer", "response", "turn"):
        enc = adapter.encode(image, query("Yes.", policy=policy))
        positions = enc.target_positions.tolist()
        if positions != list(range(positions[0], positions[-1] + 1)):
            raise kit.fail(rule, f"policy {policy!r} targets positions {positions}, which are not contiguous")
        texts[policy] = _decode(kit, enc.target_ids)
    if texts["answer"].strip() != "Yes" or texts["response"].strip() != "Yes.":
        raise kit.fail(rule, f"for the answer 'Yes.' policy 'answer' targets {texts['answer']!r} (expected 'Yes') "
                             f"and 'response' targets {texts['response']!r} (expected 'Yes.')")
    if not texts["turn"].startswith(texts["response"]) or texts["turn"] == texts["response"]:
        raise kit.fail(rule, f"policy 'turn' targets {texts['turn']!r}; expected the response {texts['response']!r} "
                             "followed by the template's closing tokens, nothing before it: the role header "
                             "belongs to the prompt (cxr_attrib.hf.target_token_indices)")
    enc = adapter.encode(image, query(REASONING, "reasoning", "response"))
    verdict = adapter.encode(image, query(REASONING, "reasoning", "answer")).target_positions
    ids = enc.inputs["input_ids"][0]
    before = _decode(kit, ids[int(enc.target_positions[0]) : int(verdict[0])])
    if before.strip() != "The left lung base is blunted. Answer:":
        raise kit.fail(rule, f"in reasoning mode the verdict of {REASONING!r} should be its last 'yes'; the "
                             f"response text before the targeted word is {before!r}")
    try:
        adapter.encode(image, query("The lungs look clear to me."))
    except TargetError:
        pass
    else:
        raise kit.fail(rule, "policy 'answer' on an answer without yes/no must raise TargetError")


def check_scores(kit: Kit) -> None:
    """Scores are float32 log-softmax of the model's own logits at the predictor rows."""
    adapter, rule = kit.adapter, "score: teacher-forced float32 log-probs"
    pics = kit.images(2, seed=1)
    q = query(REASONING, "reasoning", "response")
    scores = adapter.score(pics, q)
    enc = adapter.encode(pics, q)
    if scores.dtype != torch.float32 or tuple(scores.shape) != (2, len(enc.target_ids)):
        raise kit.fail(rule, f"score() returned {scores.dtype} {tuple(scores.shape)}; expected float32 "
                             f"(2, {len(enc.target_ids)})")
    model = getattr(adapter, "model", None)
    if model is None:
        return
    with torch.no_grad():
        logits = model(**enc.inputs).logits.double()
    reference = torch.log_softmax(logits, -1)[:, enc.predictor_positions]
    reference = reference.gather(2, enc.target_ids.view(1, -1, 1).expand(2, -1, 1).to(reference.device))[..., 0]
    error = float((scores.double() - reference.cpu()).abs().max())
    if error > TOLERANCE:
        raise kit.fail(rule, f"score() differs from log_softmax of model(**encode(...).inputs).logits at the "
                             f"predictor rows by {error:.2e} (tolerance {TOLERANCE:g})")


def check_batching_and_passes(kit: Kit) -> None:
    """A batch scores as its images one by one, and every model call is counted once."""
    adapter, rule = kit.adapter, "batching and pass counting"
    pics = kit.images(5, seed=2)
    q = query(REASONING, "reasoning", "response")
    adapter.counter.reset()
    together = adapter.score(pics, q)
    if (adapter.counter.forward_calls, adapter.counter.forward_sequences) != (1, 5):
        raise kit.fail(rule, f"score() of 5 images counted {adapter.counter.forward_calls} forward calls and "
                             f"{adapter.counter.forward_sequences} sequences; expected one call of 5 sequences")
    alone = torch.cat([adapter.score([p], q) for p in pics])
    chunked = adapter.score(pics, q, batch_size=2)
    error = float(max((together - alone).abs().max(), (together - chunked).abs().max()))
    if error > TOLERANCE:
        raise kit.fail(rule, f"scores of a batch differ from one-by-one or batch_size=2 scores by {error:.2e}")
    if float(together.std(0).max()) == 0.0:
        raise kit.fail(rule, "five different images gave identical scores: the image does not reach the answer")
    if (adapter.counter.forward_calls, adapter.counter.forward_sequences) != (9, 15):
        raise kit.fail(rule, f"after 1 + 5 + 3 calls of 15 sequences the counter says {adapter.counter.as_dict()}")
    for bad, what in (([], "an empty list"),):
        try:
            adapter.score(bad, q)
        except ValueError:
            continue
        raise kit.fail(rule, f"score() of {what} must raise ValueError")
    adapter.counter.reset()


def check_generation_round_trip(kit: Kit) -> None:
    """A greedy answer, teacher-forced back, gets the ids and log-probs it was generated with."""
    adapter = kit.factory()
    rule = "generate / teacher-forcing round trip"
    model, tok = getattr(adapter, "model", None), getattr(adapter, "tokenizer", None)
    if model is None or tok is None or getattr(model, "generation_config", None) is None:
        raise kit.fail(rule, "the adapter has no model.generation_config and tokenizer to check generation with")
    single = {w: tok.encode(w, add_special_tokens=False) for w in ("Yes", "No", " yes", " no", " lung", ".")}
    first = [ids[0] for w, ids in single.items() if len(ids) == 1 and w in ("Yes", "No")]
    later = [ids[0] for w, ids in single.items() if len(ids) == 1 and w not in ("Yes", "No")]
    allowed = set(first + later)
    model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in allowed]
    model.generation_config.begin_suppress_tokens = later
    prompt = build_prompt(QUESTION, "direct")
    image = kit.images(1, seed=4)
    adapter.counter.reset()
    gen = adapter.generate(image[0], prompt, max_new_tokens=6)
    if (len(gen.token_ids), len(gen.logprobs), adapter.counter.generate_calls) != (6, 6, 1):
        raise kit.fail(rule, f"generate(max_new_tokens=6) gave {len(gen.token_ids)} ids, {len(gen.logprobs)} "
                             f"log-probs and counted {adapter.counter.generate_calls} generate_calls; expected 6, 6, 1")
    q = Query(QUESTION, "direct", prompt, gen.text, "response")
    enc = adapter.encode(image, q)
    if enc.target_ids.tolist() != list(gen.token_ids):
        raise kit.fail(rule, f"the answer {gen.text!r} teacher-forced gives ids {enc.target_ids.tolist()}, "
                             f"generation gave {list(gen.token_ids)}")
    error = float((adapter.score(image, q)[0] - torch.tensor(gen.logprobs)).abs().max())
    if error > 1e-4:  # generation runs with a KV cache: other kernels, other summation order
        raise kit.fail(rule, f"teacher-forced log-probs differ from generation's by {error:.2e} (tolerance 1e-4)")


def check_frames(kit: Kit) -> None:
    """Working-frame images only; the geometry adds up; pixel paths agree; maps back keep totals/levels."""
    adapter, rule = kit.adapter, "frames"
    size = kit.size
    wrong = np.zeros((size // 2, size), np.float32)
    for call, run in (("encode", lambda: adapter.encode([wrong], query("Yes."))),
                      ("score", lambda: adapter.score([wrong], query("Yes.")))):
        try:
            run()
        except ValueError:
            continue
        raise kit.fail(rule, f"{call}() accepted a {wrong.shape} image; an image outside the ({size}, {size}) "
                             "working frame must raise ValueError (cxr_attrib.hf.grey_to_rgb checks it)")
    if not isinstance(adapter, GradientSurface):
        return
    try:
        adapter.pixel_values(torch.zeros(1, size // 2, size))
    except ValueError:
        pass
    else:
        raise kit.fail(rule, f"pixel_values() accepted a (1, {size // 2}, {size}) batch; expected ValueError "
                             "(cxr_attrib.hf.check_working_batch)")
    g = adapter.geometry
    (ph, pw), (gh, gw), (kh, kw) = g.patch_grid, g.token_grid, g.patches_per_token
    if (ph * g.patch_size, pw * g.patch_size) != tuple(g.model_size) or (gh * kh, gw * kw) != (ph, pw):
        raise kit.fail(rule, f"geometry does not add up: {g}")
    if sorted(g.patch_order.tolist()) != list(range(ph * pw)):
        raise kit.fail(rule, "geometry.patch_order is not a permutation of the patches")
    pics = kit.images(2, seed=7)
    expected, got = adapter.pixel_inputs(pics), adapter.pixel_values(torch.from_numpy(np.stack(pics)))
    if tuple(g.model_size) == (size, size):
        error = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
        if error > TOLERANCE:
            raise kit.fail(rule, f"pixel_values() differs from pixel_inputs() by {error:.2e} (shapes "
                                 f"{tuple(got.shape)} / {tuple(expected.shape)}); the torch path must equal the processor")
    for space, shape in (("pixel", tuple(got.shape)), ("patch", (2, ph * pw)), ("token", (2, gh * gw))):
        values = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        summed = adapter.to_working(values, space, "sum")
        level = adapter.to_working(torch.full(shape, 0.25), space, "mean")
        if tuple(summed.shape) != (2, size, size):
            raise kit.fail(rule, f"to_working({space!r}) returned {tuple(summed.shape)}; expected (2, {size}, {size})")
        total = float((summed.sum(dim=(1, 2)) - values.flatten(1).sum(1)).abs().max() / values.flatten(1).sum(1).max())
        if total > 1e-5 or float((level - 0.25).abs().max()) > 1e-6:
            raise kit.fail(rule, f"to_working({space!r}): 'sum' must keep totals (relative error {total:.1e}) and "
                                 "'mean' levels")


def check_gradient_path(kit: Kit) -> None:
    """grad=True starts the graph at the images, captures get gradients, every backward is counted."""
    adapter = kit.adapter
    if not isinstance(adapter, GradientSurface):
        return
    q = query("Yes.", policy="turn")
    layers = len(adapter.decoder_layers())
    plain = torch.from_numpy(np.stack(kit.images(2, seed=8)))
    result = adapter.forward(plain, q, hidden=(0, -1), vision=(-1,), grad=True)
    rule = "forward(grad=True) starts the graph at the images"
    if not result.logprobs.requires_grad:
        raise kit.fail(rule, "forward(images, grad=True) on images that do not require grad returned log-probs "
                             "without a graph; the weights are frozen, so start the graph at the images "
                             "(cxr_attrib.hf.start_graph)")
    result.backward()
    rule = "captures lie on the gradient path"
    for what, store, index in (("hidden", result.hidden, 0), ("hidden", result.hidden, -1), ("vision", result.vision, -1)):
        capture = store.get(index)
        if capture is None or capture.grad is None or not bool(capture.grad.abs().sum() > 0):
            raise kit.fail(rule, f"forward({what}=({index},), grad=True): the capture received no gradient after "
                                 "backward(); the model must continue from the captured tensor "
                                 "(cxr_attrib.hf.capture_layers)")
    last = result.hidden[-1].grad
    if float(last[:, result.image_positions].abs().max()) != 0.0:  # exact: no later layer reads these rows
        raise kit.fail(rule, "the last decoder layer's image rows got gradient; captures are misaligned")
    rule = "backward passes are counted"
    working = torch.from_numpy(np.stack(kit.images(3, seed=3))).requires_grad_(True)
    adapter.counter.reset()
    out = adapter.forward(working, q)
    out.backward()
    torch.autograd.grad(adapter.forward(working[:1], q).total.sum(), working)  # as Captum runs it
    counts = adapter.counter.as_dict()
    if (counts["backward_calls"], counts["backward_sequences"]) != (2, 4):
        raise kit.fail(rule, f"two backward passes (3 + 1 sequences) through forward()'s log-probs were counted "
                             f"as {counts['backward_calls']} calls of {counts['backward_sequences']} sequences; "
                             "register cxr_attrib.hf.count_backward on the log-probs")
    if (counts["forward_calls"], counts["forward_sequences"]) != (2, 4):
        raise kit.fail(rule, f"two forward() calls (3 + 1 sequences) were counted as {counts}")
    error = float((out.logprobs.detach() - adapter.score(kit.images(3, seed=3), q)).abs().max())
    if error > TOLERANCE:
        raise kit.fail("forward equals score", f"forward() log-probs differ from score() by {error:.2e}")
    rule = "layer indices are checked"
    for what, index in (("hidden", layers), ("hidden", -layers - 1), ("vision", len(adapter.vision_layers()))):
        try:
            adapter.forward(torch.zeros(1, kit.size, kit.size), q, **{what: (index,)})
        except IndexError as exc:
            if f"{what} layer {index}" not in str(exc):
                raise kit.fail(rule, f"the IndexError for {what}=({index},) does not name it: {exc}") from exc
            continue
        raise kit.fail(rule, f"forward({what}=({index},)) must raise IndexError (cxr_attrib.hf.check_indices)")
    adapter.counter.reset()


def check_wired_gradients(kit: Kit) -> None:
    """On a model wired to one corner, all gradient comes back to that corner's token cells."""
    if not isinstance(kit.adapter, GradientSurface):
        return
    size = kit.size
    gh, gw = kit.adapter.geometry.token_grid
    cell_w, cell_h = size // gw, size // gh
    region = (size - 2 * cell_w, 0, size, 2 * cell_h)  # the top-right 2 x 2 token cells
    adapter = kit.factory(region)
    kept: list[torch.Tensor] = []
    packed = adapter.pixel_values

    def keep(images: torch.Tensor) -> torch.Tensor:
        pixels = packed(images)
        pixels.retain_grad()
        kept.append(pixels)
        return pixels

    adapter.pixel_values = keep  # an instance attribute: this adapter only
    working = torch.from_numpy(np.stack(kit.images(1, seed=6))).requires_grad_(True)
    adapter.forward(working, query("Yes.", policy="turn")).backward()
    for where, space in (("working images", working.grad[0]), ("pixel_values", adapter.to_working(kept[0].grad, "pixel", "sum")[0])):
        corner = space[: 2 * cell_h, size - 2 * cell_w :].abs()
        outside = space.abs().clone()
        outside[: 2 * cell_h, size - 2 * cell_w :] = 0
        cells = corner.reshape(2, cell_h, 2, cell_w).sum(dim=(1, 3))
        # exact zero by construction: the wiring multiplies every other token's features by 0
        if float(outside.max()) != 0.0 or not bool((cells > 0).all()):
            raise kit.fail("gradients come back to the right cells",
                           f"on a model wired to the top-right 2x2 token cells {region}, the gradient of the {where} "
                           f"has {int((outside > 0).sum())} non-zero pixels outside them and reaches "
                           f"{int((cells > 0).sum())} of its 4 cells; to_working / the pixel packing is misaligned")


def check_attention(kit: Kit) -> None:
    """Attention rows are distributions over the sequence; each call counts its passes."""
    adapter, rule = kit.adapter, "attention and relevance"
    image, q = kit.images(1, seed=5)[0], query("Yes.", policy="turn")
    enc = adapter.encode([image], q)
    length, targets = enc.inputs["input_ids"].shape[1], len(enc.target_ids)
    adapter.counter.reset()
    maps = adapter.attention(image, q, layers=[0, adapter.num_decoder_layers - 1])
    for layer, matrix in maps.maps.items():
        if tuple(matrix.shape) != (targets, length):
            raise kit.fail(rule, f"attention layer {layer} is {tuple(matrix.shape)}; expected (T, L) = ({targets}, {length})")
        error = float((matrix.sum(-1) - 1).abs().max())
        if error > 1e-4:
            raise kit.fail(rule, f"attention rows of layer {layer} do not sum to 1 (off by {error:.1e})")
    if not torch.equal(maps.rows, enc.predictor_positions):
        raise kit.fail(rule, "attention rows are not the predictor positions (target positions - 1)")
    weighted = adapter.attention(image, q, layers=[0], gradient=True)
    if not bool(torch.isfinite(weighted.maps[0]).all()):
        raise kit.fail(rule, "gradient-weighted attention has non-finite values")
    relevance = adapter.relevance(image, q)
    if tuple(relevance.positions.shape) != (length,) or not np.isfinite(relevance.conservation_error):
        raise kit.fail(rule, f"relevance() positions are {tuple(relevance.positions.shape)}; expected ({length},)")
    counts = adapter.counter.as_dict()
    if (counts["forward_calls"], counts["backward_calls"]) != (3, 2):
        raise kit.fail(rule, f"attention, gradient attention and relevance must count 3 forwards and 2 backwards; "
                             f"counted {counts}")
    adapter.counter.reset()


CHECKS: tuple[tuple[str, type | None, Callable[[Kit], None]], ...] = (
    ("encode: image and target positions", None, check_encoding),
    ("span policies", None, check_span_policies),
    ("score: teacher-forced float32 log-probs", None, check_scores),
    ("batching and pass counting", None, check_batching_and_passes),
    ("frames", None, check_frames),
    ("generate / teacher-forcing round trip", None, check_generation_round_trip),
    ("gradient path and pass counting", GradientSurface, check_gradient_path),
    ("gradients come back to the right cells", GradientSurface, check_wired_gradients),
    ("attention and relevance", AttentionSurface, check_attention),
)
"""(name, surface it needs or None, check) in the order :func:`check_adapter` runs them."""
