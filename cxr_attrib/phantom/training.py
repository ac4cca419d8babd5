"""Train the embedded phantom models (SPEC 8.3): deterministic, on the CPU.

A small model of the real ``Qwen2_5_VLForConditionalGeneration`` or
``Gemma3ForConditionalGeneration`` class is built with
:func:`cxr_attrib.testing.tiny_models.save_tiny_model` (so the folder carries the
family's tokenizer, chat template and PIL image processor and loads through the
same adapter code as a real checkpoint), trained on phantom VQA items, and its
weights are written back into the folder as fp32 safetensors.

Recipe (from the prototype in SPEC 8.3):

* sizes: text hidden 128, 4 layers; vision hidden 64, 4 layers; 8 x 8 image tokens
  at 224 px (Qwen: patch 14, merge 2; Gemma: SigLIP at 224 px, patch 14, 64 tokens);
* batches of yes/no *pairs*: each positive beside a negative of the same seed, which
  for a ``"normal"`` negative is its exact counterfactual (same anatomy, finding
  removed); nodule questions use mostly normal negatives and are oversampled;
* an easy-first curriculum: the first :attr:`TrainingConfig.easy_steps` steps ask
  about the large findings only, against normal negatives only (an abnormal-vs-normal
  cue already lowers the loss, which gets the model off the ln 2 plateau); nodules
  and other-finding negatives come after;
* direct mode only for the first :attr:`TrainingConfig.direct_steps` steps (every
  gradient then pushes the model off the ln 2 plateau towards using the image), then
  both prompt modes, alternating step by step (direct answers ``"Yes"`` / ``"No"``,
  reasoning answers the templated rationales of :mod:`cxr_attrib.phantom.vqa`). The
  loss covers each example's assistant turn (the response and the template's closing
  tokens): summed over the tokens of a direct answer (so the verdict token has weight
  1), averaged over the tokens of a rationale, then averaged over the batch;
* AdamW, learning rate 1e-3 with linear warm-up and cosine decay, gradient clipping;
* Gemma 3: the token embeddings are re-drawn so that scaled embeddings have unit RMS
  (with the default initialisation its post-sublayer norms swamp them and it stays on
  the ln 2 plateau; the builder already draws the zero-initialised image projection
  that way). Qwen keeps HF's default initialisation (the same re-draw slowed it down).

Seeds: training phantoms are drawn from ``[0, TRAIN_SEED_LIMIT)``; held-out
evaluation (:mod:`cxr_attrib.phantom.evaluation`) uses seeds from
``HELD_OUT_SEED_START`` = 10,000,000 on. Phantoms are generated on the fly into a
per-finding pool (a few fresh pairs per step, the batch drawn from the pool), so the
run is a pure function of the seed, the number of steps and the torch thread count
(the shipped weights: seed 0, one thread, see :data:`DEFAULT_STEPS`); pixel values come from
:func:`pixel_values`, a torch patchify equal to the PIL image processor's output.

The shipped weights are two stages (one CPU thread; about 22 + 10 minutes on a
shared two-core machine)::

    python -m cxr_attrib.phantom.training --family qwen --out STAGE1 --seed 0
    python -m cxr_attrib.phantom.training --family qwen --out FINAL --seed 1 --init-from STAGE1

(``--minutes M`` adds a wall-time guard that stops early; ``--family gemma`` likewise.)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapter import Adapter
from ..errors import DataError
from ..targets import Mode, build_prompt
from .findings import FINDINGS
from .vqa import VQAItem, make_vqa_item

__all__ = [
    "FAMILY_NAMES",
    "MODEL_OVERRIDES",
    "SECOND_STAGE_STEPS",
    "TRAIN_SEED_LIMIT",
    "TextEncoder",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "default_config",
    "second_stage_config",
    "main",
    "pixel_values",
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
        lr (float): peak AdamW learning rate. Default: 1e-3.
        warmup (int): linear learning-rate warm-up steps. Default: 100.
        final_lr_fraction (float): cosine decay ends at ``lr`` times this. Default: 0.1.
        weight_decay (float): AdamW weight decay. Default: 0.01.
        clip (float): gradient-norm clip. Default: 1.0.
        easy_steps (int): first steps asking about every finding but the nodule, with
            normal negatives only. Default: 150.
        direct_steps (int): first steps in direct mode only; later steps alternate
            direct and reasoning. Default: 200.
        finding_weights (dict[str, float]): relative frequency of each finding's pairs
            after the easy steps. Default: nodule 2.5, every other finding 1.
        normal_fractions (dict[str, float]): probability that a pair's negative is a
            normal phantom (the positive's exact counterfactual) rather than another
            finding. Default: nodule 0.75, every other finding 0.5.
        fresh_pairs (int): new pairs generated per step into the pool. Default: 3.
        initial_pairs (int): pairs generated per finding before the first step
            (normal negatives; nodule: twice as many). Default: 16.
        pool_capacity (int): most pairs kept per finding (oldest replaced). Default: 800.
        model_overrides (dict): config overrides of the model. Default:
            :data:`MODEL_OVERRIDES` of ``family``.
        log_every (int): steps between log lines. Default: 25.
    """

    family: str
    steps: int
    pairs_per_batch: int = 16
    lr: float = 1e-3
    warmup: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    easy_steps: int = 150
    direct_steps: int = 200
    finding_weights: dict[str, float] = field(
        default_factory=lambda: {f: (2.5 if f == "nodule" else 1.0) for f in FINDINGS}
    )
    normal_fractions: dict[str, float] = field(
        default_factory=lambda: {f: (0.75 if f == "nodule" else 0.5) for f in FINDINGS}
    )
    fresh_pairs: int = 3
    initial_pairs: int = 16
    pool_capacity: int = 800
    model_overrides: dict[str, Any] | None = None
    log_every: int = 25

    def overrides(self) -> dict[str, Any]:
        """The model config overrides in use."""
        return MODEL_OVERRIDES[self.family] if self.model_overrides is None else self.model_overrides


