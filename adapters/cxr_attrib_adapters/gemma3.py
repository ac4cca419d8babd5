"""Gemma 3 adapter family: Gemma 3 4B / 12B and MedGemma (4B, 1.5 4B).

Image tokens: the image processor resizes the working image to the vision tower's
square input (896 px for the real checkpoints), the SigLIP tower makes a square
patch grid and the projector average-pools it to ``mm_tokens_per_image`` tokens
(256 = 16 x 16), read as a square row-major grid. The chat template marks the image
with ``<start_of_image>``; it expands to
``"\\n\\n<start_of_image>" + "<image_soft_token>" * N + "<end_of_image>\\n\\n"``
(the processor's ``full_image_sequence`` when the processor can be built).
``token_type_ids`` mark the image tokens so they attend to each other both ways,
as with the real processor.

Pixels: ``pixel_values`` are plain (B, 3, H, W) images; they map back to the
working frame by reducing the channels and resampling the model frame onto the
working frame (summing gradients, averaging activations). Vision blocks keep the
patches row-major; the projector average-pools k x k of them into one token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cxr_attrib.adapter import Adapter, Geometry, LoadOptions
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.grounding import BoxConvention
from cxr_attrib.hf import HFAdapter, PlainPixels, ProcessingParts, expand_placeholder, grey_to_rgb, square_side
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.typing import WorkingImage

__all__ = ["Gemma3Adapter", "CARDS"]

CARDS: dict[str, tuple[str, str]] = {
    "gemma3_4b": ("google/gemma-3-4b-it", "Gemma 3 4B instruction-tuned"),
    "gemma3_12b": ("google/gemma-3-12b-it", "Gemma 3 12B instruction-tuned"),
    "medgemma_4b": ("google/medgemma-4b-it", "MedGemma 4B instruction-tuned"),
    "medgemma1_5_4b": ("google/medgemma-1.5-4b-it", "MedGemma 1.5 4B instruction-tuned"),
}
"""Registry key -> (Hugging Face id, summary)."""

GEMMA_BOXES = BoxConvention(key="box_2d", order="yxyx", frame=(1000.0, 1000.0), instruction=(
    'Output it in JSON as [{"box_2d": [y1, x1, y2, x2]}] normalised to 0-1000.'
))
"""The box convention of the Gemma family. Gemma 3 has no grounding format of its own; this
one is Gemini's (y before x, normalised to 0-1000), which Gemma-family models follow when asked."""


class Gemma3Adapter(PlainPixels, HFAdapter):
    """Adapter for ``Gemma3ForConditionalGeneration`` checkpoints (incl. MedGemma).

    ``pixel_inputs`` returns (B, 3, H, W) float32 normalised images; ``encode``'s
    inputs carry ``pixel_values`` and ``token_type_ids`` (B, L) (1 at image tokens).
    """

    family = "gemma3"
    model_type = "gemma3"
    model_class_name = "Gemma3ForConditionalGeneration"
    end_of_turn = "<end_of_turn>"
    default_layer = -2
    """Penultimate decoder layer: the deepest whose image-token states reach the predictor
    rows, through the last layer (a 1,024-token sliding-window layer in the 4B checkpoints);
    see docs/methods/gradcam.md."""

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions, parts: ProcessingParts) -> None:
        super().__init__(name, model, options, parts)
        config = model.config
        side = square_side(int(config.mm_tokens_per_image), f"model {name!r}: mm_tokens_per_image")
        boi = self.tokenizer.convert_ids_to_tokens(int(config.boi_token_id))
        eoi = self.tokenizer.convert_ids_to_tokens(int(config.eoi_token_id))
        self.image_marker = boi
        self.image_sequence = getattr(self.processor, "full_image_sequence", None) or (
            f"\n\n{boi}{self.image_token * (side * side)}{eoi}\n\n"
        )
        size = self.image_processor.size
        model_size = (int(size["height"]), int(size["width"]))
        self._resize = model_size != (self.working_size, self.working_size)
        vision = config.vision_config
        patches = int(vision.image_size) // int(vision.patch_size)
        if patches % side:
            raise ModelLoadError(
                f"model {name!r}: {patches} x {patches} vision patches do not pool evenly into "
                f"{side} x {side} image tokens; expected a checkpoint whose patch grid is a multiple."
            )
        self._geometry = Geometry(
            working_size=self.working_size, model_size=model_size, patch_size=int(vision.patch_size),
            patch_grid=(patches, patches), token_grid=(side, side),
            patches_per_token=(patches // side, patches // side), patch_order=torch.arange(patches * patches),
        )

    @property
    def geometry(self) -> Geometry:
        """Square patch grid pooled to ``mm_tokens_per_image`` tokens (16 x 16 for the real models)."""
        return self._geometry

    @property
    def box_convention(self) -> BoxConvention:
        """Gemma family (documented here; Gemini's layout): ``{"box_2d": [y1, x1, y2, x2]}`` in 0-1000."""
        return GEMMA_BOXES

    def vision_layers(self) -> list[torch.nn.Module]:
        """The SigLIP encoder's layers, first to last."""
        return list(self.model.model.vision_tower.encoder.layers)

    def expand_image(self, text: str) -> str:
        return expand_placeholder(text, self.image_marker, self.image_sequence, self.name)

    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """(B, 3, H, W) float32 normalised images at the vision tower's size."""
        out = self.image_processor(
            images=grey_to_rgb(images, self.working_size), return_tensors="pt", do_resize=self._resize,
            do_rescale=False, do_convert_rgb=False, do_pan_and_scan=False, input_data_format="channels_last",
        )
        return out["pixel_values"].to(self.device, torch.float32)

    def vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixel_values`` (b, 3, H, W) and ``token_type_ids`` (b, L), 1 at image tokens."""
        dtype = self.model.model.vision_tower.dtype
        return {
            "pixel_values": pixels.to(self.device, dtype),
            "token_type_ids": (input_ids == self.image_token_id).long(),
        }



@hookimpl
def register_adapters(register: Any) -> None:
    """Register the Gemma 3 and MedGemma registry keys."""
    for card in Gemma3Adapter.cards(CARDS):
        register(card)


@hookimpl
def resolve_adapter(reference: str, options: LoadOptions) -> Adapter | None:
    """Load a folder or Hub id whose config says ``model_type: gemma3``."""
    return Gemma3Adapter.resolve(reference, options, [source for source, _ in CARDS.values()])
