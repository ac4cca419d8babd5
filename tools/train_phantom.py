"""Train the embedded phantom models (see docs/phantom.md): deterministic, on the CPU.

A small model of the real ``Qwen2_5_VLForConditionalGeneration`` or
``Gemma3ForConditionalGeneration`` class is built with
:func:`cxr_attrib.testing.tiny_models.save_tiny_model` (so the folder carries the
family's tokenizer, chat template and PIL image processor and loads through the
same adapter code as a real checkpoint), trained on phantom VQA items, and its
weights are written back into the folder as fp32 safetensors.

Recipe:

* sizes: text hidden 128, 4 layers; vision hidden 64, 4 layers; 8 x 8 image tokens
  at 224 px (Qwen: patch 14, merge 2; Gemma: SigLIP at 224 px, patch 14, 64 tokens);
  the tokenizer's merges also learn the phantom rationales (:func:`rationale_corpus`;
  :data:`TOKENIZER_VOCAB` keeps every corpus word, "Yes" and "No" included, one token);
* batches of yes/no *pairs* that differ in one thing: a positive (finding F shown,
  F asked) beside either its exact counterfactual (same anatomy, F removed, F asked)
  or its own image asked about another finding. The first teaches what F looks like,
  the second that the answer depends on the question (a model that answers "yes" to
  any abnormal image fails it); nodule and consolidation are oversampled, as pairs
  and as the swapped question;
* an auxiliary token probe (:class:`_TokenProbe`): a linear layer on the image
  embeddings the language model receives predicts the finding drawn under each image
  token (exact masks, :func:`token_labels`), and the token's own row and column. This
  dense signal trains the vision tower within a few hundred steps (without it the
  answer loss sits near ln 2 for most of the run), keeps its features local and makes
  them say where they are, which box answers need; the probe is discarded, the saved
  model is the plain model class;
* direct mode only for the first :attr:`TrainingConfig.direct_steps` steps, then
  three tasks in turn, step by step: direct answers ``"Yes"`` / ``"No"``, reasoning
  answers (the templated rationales of :mod:`cxr_attrib_phantom.vqa`) and grounding
  (the exact box of the finding in the family's :class:`~cxr_attrib.grounding.BoxConvention`,
  ``[]`` for negatives). A grounding positive is asked twice, "Where is the {finding}?
  Answer with a bounding box." and the ``prompting`` method's question
  (:func:`~cxr_attrib.grounding.evidence_prompt`: the yes/no question, the answer given,
  and where its evidence is); one pair in four keeps its negative instead. The loss
  covers each example's assistant turn (the response and the template's closing
  tokens): summed over the tokens of a direct answer (so the verdict token has weight
  1), averaged over the tokens of a rationale, summed with weight 1/4 over the tokens
  of a box answer (one per coordinate), then averaged over the batch;
* AdamW, learning rate 2e-3 with linear warm-up and cosine decay, gradient clipping;
* Gemma 3: the token embeddings are re-drawn so that scaled embeddings have unit RMS
  (with the default initialisation its post-sublayer norms swamp them and it stays on
  the ln 2 plateau; the builder already draws the zero-initialised image projection
  that way). Qwen keeps HF's default initialisation.

Seeds: training phantoms are drawn from ``[0, TRAIN_SEED_LIMIT)``; held-out
evaluation (:mod:`cxr_attrib_phantom.evaluation`) uses seeds from
``HELD_OUT_SEED_START`` = 10,000,000 on. Phantoms are generated on the fly into a
per-finding pool (a few fresh pairs per step, the batch drawn from the pool), so the
run is a pure function of the seed, the number of steps and the torch thread count
(the shipped weights: seed 0, one thread, see :data:`DEFAULT_STEPS`); pixel values come from
the adapter's differentiable path (``adapter.pixel_values``), equal to its PIL image processor.

The shipped weights are one run per family (seed 0, one CPU thread each, the two
families side by side on a two-core machine, under 30 minutes each)::

    python tools/train_phantom.py --family qwen --out phantom-qwen
    python tools/train_phantom.py --family gemma --out phantom-gemma

(``--minutes M`` adds a wall-time guard that stops early; ``--init-from FOLDER`` continues
a saved model.)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_attrib.adapter import Adapter
from cxr_attrib.hf import HFAdapter
from cxr_attrib.errors import DataError
from cxr_attrib.grounding import BoxConvention, evidence_prompt
from cxr_attrib.targets import Mode, build_prompt
from cxr_attrib_adapters.gemma3 import GEMMA_BOXES
from cxr_attrib_adapters.qwen2_5_vl import QWEN_BOX_INSTRUCTION
from cxr_attrib_phantom.findings import FINDINGS
from cxr_attrib_phantom.vqa import VQAItem, box_answer, grounding_answer, make_vqa_item, where_question

__all__ = [
    "FAMILY_NAMES",
    "MODEL_OVERRIDES",
    "TOKENIZER_VOCAB",
    "grounding_corpus",
    "TRAIN_SEED_LIMIT",
    "TextEncoder",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "default_config",
    "rationale_corpus",
    "token_labels",
    "main",
    "train",
]

TRAIN_SEED_LIMIT = 1_000_000
"""Training phantom seeds are drawn from ``[0, TRAIN_SEED_LIMIT)``."""

FAMILY_NAMES: dict[str, str] = {"qwen": "qwen2_5_vl", "gemma": "gemma3"}
"""Command-line family name -> tiny-model family."""

MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {
        "text_config": {
            "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        },
        "vision_config": {
            "depth": 4, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
            "fullatt_block_indexes": [1, 3], "out_hidden_size": 128,
        },
    },
    "gemma3": {
        "text_config": {
            "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "query_pre_attn_scalar": 32,
            "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        },
        "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2},
    },
}
"""Config overrides (see :func:`cxr_attrib.testing.tiny_models.tiny_config`) of the phantom models."""


class TrainingError(DataError):
    """Bad training arguments (unknown family, non-positive steps, ...)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one training run (all counts are per run, not per epoch).

    Attributes:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        steps (int): optimiser steps (fixed: the run is deterministic in them).
        pairs_per_batch (int): yes/no pairs per batch (batch size = 2 x this). Default: 16.
        lr (float): peak AdamW learning rate. Default: 2e-3.
        warmup (int): linear learning-rate warm-up steps. Default: 100.
        final_lr_fraction (float): cosine decay ends at ``lr`` times this. Default: 0.1.
        weight_decay (float): AdamW weight decay. Default: 0.01.
        clip (float): gradient-norm clip. Default: 1.0.
        direct_steps (int): first steps in direct mode only; later steps cycle through
            direct, reasoning and grounding. Default: 200.
        finding_weights (dict[str, float]): relative frequency of each finding's pairs,
            and of each finding as the question of a swapped pair. Default: nodule and
            consolidation (the findings most confused with others) 1.5, the rest 1.
        normal_fractions (dict[str, float]): probability that a pair's negative is the
            positive's exact counterfactual (a normal phantom, same question) rather than
            the positive's own image asked about another finding. Default: 0.4.
        fresh_pairs (int): new pairs generated per step into the pool. Default: 2.
        initial_pairs (int): pairs generated per finding before the first step. Default: 16.
        pool_capacity (int): most pairs kept per finding (oldest replaced). Default: 800.
        probe_weight (float): weight of the auxiliary token-probe loss (see
            :class:`_TokenProbe`; 0 disables it). Default: 1.0.
        position_weight (float): weight of the probe's row and column loss (each image
            token predicts its own cell; 0 disables it). Default: 0.5.
        grounding_negative_every (int): in grounding steps one pair in this many keeps its
            negative (answer ``[]``); the others ask about their positive twice, once in each
            grounding form. Default: 4.
        probe_finding_weight (float): weight of the probe's finding cells relative to
            background cells. Default: 4.0.
        model_overrides (dict): config overrides of the model. Default:
            :data:`MODEL_OVERRIDES` of ``family``.
        log_every (int): steps between log lines. Default: 25.
    """

    family: str
    steps: int
    pairs_per_batch: int = 16
    lr: float = 2e-3
    warmup: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    direct_steps: int = 200
    finding_weights: dict[str, float] = field(
        default_factory=lambda: {f: (1.5 if f in ("nodule", "consolidation") else 1.0) for f in FINDINGS}
    )
    normal_fractions: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0.4))
    fresh_pairs: int = 2
    initial_pairs: int = 16
    pool_capacity: int = 800
    probe_weight: float = 1.0
    probe_finding_weight: float = 4.0
    position_weight: float = 0.5
    grounding_negative_every: int = 4
    model_overrides: dict[str, Any] | None = None
    log_every: int = 25

    def overrides(self) -> dict[str, Any]:
        """The model config overrides in use."""
        return MODEL_OVERRIDES[self.family] if self.model_overrides is None else self.model_overrides


DEFAULT_STEPS: dict[str, int] = {"qwen2_5_vl": 1400, "gemma3": 1400}
GROUNDING_NEGATIVE_EVERY: dict[str, int] = {"qwen2_5_vl": 2, "gemma3": 4}
"""Per family: one grounding pair in this many keeps its negative. With 4, Qwen learnt the
boxes but answered "yes" to most questions about another finding than the one shown
(direct accuracy 86.7%, specificity 20-35% on such images for four findings); 2 asks it
"where is F?" on images of another finding (answer ``[]``) twice as often."""
"""Steps of the shipped runs (under 30 minutes each on one CPU thread)."""


def default_config(family: str, steps: int | None = None) -> TrainingConfig:
    """The shipped recipe for ``family`` (``"qwen"``/``"gemma"`` or the tiny-model name).

    Args:
        family (str): ``"qwen"``, ``"gemma"``, ``"qwen2_5_vl"`` or ``"gemma3"``.
        steps (int | None): optimiser steps. Default: :data:`DEFAULT_STEPS` of the family.

    Returns:
        TrainingConfig: the configuration.

    Raises:
        TrainingError: unknown family or non-positive steps.
    """
    name = FAMILY_NAMES.get(family, family)
    if name not in MODEL_OVERRIDES:
        raise TrainingError(
            f"unknown family {family!r}; expected one of {sorted(FAMILY_NAMES)} or {sorted(MODEL_OVERRIDES)}."
        )
    steps = DEFAULT_STEPS[name] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TrainingError(f"expected steps as an int >= 1, got {steps!r}.")
    return TrainingConfig(family=name, steps=steps, grounding_negative_every=GROUNDING_NEGATIVE_EVERY[name])


# -- inputs -----------------------------------------------------------------------------


class TextEncoder:
    """Token ids of chat-rendered (prompt, answer) pairs and where the assistant turn starts.

    The conversation ``user: [image, prompt]``, ``assistant: answer`` is rendered
    with the adapter's chat template, the image placeholder expanded to the model's
    image tokens, and tokenised once. Tokens whose first character lies at or after
    the end of the generation prompt form the assistant turn (the response and the
    template's closing tokens): the adapter's ``"turn"`` span policy.

    Args:
        adapter (HFAdapter): a loaded Qwen2.5-VL or Gemma 3 adapter.
    """

    def __init__(self, adapter: HFAdapter) -> None:
        self.adapter = adapter
        self.tokenizer = adapter.tokenizer
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, int]] = {}

    def _render(self, prompt: str, answer: str | None) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.adapter.chat_template, tokenize=False,
            add_generation_prompt=answer is None,
        )
        return self.adapter.expand_image(text)

    def __call__(self, prompt: str, answer: str) -> tuple[torch.Tensor, int]:
        """Encode one conversation.

        Args:
            prompt (str): the user turn's text.
            answer (str): the assistant response.

        Returns:
            tuple: ``(ids, start)``: (L,) long token ids and the index of the first
            assistant-turn token (tokens ``start`` .. ``L - 1`` carry the loss).
        """
        key = (prompt, answer)
        if key not in self._cache:
            prefix = self._render(prompt, None)
            out = self.tokenizer(self._render(prompt, answer), add_special_tokens=False, return_offsets_mapping=True)
            start = next(i for i, (s, _) in enumerate(out["offset_mapping"]) if s >= len(prefix))
            self._cache[key] = (torch.tensor(out["input_ids"], dtype=torch.long), start)
        return self._cache[key]


# -- data -------------------------------------------------------------------------------

CORPUS_SEEDS = range(TRAIN_SEED_LIMIT - 12, TRAIN_SEED_LIMIT)
"""Phantom seeds whose rationales train the tokenizer's merges (see :func:`rationale_corpus`)."""

TOKENIZER_VOCAB = 896
"""BPE vocabulary cap of the phantom models: above the merges the corpus yields, so every
corpus word, ``"Yes"`` and ``"No"`` included, is one token (digits are always single tokens)."""


@functools.lru_cache(maxsize=1)
def rationale_corpus() -> tuple[str, ...]:
    """Reasoning answers of every finding, present and absent, on :data:`CORPUS_SEEDS`.

    Added to the tokenizer's training text, so that a rationale takes about 30 tokens
    instead of one per byte (shorter sequences, faster steps, less to learn).
    """
    return tuple(
        make_vqa_item(seed, finding, present, "reasoning").answer
        for seed in CORPUS_SEEDS for finding in FINDINGS for present in (True, False)
    )


@functools.lru_cache(maxsize=1)
def grounding_corpus() -> tuple[str, ...]:
    """Grounding questions and box answers of both families' conventions, for the tokenizer's merges.

    The JSON scaffolding, the labels and the format instructions then take a few tokens
    each; coordinates are digits, always one token per digit.
    """
    conventions = (
        BoxConvention(key="bbox_2d", order="xyxy", frame=(224.0, 224.0), instruction=QWEN_BOX_INSTRUCTION),
        GEMMA_BOXES,
    )
    lines: list[str] = []
    for seed in CORPUS_SEEDS[:4]:
        for finding in FINDINGS:
            item = make_vqa_item(seed, finding, True, "direct")
            lines.append(where_question(finding))
            for convention in conventions:
                lines.append(evidence_prompt(item.question, "Yes", convention))
                lines.append(grounding_answer(item, convention))
    return tuple(lines)



@dataclass(frozen=True)
class _Example:
    image: torch.Tensor  # (S, S) float16: halves the pool's memory; the error is < 2.5e-4
    question: str
    direct: str
    reasoning: str
    token_labels: torch.Tensor  # (gh * gw,) long: 0, or 1 + the index of the finding drawn in the cell
    finding: str  # the finding asked about
    boxes: np.ndarray  # (N, 4) its exact box in the working frame; (0, 4) for a negative


def token_labels(finding_mask: np.ndarray, finding: str | None, grid: tuple[int, int],
                 min_fraction: float = 0.1) -> torch.Tensor:
    """The finding drawn under each image token, row by row (the models' token order).

    Args:
        finding_mask (np.ndarray): ``(S, S)`` bool, the pixels the finding changed.
        finding (str | None): the finding drawn (None for a normal phantom).
        grid (tuple[int, int]): image tokens ``(rows, cols)``; ``S`` must divide evenly.
        min_fraction (float): a cell is labelled when at least this fraction of its
            pixels changed. Default: 0.1.

    Returns:
        torch.Tensor: ``(rows * cols,)`` long, 0 for cells without the finding and
        ``1 + FINDINGS.index(finding)`` for cells with it.
    """
    rows, cols = grid
    size = finding_mask.shape[0]
    if finding is None:
        return torch.zeros(rows * cols, dtype=torch.long)
    cover = finding_mask.reshape(rows, size // rows, cols, size // cols).mean(axis=(1, 3))
    labels = np.where(cover >= min_fraction, 1 + FINDINGS.index(finding), 0)
    return torch.from_numpy(labels.reshape(-1).astype(np.int64))


def _example(item: VQAItem, grid: tuple[int, int]) -> _Example:
    return _Example(
        image=torch.from_numpy(item.image).to(torch.float16),
        question=item.question,
        direct="Yes" if item.present else "No",
        reasoning=item.answer,
        token_labels=token_labels(item.case.finding_mask, item.case.finding, grid),
        finding=item.finding,
        boxes=item.case.boxes if item.present else np.zeros((0, 4)),
    )


class _PairPool:
    """Per-finding ring buffers of (positive, negative) pairs, refilled deterministically."""

    def __init__(self, config: TrainingConfig, seed: int, grid: tuple[int, int]) -> None:
        self.config = config
        self.grid = grid
        self.rng = np.random.default_rng([seed, 8301])
        self.pairs: dict[str, list[tuple[_Example, _Example]]] = {f: [] for f in FINDINGS}
        self.next_slot = dict.fromkeys(FINDINGS, 0)
        self.generated = 0

    def add(self, finding: str) -> None:
        seed = int(self.rng.integers(0, TRAIN_SEED_LIMIT))
        normal = self.config.normal_fractions[finding]
        positive = make_vqa_item(seed, finding, True, "reasoning")
        if self.rng.random() < normal:
            negative = make_vqa_item(seed, finding, False, "reasoning", negative="normal")
        else:
            others = [f for f in FINDINGS if f != finding]
            weights = np.array([self.config.finding_weights[f] for f in others], dtype=np.float64)
            asked = others[int(self.rng.choice(len(others), p=weights / weights.sum()))]
            negative = make_vqa_item(seed, asked, False, "reasoning", negative="other", other=finding)
        pair = (_example(positive, self.grid), _example(negative, self.grid))
        ring = self.pairs[finding]
        if len(ring) < self.config.pool_capacity:
            ring.append(pair)
        else:
            ring[self.next_slot[finding]] = pair
            self.next_slot[finding] = (self.next_slot[finding] + 1) % self.config.pool_capacity
        self.generated += 1

    def draw_findings(self, count: int) -> list[str]:
        weights = np.array([self.config.finding_weights[f] for f in FINDINGS], dtype=np.float64)
        picks = self.rng.choice(len(FINDINGS), size=count, p=weights / weights.sum())
        return [FINDINGS[i] for i in picks]

    def sample(self, findings: Sequence[str]) -> list[_Example]:
        out: list[_Example] = []
        for finding in findings:
            ring = self.pairs[finding]
            out.extend(ring[int(self.rng.integers(0, len(ring)))])
        return out


Task = str
"""``"direct"``, ``"reasoning"`` or ``"grounding"``."""


def _grounding_text(example: _Example, where: bool, convention: BoxConvention) -> tuple[str, str]:
    """(prompt, answer) of a grounding question: "Where is ...?" or the prompting method's."""
    prompt = (where_question(example.finding) if where
              else evidence_prompt(example.question, example.direct, convention))
    return prompt, box_answer(example.finding, example.boxes, example.image.shape[0], convention)


def _texts(examples: Sequence[_Example], task: Task, step: int, convention: BoxConvention) -> list[tuple[str, str]]:
    if task == "grounding":  # the two rows of a pair are asked in the two grounding forms
        return [_grounding_text(e, (row + step) % 2 == 0, convention) for row, e in enumerate(examples)]
    mode: Mode = "direct" if task == "direct" else "reasoning"
    return [(build_prompt(e.question, mode), e.direct if mode == "direct" else e.reasoning) for e in examples]


def _grounding_examples(pairs: Sequence[_Example], negative_every: int) -> list[_Example]:
    """(positive, negative) pairs -> (positive, positive) except every ``negative_every``-th pair.

    Box answers of negatives (``[]``) are learnt from few examples; the positives' boxes
    are what needs the steps. Each kept row is asked in the other grounding form than
    its neighbour (see :func:`_texts`).
    """
    out: list[_Example] = []
    for index in range(0, len(pairs), 2):
        positive, negative = pairs[index], pairs[index + 1]
        out += [positive, negative if (index // 2) % negative_every == 0 else positive]
    return out


def _token_weight(task: Task, answer_tokens: int) -> float:
    return {"direct": 1.0, "reasoning": 1.0 / answer_tokens, "grounding": 0.25}[task]


def _batch(
    examples: Sequence[_Example], task: Task, encoder: TextEncoder, adapter: HFAdapter, step: int = 0
) -> dict[str, torch.Tensor]:
    texts = [encoder(prompt, answer) for prompt, answer in _texts(examples, task, step, adapter.box_convention)]
    length = max(ids.numel() for ids, _ in texts)
    pad = adapter.tokenizer.pad_token_id
    input_ids = torch.full((len(texts), length), pad, dtype=torch.long)
    attention = torch.zeros((len(texts), length), dtype=torch.long)
    weights = torch.zeros((len(texts), length), dtype=torch.float32)
    for row, (ids, start) in enumerate(texts):
        input_ids[row, : ids.numel()] = ids
        attention[row, : ids.numel()] = 1
        weights[row, start : ids.numel()] = _token_weight(task, ids.numel() - start)
    pixels = adapter.pixel_values(torch.stack([e.image for e in examples]).float())
    inputs = {"input_ids": input_ids, "attention_mask": attention, **adapter.vision_inputs(pixels, input_ids)}
    labels = torch.stack([e.token_labels for e in examples])
    return {"inputs": inputs, "weights": weights, "token_labels": labels}


class _TokenProbe:
    """An auxiliary per-image-token classifier on the image embeddings the language model receives.

    A forward pre-hook on the language model keeps its ``inputs_embeds``; the probe
    (linear layers, trained with the model and never saved) predicts from each image
    token which finding, if any, is drawn in its cell, and the cell's row and column.
    The dense, localised signal teaches the vision tower every finding from every image,
    long before the answer loss alone would; the row and column make every image
    embedding carry where it is (Qwen2.5-VL's vision tower has rotary positions only, so
    its outputs need not), which the box answers read.
    """

    def __init__(self, model: torch.nn.Module, image_token_id: int, hidden: int, seed: int,
                 grid: tuple[int, int] = (8, 8), position_weight: float = 0.0) -> None:
        generator = torch.Generator().manual_seed(seed + 7)
        self.grid = grid
        self.position_weight = position_weight
        self.head = torch.nn.Linear(hidden, 1 + len(FINDINGS) + grid[0] + grid[1])
        with torch.no_grad():
            self.head.weight.normal_(0.0, hidden**-0.5, generator=generator)
            self.head.bias.zero_()
        self.image_token_id = image_token_id
        self.embeds: torch.Tensor | None = None
        model.model.language_model.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.embeds = kwargs.get("inputs_embeds")

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor, finding_weight: float) -> torch.Tensor:
        assert self.embeds is not None
        rows = self.embeds[input_ids == self.image_token_id].reshape(labels.shape[0], labels.shape[1], -1)
        logits = self.head(rows.float()).flatten(0, 1)
        found, row, col = logits.split([1 + len(FINDINGS), *self.grid], dim=-1)
        target = labels.flatten()
        weights = torch.where(target > 0, finding_weight, 1.0)
        losses = torch.nn.functional.cross_entropy(found, target, reduction="none")
        finding_loss = (losses * weights).sum() / weights.sum()
        if self.position_weight == 0.0:
            return finding_loss
        cell = torch.arange(labels.shape[1]).repeat(labels.shape[0])  # row-major token cells
        cross = torch.nn.functional.cross_entropy
        position = 0.5 * (cross(row, cell // self.grid[1]) + cross(col, cell % self.grid[1]))
        return finding_loss + self.position_weight * position


def _loss(model: torch.nn.Module, batch: dict[str, Any], probe: _TokenProbe | None = None,
          probe_weight: float = 0.0, finding_weight: float = 1.0) -> tuple[torch.Tensor, float, float]:
    """The loss to minimise, and the answer and probe losses as numbers (the probe's is 0 when off)."""
    inputs, weights = batch["inputs"], batch["weights"]
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    # the output at position t - 1 predicts token t
    targets = inputs["input_ids"][:, 1:]
    w = weights[:, 1:]
    rows = w > 0
    logits = model.get_output_embeddings()(hidden[:, :-1][rows]).float()
    losses = torch.nn.functional.cross_entropy(logits, targets[rows], reduction="none")
    answer = (losses * w[rows]).sum() / weights.shape[0]
    if probe is None or probe_weight == 0.0:
        return answer, answer.item(), 0.0
    aux = probe.loss(inputs["input_ids"], batch["token_labels"], finding_weight)
    return answer + probe_weight * aux, answer.item(), aux.item()


# -- the run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingResult:
    """What a run produced.

    Attributes:
        adapter (Adapter): the trained model, reloaded from the folder through the
            adapter plugins.
        folder (Path): the saved Hugging Face folder.
        losses (tuple[float, ...]): the training loss of every step (nats per token,
            averaged per example then over the batch).
        steps (int): steps run (``config.steps`` unless the wall-time guard stopped it).
        seconds (float): wall time of the steps (model building excluded).
    """

    adapter: Adapter
    folder: Path
    losses: tuple[float, ...]
    steps: int
    seconds: float


def _redraw_gemma_embeddings(model: torch.nn.Module) -> None:
    """Unit-RMS scaled token embeddings (Gemma multiplies them by sqrt(hidden))."""
    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        embeddings.normal_(0.0, embeddings.shape[1] ** -0.5)


TASKS: tuple[Task, ...] = ("direct", "reasoning", "grounding")


def _task(config: TrainingConfig, step: int) -> Task:
    """Direct only for the first ``direct_steps`` steps, then the three tasks in turn."""
    return "direct" if step < config.direct_steps else TASKS[(step - config.direct_steps) % len(TASKS)]


def _learning_rate(config: TrainingConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.final_lr_fraction
    return config.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    config: TrainingConfig,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    max_minutes: float | None = None,
    init_from: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Build, train and save one phantom model; return it loaded through its adapter.

    Deterministic for a given ``config`` and ``seed`` with the same torch thread count
    (the command line sets two threads).

    Args:
        config (TrainingConfig): the recipe (family, steps, ...).
        out (str | PathLike): folder to write (replaced if it exists): config, fp32
            safetensors, tokenizer, chat template and image processor files.
        seed (int): seeds the initial weights and the phantom stream. Default: 0.
        max_minutes (float | None): stop early (with a warning in the log) when the
            wall time exceeds this; the result then depends on the machine's speed.
            Default: None (always run ``config.steps``).
        init_from (str | PathLike | None): a folder written by an earlier run of the
            same family whose model starts this run (a second stage: the folder is
            copied to ``out``, the Gemma embedding re-draw is skipped). Default: None
            (a fresh model).
        log (Callable[[str], None]): receives progress lines. Default: ``print``.

    Returns:
        TrainingResult: the reloaded adapter, the folder, per-step losses and timing.
    """
    from cxr_attrib.testing.tiny_models import load_tiny_adapter, save_tiny_model

    folder = Path(out)
    if folder.exists():
        shutil.rmtree(folder)
    if init_from is None:
        save_tiny_model(
            config.family, folder, seed=seed, vocab_size=TOKENIZER_VOCAB,
            extra_corpus=rationale_corpus() + grounding_corpus(), split_digits=True,
            **config.overrides(),
        )
    else:
        shutil.copytree(init_from, folder)
    adapter = load_tiny_adapter(folder)
    model = adapter.model
    torch.manual_seed(seed)
    if init_from is None and config.family == "gemma3":
        _redraw_gemma_embeddings(model)
    model.train().requires_grad_(True)
    log(f"{config.family}: {sum(p.numel() for p in model.parameters()):,} parameters, {config.steps} steps")

    encoder = TextEncoder(adapter)
    pool = _PairPool(config, seed, adapter.grid)
    probe = _TokenProbe(model, adapter.image_token_id, model.get_input_embeddings().weight.shape[1], seed,
                        adapter.grid, config.position_weight)
    for finding in FINDINGS:
        for _ in range(config.initial_pairs):
            pool.add(finding)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    keep += list(probe.head.parameters())
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": keep, "weight_decay": 0.0}],
        lr=config.lr,
    )
    start, losses, modes, probe_losses = time.perf_counter(), [], [], []
    for step in range(config.steps):
        for finding in pool.draw_findings(config.fresh_pairs):
            pool.add(finding)
        task = _task(config, step)
        examples = pool.sample(pool.draw_findings(config.pairs_per_batch))
        if task == "grounding":
            examples = _grounding_examples(examples, config.grounding_negative_every)
        batch = _batch(examples, task, encoder, adapter, step)
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(config, step)
        loss, answer_loss, probe_loss = _loss(model, batch, probe, config.probe_weight, config.probe_finding_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimiser.step()
        losses.append(answer_loss)
        probe_losses.append(probe_loss)
        modes.append(task)
        elapsed = time.perf_counter() - start
        if len(losses) % config.log_every == 0 or len(losses) == config.steps:
            recent = {m: [v for v, k in zip(losses[-config.log_every:], modes[-config.log_every:]) if k == m]
                      for m in TASKS}
            shown = "  ".join(f"{m} {np.mean(v):.4f}" for m, v in recent.items() if v)
            shown += f"  probe {np.mean(probe_losses[-config.log_every:]):.4f}"
            log(f"step {len(losses):5d}  loss {shown}  lr {_learning_rate(config, step):.2e}  "
                f"pairs {pool.generated}  {elapsed:7.1f} s")
        if max_minutes is not None and elapsed > 60.0 * max_minutes and len(losses) < config.steps:
            log(f"WARNING: stopped after {len(losses)} of {config.steps} steps ({max_minutes} minute budget); "
                "the result is not reproducible from the seed alone.")
            break
    seconds = time.perf_counter() - start
    model.eval().requires_grad_(False)
    model.save_pretrained(folder)
    log(f"trained {len(losses)} steps in {seconds:.1f} s; saved to {folder}")
    return TrainingResult(load_tiny_adapter(folder), folder, tuple(losses), len(losses), seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train one family, save it and print held-out metrics.

    Args:
        argv (Sequence[str] | None): arguments. Default: ``sys.argv[1:]``.

    Returns:
        int: exit status (0).
    """
    from cxr_attrib_phantom.evaluation import evaluate, format_report

    parser = argparse.ArgumentParser(prog="python tools/train_phantom.py", description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILY_NAMES), required=True)
    parser.add_argument("--out", required=True, help="folder to write (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the shipped recipe's)")
    parser.add_argument("--init-from", default=None,
                        help="a folder saved by an earlier run of the family: continue training it")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time guard: stop early past this")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the shipped weights were trained with 1 (results depend on it)")
    parser.add_argument("--eval-per-finding", type=int, default=40)
    parser.add_argument("--eval-reasoning-per-finding", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Process-wide, so only in the command: denormal floats slow CPU steps by 10x or more.
    torch.set_flush_denormal(True)
    config = default_config(args.family, args.steps)
    result = train(config, args.out, seed=args.seed, max_minutes=args.minutes, init_from=args.init_from,
                   log=lambda line: print(line, flush=True))
    report = evaluate(result.adapter, per_finding=args.eval_per_finding,
                      reasoning_per_finding=args.eval_reasoning_per_finding)
    print(format_report(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
