"""LLaVA adapter family: LLaVA-1.5 and LLaVA-Med v1.5 (``LlavaForConditionalGeneration``).

Written, like a third-party adapter plugin, only with the public adapter kit
(:mod:`cxr_attrib.hf`, docs/adapter-guide.md); ``tests/test_adapter_llava.py`` proves it
imports nothing private from the core.

Image tokens: the CLIP image processor resizes the working image to the tower's square
input (336 px for LLaVA-1.5; a square image is resized, the centre crop keeps it
whole), the CLIP tower cuts it into P x P patches (P = 14: 24 x 24 at 336 px) and,
with ``vision_feature_select_strategy="default"``, the class token is dropped, so each
patch is one image token (576 = 24 x 24, row-major). The template's single ``<image>``
expands to that many ``<image>`` tokens, as ``LlavaProcessor`` does.

Pixels: ``pixel_values`` are plain (B, 3, H, W) images; they map back by reducing the
channels and resampling the model frame onto the working frame. The image features are
read after vision block ``vision_feature_layer`` (-2 for LLaVA-1.5: the last block does
not reach the answer), so :meth:`LlavaAdapter.vision_layers` lists only the blocks that
do; vision captures drop the class token, so they hold the patches row-major.

Chat template: the checkpoint's own when it renders the answer straight after the
generation prompt; otherwise (the released ``llava-hf`` templates end the generation
prompt with ``ASSISTANT:`` and add a space before the answer) the LLaVA-1.5 (Vicuna v1)
layout of :data:`~cxr_attrib_adapters.llava_tiny.TEMPLATE`, recorded in ``describe()``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch

from cxr_attrib.adapter import Adapter, Geometry, LoadOptions, ModelCard
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.grounding import BoxConvention
from cxr_attrib.hf import HFAdapter, PlainPixels, ProcessingParts, encode_conversation, expand_placeholder, grey_to_rgb
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.typing import WorkingImage

from .llava_tiny import TEMPLATE

__all__ = ["CARDS", "LLAVA_MED_FOLDER", "LlavaAdapter"]

CARDS: dict[str, tuple[str, str]] = {
    "llava_1_5_7b": ("llava-hf/llava-1.5-7b-hf", "LLaVA-1.5 7B (Vicuna 7B, CLIP ViT-L/14 at 336 px)"),
}
"""Registry key -> (Hugging Face id, summary)."""

LLAVA_MED_FOLDER = "CXR_ATTRIB_LLAVA_MED"
"""Environment variable naming the local folder of LLaVA-Med v1.5 in transformers' LLaVA
format (docs/user-guide.md says how to convert the original release)."""

LLAVA_BOXES = BoxConvention(key="bbox", order="xyxy", frame=(1.0, 1.0), integer=False, instruction=(
    "Answer with its bounding box as [x1, y1, x2, y2], coordinates normalised to 0-1."
))
"""LLaVA-1.5's grounding format: ``[x1, y1, x2, y2]`` normalised to 0-1 over the image it was given."""