DEFAULT_STEPS: dict[str, int] = {"qwen2_5_vl": 1200, "gemma3": 1200}
"""Steps of the shipped runs (about 20 minutes each on one CPU thread)."""


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
    return TrainingConfig(family=name, steps=steps)


SECOND_STAGE_STEPS = 500
"""Steps of the shipped second stage (started from the first stage's folder)."""


def second_stage_config(family: str, steps: int = SECOND_STAGE_STEPS) -> TrainingConfig:
    """The shipped second stage: every finding and both modes from the first step.

    No easy steps, no direct-only steps, 50 warm-up steps to a peak learning rate of
    5e-4; run it with ``init_from`` = the first stage's folder and seed 1.

    Args:
        family (str): as for :func:`default_config`.
        steps (int): optimiser steps. Default: :data:`SECOND_STAGE_STEPS`.

    Returns:
        TrainingConfig: the configuration.
    """
    return replace(default_config(family, steps), easy_steps=0, direct_steps=0, warmup=50, lr=5e-4)


# -- inputs -----------------------------------------------------------------------------


def pixel_values(adapter: Adapter, images: torch.Tensor) -> torch.Tensor:
    """Model pixel values for working-frame images, equal to the adapter's PIL processor.

    The grey image is repeated to RGB, normalised in float32 with the image
    processor's mean and std and, for Qwen2.5-VL, cut into flattened patches stored
    merge window by merge window with the temporal copies (the processor's order).
    Only images whose side already matches the model input (no resizing) are supported.

    Args:
        adapter (Adapter): a loaded Qwen2.5-VL or Gemma 3 adapter.
        images (torch.Tensor): (B, S, S) float32 in [0, 1].

    Returns:
        torch.Tensor: Qwen: (B * N, 3 * T * P * P) with N = (S / P) ** 2; Gemma:
        (B, 3, S, S); float32.
    """
    processor = adapter.image_processor
    mean = torch.tensor(processor.image_mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(processor.image_std, dtype=torch.float32)[None, :, None, None]
    rgb = (images.float()[:, None].expand(-1, 3, -1, -1) - mean) / std
    if adapter.family != "qwen2_5_vl":
        return rgb.contiguous()
    batch, channels, side, _ = rgb.shape
    p, m, t = int(processor.patch_size), int(processor.merge_size), int(processor.temporal_patch_size)
    g = side // p
    patches = rgb.reshape(batch, channels, g // m, m, p, g // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
    patches = patches[:, :, :, :, :, :, None].expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
    return patches.reshape(batch * g * g, channels * t * p * p)


class TextEncoder:
    """Token ids of chat-rendered (prompt, answer) pairs and where the assistant turn starts.

    The conversation ``user: [image, prompt]``, ``assistant: answer`` is rendered
    with the adapter's chat template, the image placeholder expanded to the model's
    image tokens, and tokenised once. Tokens whose first character lies at or after
    the end of the generation prompt form the assistant turn (the response and the
    template's closing tokens): the adapter's ``"turn"`` span policy.

    Args:
        adapter (Adapter): a loaded Qwen2.5-VL or Gemma 3 adapter.
    """

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.tokenizer = adapter.tokenizer
        gh, gw = adapter.grid
        if adapter.family == "qwen2_5_vl":
            self._marker, self._expanded = adapter.image_token, adapter.image_token * (gh * gw)
        else:
            self._marker, self._expanded = adapter.image_marker, adapter.image_sequence
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
        return text.replace(self._marker, self._expanded)

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


@dataclass(frozen=True)
class _Example:
    image: torch.Tensor  # (S, S) float16: halves the pool's memory; the error is < 2.5e-4
    question: str
    direct: str
    reasoning: str


def _example(item: VQAItem) -> _Example:
    return _Example(
        image=torch.from_numpy(item.image).to(torch.float16),
        question=item.question,
        direct="Yes" if item.present else "No",
        reasoning=item.answer,
    )


class _PairPool:
    """Per-finding ring buffers of (positive, negative) pairs, refilled deterministically."""

    def __init__(self, config: TrainingConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, 8301])
        self.pairs: dict[str, list[tuple[_Example, _Example]]] = {f: [] for f in FINDINGS}
        self.next_slot = dict.fromkeys(FINDINGS, 0)
        self.generated = 0

    def add(self, finding: str, easy: bool) -> None:
        seed = int(self.rng.integers(0, TRAIN_SEED_LIMIT))
        normal = 1.0 if easy else self.config.normal_fractions[finding]
        kind = "normal" if self.rng.random() < normal else "other"
        positive = make_vqa_item(seed, finding, True, "reasoning")
        negative = make_vqa_item(seed, finding, False, "reasoning", negative=kind)
        pair = (_example(positive), _example(negative))
        ring = self.pairs[finding]
        if len(ring) < self.config.pool_capacity:
            ring.append(pair)
        else:
            ring[self.next_slot[finding]] = pair
            self.next_slot[finding] = (self.next_slot[finding] + 1) % self.config.pool_capacity
        self.generated += 1

    def draw_findings(self, count: int, easy: bool) -> list[str]:
        weights = np.array([self.config.finding_weights[f] for f in FINDINGS], dtype=np.float64)
        if easy:
            weights = np.array([0.0 if f == "nodule" else 1.0 for f in FINDINGS])
        picks = self.rng.choice(len(FINDINGS), size=count, p=weights / weights.sum())
        return [FINDINGS[i] for i in picks]

    def sample(self, findings: Sequence[str]) -> list[_Example]:
        out: list[_Example] = []
        for finding in findings:
            ring = self.pairs[finding]
            out.extend(ring[int(self.rng.integers(0, len(ring)))])
        return out


def _batch(
    examples: Sequence[_Example], mode: Mode, encoder: TextEncoder, adapter: Adapter
) -> dict[str, torch.Tensor]:
    texts = [encoder(build_prompt(e.question, mode), e.direct if mode == "direct" else e.reasoning) for e in examples]
    length = max(ids.numel() for ids, _ in texts)
    pad = adapter.tokenizer.pad_token_id
    input_ids = torch.full((len(texts), length), pad, dtype=torch.long)
    attention = torch.zeros((len(texts), length), dtype=torch.long)
    weights = torch.zeros((len(texts), length), dtype=torch.float32)
    for row, (ids, start) in enumerate(texts):
        input_ids[row, : ids.numel()] = ids
        attention[row, : ids.numel()] = 1
        weights[row, start : ids.numel()] = 1.0 if mode == "direct" else 1.0 / (ids.numel() - start)
    pixels = pixel_values(adapter, torch.stack([e.image for e in examples]).float())
    image_mask = input_ids == adapter.image_token_id
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention, "pixel_values": pixels}
    if adapter.family == "qwen2_5_vl":
        gh, gw = adapter.patch_grid
        inputs["image_grid_thw"] = torch.tensor([[1, gh, gw]] * len(texts), dtype=torch.long)
        inputs["mm_token_type_ids"] = image_mask.int()
    else:
        inputs["token_type_ids"] = image_mask.long()
    return {"inputs": inputs, "weights": weights}


