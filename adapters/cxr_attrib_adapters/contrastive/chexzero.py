"""CheXzero: an OpenAI-CLIP-format state dict, converted on load to ``transformers.CLIPModel``.

The released CheXzero weights are a ``torch.save``-d state dict of OpenAI's ``CLIP``
module (ViT-B/32). :func:`openai_to_hf` renames and reshapes its keys into
``CLIPModel``'s, by this map (``{i}`` = block index; ``T`` = transposed; the fused
attention input projection is split into equal thirds in q, k, v order)::

    visual.class_embedding                 vision_model.embeddings.class_embedding
    visual.positional_embedding            vision_model.embeddings.position_embedding.weight
    visual.conv1.weight                    vision_model.embeddings.patch_embedding.weight
    visual.ln_pre.*                        vision_model.pre_layrnorm.*
    visual.transformer.resblocks.{i}.X     vision_model.encoder.layers.{i}.Y   (block map below)
    visual.ln_post.*                       vision_model.post_layernorm.*
    visual.proj                            visual_projection.weight (T)
    token_embedding.weight                 text_model.embeddings.token_embedding.weight
    positional_embedding                   text_model.embeddings.position_embedding.weight
    transformer.resblocks.{i}.X            text_model.encoder.layers.{i}.Y
    ln_final.*                             text_model.final_layer_norm.*
    text_projection                        text_projection.weight (T)
    logit_scale                            logit_scale

    block map X -> Y: ln_1 -> layer_norm1, ln_2 -> layer_norm2,
    attn.in_proj_weight / attn.in_proj_bias -> self_attn.{q,k,v}_proj.weight / .bias,
    attn.out_proj -> self_attn.out_proj, mlp.c_fc -> mlp.fc1, mlp.c_proj -> mlp.fc2

The architecture (widths, depths, heads = width / 64, patch, image size, context
length, vocabulary, joint width) is read from the tensor shapes; the activation is
QuickGELU, as in OpenAI CLIP. ``input_resolution``, ``context_length`` and
``vocab_size`` entries (present in some exports) are ignored. Any other key, or a
missing one, is a one-line error naming the first few. The text tower pools at the
first end-of-text token of the tokenizer, which for OpenAI's tokenizer (end-of-text is
the largest id) is the original ``argmax`` pooling. The tokenizer and the image
processor come from a CLIP folder or Hub id (default ``openai/clip-vit-base-patch32``,
CheXzero's own) passed as ``processor``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.contrastive import DEFAULT_THRESHOLD, PromptPair
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.safeio import read_bytes

from cxr_attrib.hf import load_step, resolve_device_dtype
from ._base import _RESAMPLE_MODES
from .hf import ClipAdapter, _processor_facts

__all__ = ["CHEXZERO_PROCESSOR", "is_openai_state_dict", "load_chexzero", "openai_to_hf", "read_state_dict"]

CHEXZERO_PROCESSOR = "openai/clip-vit-base-patch32"
"""Where CheXzero's tokenizer and image processor come from by default (CheXzero fine-tuned this CLIP)."""

MAX_STATE_DICT_BYTES = 4 << 30
"""Largest state dict file read (bytes); CheXzero ViT-B/32 is about 0.6 GB."""

_IGNORED = {"input_resolution", "context_length", "vocab_size"}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_MAP = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PLAIN = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def is_openai_state_dict(keys: Any) -> bool:
    """True when ``keys`` look like OpenAI CLIP's (``visual.conv1.weight`` and ``text_projection``)."""
    keys = set(keys)
    return "visual.conv1.weight" in keys and "text_projection" in keys


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and (m.group(1) or "") == prefix}
    return max(found) + 1 if found else 0


