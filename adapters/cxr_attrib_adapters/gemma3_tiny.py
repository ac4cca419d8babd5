"""Tiny random Gemma 3 models for tests (the ``gemma3`` tiny-model recipe).

Registered through ``register_tiny_models``; :func:`cxr_attrib.testing.save_tiny_model`
uses it for ``family="gemma3"``. Default tiny configuration (working frame 224 -> 8 x 8
image tokens): text hidden 64, 2 layers (sliding, full), 4 heads (2 KV), head dim 16,
MLP 128, sliding window 512; SigLIP hidden 32, 2 layers, 2 heads, MLP 64, image 224,
patch 14 (16 x 16 patches) pooled to 64 tokens. The zero-initialised
``mm_input_projection_weight`` is drawn N(0, 1/hidden_vision) so projected image tokens
have about unit RMS and the image matters (154,240 parameters). The full
``Gemma3Processor`` is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.tiny_recipe import TowerProjectorRecipe

__all__ = ["GemmaTinyRecipe"]

_SPECIALS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
)

# Renders like Gemma 3's template: <bos>, a system turn folded into the first user turn,
# <start_of_turn>user|model\n ... <end_of_turn>\n, trimmed text, an image as <start_of_image>.
_TEMPLATE = (
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


class GemmaTinyRecipe(TowerProjectorRecipe):
    """Tiny ``Gemma3ForConditionalGeneration`` models (see the module docstring)."""

    family = "gemma3"
    special_tokens = _SPECIALS
    stop_tokens = ("<eos>", "<end_of_turn>")
    chat_template = _TEMPLATE

    def tokenizer_roles(self) -> dict[str, Any]:
        return {
            "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
            "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                     "image_token": "<image_soft_token>"},
        }

    def config_values(self, tokenizer: Any) -> dict[str, Any]:
        ids = tokenizer.convert_tokens_to_ids
        return {
            "text_config": {
                "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
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

    def build_config(self, values: Mapping[str, Any]) -> Any:
        from transformers import Gemma3Config

        return Gemma3Config(**values)

    def build_model(self, config: Any) -> torch.nn.Module:
        from transformers import Gemma3ForConditionalGeneration

        model = Gemma3ForConditionalGeneration(config)
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        with torch.no_grad():
            projection.normal_(0.0, projection.shape[0] ** -0.5)
        return model

    def save_processing(self, folder: Path, tokenizer: Any, config: Any) -> None:
        from transformers import Gemma3Processor
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        size = config.vision_config.image_size
        Gemma3Processor(
            image_processor=Gemma3ImageProcessorPil(size={"height": size, "width": size}), tokenizer=tokenizer,
            chat_template=tokenizer.chat_template, image_seq_length=config.mm_tokens_per_image,
        ).save_pretrained(folder)


@hookimpl
def register_tiny_models(register: Any) -> None:
    """Register the ``gemma3`` tiny-model recipe."""
    register(GemmaTinyRecipe())
