"""Tiny random-weight models of the real Qwen2.5-VL and Gemma 3 classes, built offline.

Each family gets a ``*ForConditionalGeneration`` of the real transformers class with
a few hundred thousand parameters, a byte-level BPE tokenizer trained here (by the
``tokenizers`` library, deterministically) on a small corpus of chest X-ray
questions, answers and prompt suffixes, carrying the family's real special tokens,
a chat template written for this package that renders like the family's own, and
the family's PIL image processor. :func:`save_tiny_model` writes them in Hugging
Face layout, so the adapters load them by folder exactly like a real checkpoint.

Default tiny configurations (working frame 224 -> 8 x 8 image tokens in both):

* ``qwen2_5_vl``: text hidden 64, 2 layers, 4 heads (2 KV), MLP 128,
  M-RoPE sections (2, 3, 3); vision hidden 32, depth 2, 2 heads, MLP 64, patch 14,
  merge 2, temporal patch 2, window 112, full attention in block 1, output 64.
  225,632 parameters.
* ``gemma3``: text hidden 64, 2 layers (sliding, full), 4 heads (2 KV), head dim
  16, MLP 128, sliding window 512; SigLIP hidden 32, 2 layers, 2 heads, MLP 64,
  image 224, patch 14 (16 x 16 patches) pooled to 64 tokens. The zero-initialised
  ``mm_input_projection_weight`` is drawn N(0, 1/hidden_vision) so projected image
  tokens have about unit RMS and the image matters. 154,240 parameters.

The tokenizers hold the special tokens plus the 256 byte symbols and the merges the
corpus yields (529 tokens for Qwen, 525 for Gemma; ``vocab_size`` caps it at 640).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..adapter import Adapter, LoadOptions
from ..errors import ModelLoadError

__all__ = [
    "FAMILIES",
    "build_tiny_adapter",
    "load_tiny_adapter",
    "save_tiny_model",
    "tiny_config",
    "tiny_tokenizer",
    "wired_adapter",
]

FAMILIES = ("qwen2_5_vl", "gemma3")
"""Families the tiny builders support."""

_DEFAULT_OPTIONS = LoadOptions(dtype="float32", device="cpu", local_files_only=True)
_QWEN_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
_GEMMA_SPECIALS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
)

# Renders like Qwen2.5-VL's template: default system turn, <|im_start|>role\n ... <|im_end|>\n,
# an image as <|vision_start|><|image_pad|><|vision_end|>.
_QWEN_TEMPLATE = (
    "{%- for turn in messages -%}"
    "{%- if loop.first and turn.role != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' ~ turn.role ~ '\\n' -}}"
    "{%- if turn.content is string -%}{{- turn.content -}}"
    "{%- else -%}{%- for part in turn.content -%}"
    "{%- if part.type == 'image' or 'image' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Renders like Gemma 3's template: <bos>, a system turn folded into the first user turn,
# <start_of_turn>user|model\n ... <end_of_turn>\n, trimmed text, an image as <start_of_image>.
_GEMMA_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(prefix='', turns=messages) -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set head = messages[0].content -%}"
    "{%- set ns.prefix = (head if head is string else head[0].text) ~ '\\n\\n' -%}"
    "{%- set ns.turns = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for turn in ns.turns -%}"
    "{%- if (turn.role == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('turns must alternate user / assistant') -}}"
    "{%- endif -%}"
    "{{- '<start_of_turn>' ~ ('model' if turn.role == 'assistant' else turn.role) ~ '\\n' -}}"
    "{%- if loop.first -%}{{- ns.prefix -}}{%- endif -%}"
    "{%- if turn.content is string -%}{{- turn.content | trim -}}"
    "{%- else -%}{%- for part in turn.content -%}"
    "{%- if part.type == 'image' -%}{{- '<start_of_image>' -}}"
    "{%- elif part.type == 'text' -%}{{- part.text | trim -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_turn>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

_FINDINGS = (
    "nodule", "mass", "pleural effusion", "effusion", "consolidation", "pneumothorax",
    "cardiomegaly", "atelectasis", "edema", "opacity", "fracture", "pneumonia", "abnormality",
)
_REASONING = (
    "The left lung base is blunted. Answer: yes.",
    "The costophrenic angles are sharp and the lungs are clear. Answer: no.",
    "The cardiac silhouette is enlarged. The answer is yes.",
    "There is no evidence of pneumothorax. Answer: no.",
    "A round opacity is seen in the right upper lobe. Answer: yes.",
    "The heart size is normal and there is no effusion. Answer: no.",
    "Step 1: look at the lungs. Step 2: look at the heart and mediastinum. Answer: yes.",
)


def _corpus() -> list[str]:
    from ..targets import build_prompt, finding_question

    lines = ["You are a helpful assistant.", "user", "assistant", "model", "system", "Yes.", "No.", "Yes", "No"]
    for finding in _FINDINGS:
        question = finding_question(finding)
        lines += [build_prompt(question, "direct"), build_prompt(question, "reasoning")]
        lines += [f"No {finding}.", f"There is {finding} in the left lung.", f"no evidence of {finding}"]
    return lines + list(_REASONING) * 2


def tiny_tokenizer(family: str, vocab_size: int = 640, extra_corpus: Sequence[str] = ()) -> Any:
    """A byte-level BPE tokenizer with ``family``'s real special tokens and chat template.

    Args:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        vocab_size (int): BPE vocabulary size including the 256 byte symbols and the
            special tokens (ids 0..k-1, in the order of the real vocabularies). Default: 640.
        extra_corpus (Sequence[str]): more training text for the merges (the phantom
            models add their rationales, which then take a few tokens instead of one per
            byte). Default: none.

    Returns:
        A ``transformers`` fast tokenizer (deterministic for a given ``vocab_size``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    _check_family(family)
    specials = _QWEN_SPECIALS if family == "qwen2_5_vl" else _GEMMA_SPECIALS
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(_corpus() + list(extra_corpus), trainer)
    if family == "qwen2_5_vl":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                  "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
        )
        tokenizer.chat_template = _QWEN_TEMPLATE
    else:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
            extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                  "image_token": "<image_soft_token>"},
        )
        tokenizer.chat_template = _GEMMA_TEMPLATE
    return tokenizer


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; expected one of {FAMILIES}.")


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _config_dict(family: str, tokenizer: Any) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    vocab = len(tokenizer)
    if family == "qwen2_5_vl":
        return {
            "text_config": {
                "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
                "pad_token_id": ids("<|endoftext|>"),
            },
            "vision_config": {
                "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 14,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                "fullatt_block_indexes": [1], "out_hidden_size": 64,
            },
            "image_token_id": ids("<|image_pad|>"), "video_token_id": ids("<|video_pad|>"),
            "vision_start_token_id": ids("<|vision_start|>"), "vision_end_token_id": ids("<|vision_end|>"),
        }
    return {
        "text_config": {
            "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16,
            "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 4096, "pad_token_id": ids("<pad>"), "eos_token_id": ids("<eos>"),
            "bos_token_id": ids("<bos>"),
        },
        "vision_config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 224, "patch_size": 14, "vision_use_head": False,
        },
        "mm_tokens_per_image": 64, "boi_token_index": ids("<start_of_image>"),
        "eoi_token_index": ids("<end_of_image>"), "image_token_index": ids("<image_soft_token>"),
    }