def openai_to_hf(state: Mapping[str, torch.Tensor], *, name: str = "state dict") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename an OpenAI CLIP state dict to ``CLIPModel`` keys and read its architecture.

    Args:
        state: OpenAI-layout tensors (see the module docstring).
        name (str): what to call it in messages (e.g. the file). Default: "state dict".

    Returns:
        tuple: ``(hf_state, config_values)``: ``CLIPModel`` tensors and ``CLIPConfig``
        keyword values (``text_config`` / ``vision_config`` dicts).

    Raises:
        ModelLoadError: missing or unexpected keys (the first few named).
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in _IGNORED}
    needed = set(_PLAIN) | set(_TRANSPOSED)
    missing = sorted(needed - set(state))
    if missing:
        raise ModelLoadError(f"{name} is not an OpenAI-CLIP state dict: missing keys {', '.join(missing[:4])}"
                             f"{' ...' if len(missing) > 4 else ''}")
    hf: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key in _PLAIN:
            hf[_PLAIN[key]] = value
        elif key in _TRANSPOSED:
            hf[_TRANSPOSED[key]] = value.T.contiguous()
        elif (match := _BLOCK.match(key)) is not None:
            tower = "vision_model" if match.group(1) else "text_model"
            base, rest = f"{tower}.encoder.layers.{match.group(2)}.", match.group(3)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    hf[f"{base}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
            elif rest in _BLOCK_MAP:
                hf[base + _BLOCK_MAP[rest]] = value
            else:
                unexpected.append(key)
        else:
            unexpected.append(key)
    if unexpected:
        raise ModelLoadError(f"{name} has keys that are not OpenAI CLIP's: {', '.join(sorted(unexpected)[:4])}"
                             f"{' ...' if len(unexpected) > 4 else ''}")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    values = {
        "projection_dim": int(state["text_projection"].shape[1]),
        "vision_config": {
            "hidden_size": int(vision_width), "intermediate_size": int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": _count_blocks(state, "visual."), "num_attention_heads": max(1, int(vision_width) // 64),
            "patch_size": int(patch), "image_size": int(patch) * grid, "hidden_act": "quick_gelu",
        },
        "text_config": {
            "hidden_size": int(text_width), "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": _count_blocks(state, ""), "num_attention_heads": max(1, int(text_width) // 64),
            "max_position_embeddings": int(state["positional_embedding"].shape[0]),
            "vocab_size": int(state["token_embedding.weight"].shape[0]), "hidden_act": "quick_gelu",
        },
    }
    return hf, values


def read_state_dict(path: str, *, what: str, max_bytes: int) -> Mapping[str, torch.Tensor]:
    """The tensors of a ``torch.save``-d state dict file, read through the file boundary.

    The bytes are read with :func:`cxr_attrib.safeio.read_bytes` and unpickled with
    ``weights_only=True``; a ``{"state_dict": ...}`` wrapper is unwrapped.

    Raises:
        ModelLoadError: not a torch file, or not a mapping of tensors (one line).
    """
    buffer = io.BytesIO(read_bytes(path, what=what, max_bytes=max_bytes))
    try:
        state = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor content
        raise ModelLoadError(f"cannot read {path!r} as a torch state dict: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path!r} does not hold a state dict of tensors (got {type(state).__name__}).")
    return state


def load_chexzero(
    path: str | os.PathLike,
    options: LoadOptions,
    *,
    name: str | None = None,
    processor: str = CHEXZERO_PROCESSOR,
    prompts: PromptPair | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> ClipAdapter:
    """Load a CheXzero (OpenAI-CLIP-format) state dict file as a :class:`ClipAdapter`.

    Args:
        path: the ``.pt`` / ``.pth`` file (loaded with ``weights_only=True``).
        options (LoadOptions): dtype, device, working size, ``local_files_only``.
        name (str | None): the reference for messages. Default: ``path``.
        processor (str): CLIP folder or Hub id lending the tokenizer and image processor.
            Default: :data:`CHEXZERO_PROCESSOR`.
        prompts (PromptPair | None): templates. Default: ``"{finding}"`` / ``"no {finding}"``.
        threshold (float): p(positive) for "Yes". Default: 0.5.

    Raises:
        ModelLoadError: no such file, not a state dict, missing/unexpected keys, or the
            processor files unavailable (one line each).
    """
    from transformers import CLIPConfig, CLIPModel

    path = os.fspath(path)
    name = name or path
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"model {name!r} loads a local CheXzero weights file (OpenAI-CLIP state dict); {path!r} is not a "
            "file. Pass the path of the released .pt file as the model."
        )
    state = read_state_dict(path, what="CheXzero weights file", max_bytes=MAX_STATE_DICT_BYTES)
    hf, values = openai_to_hf(state, name=repr(path))
    tokenizer, image_processor, note = _processor_facts(processor, name, options.local_files_only)
    text = values["text_config"]
    text.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id)
    config = CLIPConfig(**values)
    device, dtype = resolve_device_dtype(options)
    model = CLIPModel(config)
    result = load_step(lambda: model.load_state_dict(hf, strict=False), name, path)
    absent = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if absent:
        raise ModelLoadError(f"{path!r}: the converted state dict lacks {', '.join(absent[:4])}")
    model.to(dtype=dtype)
    if device is not None:
        model.to(device)
    model.eval().requires_grad_(False)
    return ClipAdapter(
        name, model, options, tokenizer=tokenizer, image_mean=image_processor.image_mean,
        image_std=image_processor.image_std,
        resample=_RESAMPLE_MODES.get(int(getattr(image_processor, "resample", 3)), "bicubic"),
        prompts=prompts, threshold=threshold, note=f"CheXzero state dict converted; {note}",
    )