def _loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    inputs, weights = batch["inputs"], batch["weights"]
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    # the output at position t - 1 predicts token t
    targets = inputs["input_ids"][:, 1:]
    w = weights[:, 1:]
    rows = w > 0
    logits = model.get_output_embeddings()(hidden[:, :-1][rows]).float()
    losses = torch.nn.functional.cross_entropy(logits, targets[rows], reduction="none")
    return (losses * w[rows]).sum() / weights.shape[0]


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
    from ..testing.tiny_models import load_tiny_adapter, save_tiny_model

    folder = Path(out)
    if folder.exists():
        shutil.rmtree(folder)
    if init_from is None:
        save_tiny_model(config.family, folder, seed=seed, **config.overrides())
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
    pool = _PairPool(config, seed)
    for finding in FINDINGS:
        for _ in range(config.initial_pairs * (2 if finding == "nodule" else 1)):
            pool.add(finding, easy=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    keep = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": keep, "weight_decay": 0.0}],
        lr=config.lr,
    )
    start, losses, modes = time.perf_counter(), [], []
    for step in range(config.steps):
        easy = step < config.easy_steps
        for finding in pool.draw_findings(config.fresh_pairs, easy):
            pool.add(finding, easy)
        mode: Mode = "direct" if step < config.direct_steps or step % 2 == 0 else "reasoning"
        batch = _batch(pool.sample(pool.draw_findings(config.pairs_per_batch, easy)), mode, encoder, adapter)
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(config, step)
        loss = _loss(model, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimiser.step()
        losses.append(loss.item())
        modes.append(mode)
        elapsed = time.perf_counter() - start
        if len(losses) % config.log_every == 0 or len(losses) == config.steps:
            recent = {m: [v for v, k in zip(losses[-config.log_every:], modes[-config.log_every:]) if k == m]
                      for m in ("direct", "reasoning")}
            shown = "  ".join(f"{m} {np.mean(v):.4f}" for m, v in recent.items() if v)
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
    from .evaluation import evaluate, format_report

    parser = argparse.ArgumentParser(prog="python -m cxr_attrib.phantom.training", description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILY_NAMES), required=True)
    parser.add_argument("--out", required=True, help="folder to write (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the shipped recipe's)")
    parser.add_argument("--init-from", default=None,
                        help="first-stage folder: run the second stage (second_stage_config) from it")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time guard: stop early past this")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the shipped weights were trained with 1 (results depend on it)")
    parser.add_argument("--eval-per-finding", type=int, default=40)
    parser.add_argument("--eval-reasoning-per-finding", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Process-wide, so only in the command: denormal floats slow CPU steps by 10x or more.
    torch.set_flush_denormal(True)
    if args.init_from is None:
        config = default_config(args.family, args.steps)
    else:
        config = second_stage_config(args.family, args.steps or SECOND_STAGE_STEPS)
    result = train(config, args.out, seed=args.seed, max_minutes=args.minutes, init_from=args.init_from,
                   log=lambda line: print(line, flush=True))
    report = evaluate(result.adapter, per_finding=args.eval_per_finding,
                      reasoning_per_finding=args.eval_reasoning_per_finding)
    print(format_report(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