def _build_config(family: str, tokenizer: Any, overrides: Mapping[str, Any]) -> Any:
    from transformers import Gemma3Config, Qwen2_5_VLConfig

    values = _merge(_config_dict(family, tokenizer), overrides)
    return Qwen2_5_VLConfig(**values) if family == "qwen2_5_vl" else Gemma3Config(**values)


def tiny_config(family: str, **overrides: Any) -> Any:
    """The tiny ``Qwen2_5_VLConfig`` / ``Gemma3Config`` (see the module docstring).

    Args:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        **overrides: config keyword arguments; dicts (``text_config={...}``,
            ``vision_config={...}``) are merged into the defaults key by key.

    Returns:
        The config object (token ids match :func:`tiny_tokenizer`).
    """
    _check_family(family)
    return _build_config(family, tiny_tokenizer(family), overrides)


def _image_processor(family: str, config: Any) -> Any:
    vision = config.vision_config
    if family == "qwen2_5_vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil(
            min_pixels=56 * 56, max_pixels=1024 * 28 * 28, patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size, temporal_patch_size=vision.temporal_patch_size,
        )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size})


def save_tiny_model(
    family: str,
    path: str | os.PathLike,
    seed: int = 0,
    *,
    vocab_size: int = 640,
    extra_corpus: Sequence[str] = (),
    **config_overrides: Any,
) -> Path:
    """Build a tiny random model of the real class and save it in Hugging Face layout.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors``, the
    tokenizer files with ``chat_template.jinja`` and the image processor config
    (Gemma: the full ``Gemma3Processor``; Qwen: tokenizer + image processor, since
    its full processor needs torchvision).

    Args:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        path (str | PathLike): folder to write (created if missing).
        seed (int): torch seed for the random weights. Default: 0.
        vocab_size (int): see :func:`tiny_tokenizer`. Default: 640.
        extra_corpus (Sequence[str]): see :func:`tiny_tokenizer`. Default: none.
        **config_overrides: see :func:`tiny_config`.

    Returns:
        Path: ``path``.
    """
    from transformers import Gemma3ForConditionalGeneration, Gemma3Processor, Qwen2_5_VLForConditionalGeneration

    _check_family(family)
    tokenizer = tiny_tokenizer(family, vocab_size, extra_corpus)
    config = _build_config(family, tokenizer, config_overrides)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if family == "qwen2_5_vl":
            model = Qwen2_5_VLForConditionalGeneration(config)
            stops = ["<|im_end|>", "<|endoftext|>"]
        else:
            model = Gemma3ForConditionalGeneration(config)
            projection = model.model.multi_modal_projector.mm_input_projection_weight
            with torch.no_grad():
                projection.normal_(0.0, projection.shape[0] ** -0.5)
            stops = ["<eos>", "<end_of_turn>"]
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(stops)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    image_processor = _image_processor(family, config)
    if family == "gemma3":
        Gemma3Processor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
            image_seq_length=config.mm_tokens_per_image,
        ).save_pretrained(out)
    else:
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
    return out


