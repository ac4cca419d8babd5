"""Tiny random dual encoders of the real classes, built offline (tests and phantom-clip).

:func:`save_tiny_dual_encoder` writes a Hugging Face folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, the image processor config) that the
contrastive adapters load by folder, exactly like a real checkpoint:

* ``"clip"``: ``CLIPModel``; the text tower pools at the first end-of-text token
  (``text_config.eos_token_id`` is set to the tokenizer's, never the legacy 2);
* ``"siglip"``: ``SiglipModel``; the text tower pools the last position, so prompts
  are padded to ``max_position_embeddings`` (SigLIP's own convention); the vision
  width equals the text projection so patch tokens live in the joint space.

The tokenizer is a lower-casing byte-level BPE trained here (``tokenizers``,
deterministic) on finding prompts, with ``<|startoftext|>`` / ``<|endoftext|>``
around every text (CLIP) or ``</s>`` at the end (SigLIP).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_FAMILIES", "save_tiny_dual_encoder", "tiny_dual_config", "tiny_dual_tokenizer"]

TINY_FAMILIES: tuple[str, ...] = ("clip", "siglip")
"""Dual-encoder classes with a tiny builder: ``CLIPModel`` and ``SiglipModel``."""

_FINDINGS = (
    "nodule", "mass", "pleural effusion", "effusion", "consolidation", "pneumothorax", "cardiomegaly",
    "atelectasis", "edema", "opacity", "pneumonia", "fracture", "lung opacity", "abnormality",
)
_SPECIALS = {"clip": ("<|startoftext|>", "<|endoftext|>"), "siglip": ("<pad>", "</s>", "<unk>")}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "max_position_embeddings": 16},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
    },
    "siglip": {
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "max_position_embeddings": 16, "projection_size": 32},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
    },
}


def _corpus(extra: Sequence[str]) -> list[str]:
    lines = [f"{prefix}{finding}" for finding in _FINDINGS for prefix in ("", "no ", "there is ", "no evidence of ")]
    return lines + ["a chest x-ray", "normal chest radiograph", "no abnormality"] + list(extra)


def _check_family(family: str) -> str:
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny dual-encoder family {family!r}; expected one of {', '.join(TINY_FAMILIES)}")
    return family


def tiny_dual_tokenizer(family: str, vocab_size: int = 400, extra_corpus: Sequence[str] = ()) -> Any:
    """A lower-casing byte-level BPE fast tokenizer for ``family`` (``"clip"`` or ``"siglip"``).

    Args:
        family (str): ``"clip"`` (start and end tokens around the text) or ``"siglip"``
            (``</s>`` at the end, ``<pad>`` padding).
        vocab_size (int): BPE vocabulary cap, special tokens and 256 bytes included. Default: 400.
        extra_corpus (Sequence[str]): more text for the merges. Default: none.

    Returns:
        transformers.PreTrainedTokenizerFast: deterministic for the arguments.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[_check_family(family)]
    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(extra_corpus), trainer)
    if family == "clip":
        bos, eos = specials
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, core.token_to_id(bos)), (eos, core.token_to_id(eos))]
        )
        roles = {"bos_token": bos, "eos_token": eos, "pad_token": eos}
    else:
        pad, eos, unk = specials
        core.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, core.token_to_id(eos))])
        roles = {"eos_token": eos, "pad_token": pad, "unk_token": unk}
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=_DEFAULTS[family]["text_config"][
        "max_position_embeddings"], **roles)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def tiny_dual_config(family: str, tokenizer: Any, **overrides: Any) -> Any:
    """The tiny ``CLIPConfig`` or ``SiglipConfig`` (token ids from ``tokenizer``).

    Args:
        family (str): ``"clip"`` or ``"siglip"``.
        tokenizer: from :func:`tiny_dual_tokenizer`.
        **overrides: config keyword arguments; ``text_config`` / ``vision_config`` dicts
            are merged into the defaults key by key.
    """
    from transformers import CLIPConfig, SiglipConfig

    values = _merge(_DEFAULTS[_check_family(family)], overrides)
    text = values["text_config"]
    text.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if family == "clip":
        text["bos_token_id"] = tokenizer.bos_token_id
        return CLIPConfig(**values)
    return SiglipConfig(**values)


def save_tiny_dual_encoder(
    family: str,
    path: str | os.PathLike,
    seed: int = 0,
    *,
    vocab_size: int = 400,
    extra_corpus: Sequence[str] = (),
    **overrides: Any,
) -> Path:
    """Build a tiny random ``CLIPModel`` / ``SiglipModel`` and save it in Hugging Face layout.

    Args:
        family (str): ``"clip"`` or ``"siglip"``.
        path (str | PathLike): folder to write (created if missing).
        seed (int): torch seed of the random weights. Default: 0.
        vocab_size (int): see :func:`tiny_dual_tokenizer`. Default: 400.
        extra_corpus (Sequence[str]): see :func:`tiny_dual_tokenizer`. Default: none.
        **overrides: see :func:`tiny_dual_config`.

    Returns:
        Path: ``path``.
    """
    from transformers import CLIPImageProcessor, CLIPModel, SiglipImageProcessor, SiglipModel

    tokenizer = tiny_dual_tokenizer(family, vocab_size, extra_corpus)
    config = tiny_dual_config(family, tokenizer, **overrides)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = (CLIPModel if family == "clip" else SiglipModel)(config)
        if family == "siglip":  # SigLIP initialises scale and bias to random draws: use its paper's init
            with torch.no_grad():
                model.logit_scale.fill_(float(torch.log(torch.tensor(10.0))))
                model.logit_bias.fill_(-10.0 / 4)
    finally:
        torch.random.set_rng_state(state)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    side = config.vision_config.image_size
    if family == "clip":
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    else:
        processor = SiglipImageProcessor(size={"height": side, "width": side})
    processor.save_pretrained(out)
    return out