class LlavaAdapter(PlainPixels, HFAdapter):
    """Adapter for ``LlavaForConditionalGeneration`` checkpoints (LLaVA-1.5, LLaVA-Med v1.5).

    ``pixel_inputs`` returns (B, 3, H, W) float32 normalised images; ``encode``'s inputs
    carry ``pixel_values``.
    """

    family = "llava"
    model_type = "llava"
    model_class_name = "LlavaForConditionalGeneration"
    end_of_turn = "</s>"
    default_layer = -2
    """Penultimate decoder layer: the deepest whose image-token states reach the predictor rows."""
    vision_prefix_tokens = 1
    """The CLIP class token leads every vision block's output; captures drop it."""

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions, parts: ProcessingParts) -> None:
        super().__init__(name, model, options, parts)
        config = model.config
        if config.vision_feature_select_strategy != "default":
            raise ModelLoadError(
                f"model {name!r} has vision_feature_select_strategy {config.vision_feature_select_strategy!r}; "
                "the llava adapter expects 'default' (class token dropped, one image token per patch)."
            )
        if not isinstance(config.vision_feature_layer, int):
            raise ModelLoadError(f"model {name!r}: vision_feature_layer {config.vision_feature_layer!r} is not one "
                                 "layer; the llava adapter expects a single feature layer.")
        vision = config.vision_config
        patches = int(vision.image_size) // int(vision.patch_size)
        crop = self.image_processor.crop_size
        model_size = (int(crop["height"]), int(crop["width"]))
        self._resize = model_size != (self.working_size, self.working_size)
        self._geometry = Geometry(
            working_size=self.working_size, model_size=model_size, patch_size=int(vision.patch_size),
            patch_grid=(patches, patches), token_grid=(patches, patches), patches_per_token=(1, 1),
            patch_order=torch.arange(patches * patches),
        )
        if not self._template_places_answer():
            self.chat_template = TEMPLATE
            self.processing_note += "; chat template: LLaVA-1.5 layout (the checkpoint's puts a space before the answer)"

    def _template_places_answer(self) -> bool:
        try:
            encode_conversation(self.tokenizer, self.chat_template, lambda text: text, "q", "a", self.added_ids,
                                name=self.name)
        except ModelLoadError:
            return False
        return True

    @property
    def geometry(self) -> Geometry:
        """Square patch grid; one image token per patch (24 x 24 for LLaVA-1.5 at 336 px)."""
        return self._geometry

    @property
    def box_convention(self) -> BoxConvention:
        """LLaVA-1.5: ``[x1, y1, x2, y2]`` normalised to 0-1."""
        return LLAVA_BOXES

    def vision_layers(self) -> list[torch.nn.Module]:
        """The CLIP blocks up to ``vision_feature_layer`` (those whose outputs reach the language model)."""
        layers = list(self.model.model.vision_tower.encoder.layers)
        feature = int(self.model.config.vision_feature_layer)
        return layers[: feature if feature >= 0 else len(layers) + 1 + feature]

    def expand_image(self, text: str) -> str:
        gh, gw = self.grid
        return expand_placeholder(text, self.image_token, self.image_token * (gh * gw), self.name)

    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """(B, 3, H, W) float32 normalised images at the CLIP tower's size."""
        out = self.image_processor(
            images=grey_to_rgb(images, self.working_size), return_tensors="pt", do_resize=self._resize,
            do_center_crop=self._resize, do_rescale=False, do_convert_rgb=False, input_data_format="channels_last",
        )
        return out["pixel_values"].to(self.device, torch.float32)

    def vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixel_values`` (b, 3, H, W) in the vision tower's dtype."""
        return {"pixel_values": pixels.to(self.device, self.model.model.vision_tower.dtype)}



def _load_llava_med(source: str, options: LoadOptions, *, name: str | None = None) -> LlavaAdapter:
    folder = os.environ.get(LLAVA_MED_FOLDER, "").strip()
    if not folder:
        raise ModelLoadError(
            f"model {name or 'llava_med'!r} is a local folder: set {LLAVA_MED_FOLDER} to the folder of LLaVA-Med "
            "v1.5 converted to transformers' LLaVA format (docs/user-guide.md, 'LLaVA-Med'), or pass the folder "
            "itself as the model."
        )
    if not os.path.isdir(folder):
        raise ModelLoadError(f"{LLAVA_MED_FOLDER}={folder!r} is not a folder; expected the converted LLaVA-Med "
                             "checkpoint folder (config.json, weights, tokenizer and processor files).")
    return LlavaAdapter.load(folder, dataclasses.replace(options, local_files_only=True), name=name)


@hookimpl
def register_adapters(register: Any) -> None:
    """Register ``llava_1_5_7b`` (Hub) and ``llava_med`` (a local folder named by ``CXR_ATTRIB_LLAVA_MED``)."""
    for card in LlavaAdapter.cards(CARDS):
        register(card)
    register(ModelCard(key="llava_med", source=f"${LLAVA_MED_FOLDER} (LLaVA-Med v1.5, LLaVA format)",
                       family=LlavaAdapter.family, summary="LLaVA-Med v1.5 7B (a local folder)",
                       load=_load_llava_med))


@hookimpl
def resolve_adapter(reference: str, options: LoadOptions) -> Adapter | None:
    """Load a folder or Hub id whose config says ``model_type: llava``."""
    return LlavaAdapter.resolve(reference, options, [source for source, _ in CARDS.values()])