def load_tiny_adapter(path: str | os.PathLike, options: LoadOptions | None = None) -> Adapter:
    """Load a saved tiny model by folder through the ``resolve_adapter`` hook.

    Args:
        path (str | PathLike): a folder written by :func:`save_tiny_model`.
        options (LoadOptions | None): load options. Default: float32 on the CPU,
            working size 224, local files only.

    Returns:
        Adapter: the adapter the installed adapter plugins resolve the folder to.

    Raises:
        ModelLoadError: no installed adapter plugin recognises the folder.
    """
    from ..registry import plugin_manager

    options = options or _DEFAULT_OPTIONS
    adapter = plugin_manager().hook.resolve_adapter(reference=os.fspath(path), options=options)
    if adapter is None:
        raise ModelLoadError(
            f"no adapter plugin resolved the tiny model folder {os.fspath(path)!r}; expected the "
            "built-in adapters (entry points qwen2_5_vl and gemma3 of the cxr_attrib group) to be "
            "installed. Reinstall cxr-attrib or check CXR_ATTRIB_LOAD_PLUGINS / CXR_ATTRIB_BLOCK_PLUGINS."
        )
    return adapter


def build_tiny_adapter(
    family: str, seed: int = 0, *, options: LoadOptions | None = None, **overrides: Any
) -> Adapter:
    """Save a tiny model to a temporary folder and load it like any checkpoint.

    The folder goes through the ``resolve_adapter`` hook (the installed adapter
    plugins), so this also exercises loading by folder path.

    Args:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        seed (int): weight seed. Default: 0.
        options (LoadOptions | None): load options. Default: float32 on the CPU,
            working size 224, local files only.
        **overrides: config overrides (see :func:`tiny_config`).

    Returns:
        Adapter: the loaded adapter (fully in memory; the folder is removed).
    """
    with tempfile.TemporaryDirectory(prefix=f"cxr-attrib-tiny-{family}-") as folder:
        return load_tiny_adapter(save_tiny_model(family, folder, seed=seed, **overrides), options)


