"""Tiny random Qwen2.5-VL models for tests (the ``qwen2_5_vl`` tiny-model recipe).

Registered through ``register_tiny_models``; :func:`cxr_attrib.testing.save_tiny_model`
uses it for ``family="qwen2_5_vl"``. Default tiny configuration (working frame 224 ->
16 x 16 patches -> 8 x 8 image tokens): text hidden 64, 2 layers, 4 heads (2 KV), MLP
128, M-RoPE sections (2, 3, 3); vision hidden 32, depth 2, 2 heads, MLP 64, patch 14,
merge 2, temporal patch 2, window 112, full attention in block 1, output 64
(225,632 parameters). The processor is saved as tokenizer + PIL image processor,
since the full Qwen processor needs torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.tiny_recipe import TinyModelRecipe, zero_output_projections

__all__ = ["QwenTinyRecipe"]

_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# Renders like Qwen2.5-VL's template: default system turn, <|im_start|>role\n ... <|im_end|>\n,
# an image as <|vision_start|><|image_pad|><|vision_end|>.
_TEMPLATE = (
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


class QwenTinyRecipe(TinyModelRecipe):
    """Tiny ``Qwen2_5_VLForConditionalGeneration`` models (see the module docstring)."""

    family = "qwen2_5_vl"
    special_tokens = _SPECIALS
    stop_tokens = ("<|im_end|>", "<|endoftext|>")
    chat_template = _TEMPLATE

    def tokenizer_roles(self) -> dict[str, Any]:
        return {
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                     "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
        }

    def config_values(self, tokenizer: Any) -> dict[str, Any]:
        ids = tokenizer.convert_tokens_to_ids
        return {
            "text_config": {
                "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
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

    def build_config(self, values: Mapping[str, Any]) -> Any:
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(**values)

    def build_model(self, config: Any) -> torch.nn.Module:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration(config)

    def save_processing(self, folder: Path, tokenizer: Any, config: Any) -> None:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        vision = config.vision_config
        tokenizer.save_pretrained(folder)
        Qwen2VLImageProcessorPil(
            min_pixels=56 * 56, max_pixels=1024 * 28 * 28, patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size, temporal_patch_size=vision.temporal_patch_size,
        ).save_pretrained(folder)

    def isolate_vision_tokens(self, model: torch.nn.Module) -> None:
        zero_output_projections(model.model.visual, ".attn.proj")

    def gate_image_features(self, model: torch.nn.Module, gains: torch.Tensor) -> None:
        def gate(module: torch.nn.Module, args: Any, output: Any) -> Any:
            tokens = output.pooler_output
            repeat = tokens.shape[0] // gains.numel()
            output.pooler_output = tokens * gains.repeat(repeat)[:, None].to(tokens.device, tokens.dtype)
            return output

        model.model.visual.register_forward_hook(gate)


@hookimpl
def register_tiny_models(register: Any) -> None:
    """Register the ``qwen2_5_vl`` tiny-model recipe."""
    register(QwenTinyRecipe())
