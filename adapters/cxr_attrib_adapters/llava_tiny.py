"""Tiny random LLaVA models for tests (the ``llava`` tiny-model recipe).

Registered through ``register_tiny_models``; :func:`cxr_attrib.testing.save_tiny_model`
uses it for ``family="llava"``. The real classes: ``LlavaForConditionalGeneration`` with a
``CLIPVisionModel`` tower and a Llama decoder. Default tiny configuration (working frame
224 -> 16 x 16 image tokens, one per 14 px patch, the class token dropped as in
LLaVA-1.5's ``vision_feature_select_strategy="default"``): Llama hidden 64, 2 layers,
4 heads (2 KV), MLP 128; CLIP hidden 32, 3 layers (the image features are read after the
second, ``vision_feature_layer=-2`` as in LLaVA-1.5), 2 heads, MLP 64, image 224, patch
14; a GELU projector. The full ``LlavaProcessor`` (PIL CLIP image processor, no
torchvision) is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.tiny_recipe import TowerProjectorRecipe

__all__ = ["LlavaTinyRecipe"]

_SPECIALS = ("<unk>", "<s>", "</s>", "<image>", "<pad>")

# Renders like LLaVA-1.5 (Vicuna v1): <s>USER: <image>\n{prompt} ASSISTANT: {answer}</s>; the
# generation prompt ends with "ASSISTANT: " so that the answer follows it directly.
TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for turn in messages -%}"
    "{%- if turn.role == 'user' -%}{{- 'USER: ' -}}"
    "{%- if turn.content is string -%}{{- turn.content -}}"
    "{%- else -%}{%- for part in turn.content -%}"
    "{%- if part.type == 'image' -%}{{- '<image>\\n' -}}{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- else -%}{{- ' ASSISTANT: ' -}}"
    "{%- if turn.content is string -%}{{- turn.content -}}"
    "{%- else -%}{%- for part in turn.content -%}{{- part.text -}}{%- endfor -%}{%- endif -%}"
    "{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT: ' -}}{%- endif -%}"
)
"""A LLaVA-1.5 (Vicuna v1) style chat template in which the answer follows the generation prompt."""


class LlavaTinyRecipe(TowerProjectorRecipe):
    """Tiny ``LlavaForConditionalGeneration`` models (see the module docstring)."""

    family = "llava"
    special_tokens = _SPECIALS
    stop_tokens = ("</s>",)
    chat_template = TEMPLATE

    def tokenizer_roles(self) -> dict[str, Any]:
        return {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                "extra_special_tokens": {"image_token": "<image>"}}

    def config_values(self, tokenizer: Any) -> dict[str, Any]:
        ids = tokenizer.convert_tokens_to_ids
        return {
            "text_config": {
                "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 4096, "pad_token_id": ids("<pad>"), "eos_token_id": ids("</s>"),
                "bos_token_id": ids("<s>"),
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 224, "patch_size": 14,
                "projection_dim": 32,
            },
            "image_token_id": ids("<image>"), "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        }

    def build_config(self, values: Mapping[str, Any]) -> Any:
        from transformers import LlavaConfig

        return LlavaConfig(**values)

    def build_model(self, config: Any) -> torch.nn.Module:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration(config)

    def save_processing(self, folder: Path, tokenizer: Any, config: Any) -> None:
        from transformers import LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        size = config.vision_config.image_size
        LlavaProcessor(
            image_processor=CLIPImageProcessorPil(size={"shortest_edge": size},
                                                  crop_size={"height": size, "width": size}),
            tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=tokenizer.chat_template, num_additional_image_tokens=1,
        ).save_pretrained(folder)


@hookimpl
def register_tiny_models(register: Any) -> None:
    """Register the ``llava`` tiny-model recipe."""
    register(LlavaTinyRecipe())