def _isolate_vision_tokens(family: str, model: torch.nn.Module) -> None:
    """Zero the vision attention outputs: each patch then sees only its own pixels."""
    suffix = ".attn.proj" if family == "qwen2_5_vl" else ".self_attn.out_proj"
    tower = model.model.visual if family == "qwen2_5_vl" else model.model.vision_tower
    with torch.no_grad():
        for name, module in tower.named_modules():
            if name.endswith(suffix):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()


def wired_adapter(
    family: str,
    region: tuple[float, float, float, float],
    *,
    seed: int = 0,
    gain: float = 4.0,
    options: LoadOptions | None = None,
) -> Adapter:
    """A tiny adapter whose target log-prob depends only on the pixels of ``region``.

    How (real classes, real forward pass, two documented edits):

    1. every vision attention output projection is zeroed, so an image token's
       feature depends only on the pixels of its own cell (Qwen: its 2 x 2 merge
       window of patches; Gemma: its average-pooling window);
    2. a forward hook on the image-feature output (Qwen ``model.visual``'s merged
       tokens, Gemma ``multi_modal_projector``) multiplies the features of tokens
       whose cell lies outside ``region`` by 0 and those inside by ``gain``.

    Pixels outside ``region`` therefore have exactly zero effect (and zero gradient),
    while the tokens of ``region`` reach the answer through the language model.

    Args:
        family (str): ``"qwen2_5_vl"`` or ``"gemma3"``.
        region (tuple): ``(x1, y1, x2, y2)`` working-frame pixels, exclusive ends; it
            must be a union of whole token cells (cell side S / grid, 28 px at 224).
        seed (int): weight seed. Default: 0.
        gain (float): factor on the region's image features. Default: 4.0.
        options (LoadOptions | None): see :func:`build_tiny_adapter`.

    Returns:
        Adapter: the wired adapter.

    Raises:
        ValueError: ``region`` does not align with the token grid or is empty.
    """
    adapter = build_tiny_adapter(family, seed=seed, options=options)
    size = adapter.working_size
    gh, gw = adapter.geometry.token_grid
    x1, y1, x2, y2 = region
    cells = [v * gw / size for v in (x1, x2)] + [v * gh / size for v in (y1, y2)]
    if any(abs(c - round(c)) > 1e-9 for c in cells) or not (0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size):
        raise ValueError(
            f"region {region} must be a non-empty union of whole token cells of the {gh}x{gw} grid "
            f"(cells of {size / gw:g} x {size / gh:g} px in the {size} px working frame)."
        )
    c1, c2, r1, r2 = (round(c) for c in cells)
    mask = torch.zeros(gh, gw)
    mask[r1:r2, c1:c2] = gain
    flat = mask.flatten().to(adapter.device)
    model = adapter.model
    _isolate_vision_tokens(family, model)

    if family == "qwen2_5_vl":
        def gate(module: torch.nn.Module, args: Any, output: Any) -> Any:
            tokens = output.pooler_output
            output.pooler_output = tokens * flat.repeat(tokens.shape[0] // flat.numel())[:, None].to(tokens.dtype)
            return output

        model.model.visual.register_forward_hook(gate)
    else:
        def gate(module: torch.nn.Module, args: Any, output: Any) -> Any:
            return output * flat[None, :, None].to(output.dtype)

        model.model.multi_modal_projector.register_forward_hook(gate)
    return adapter
