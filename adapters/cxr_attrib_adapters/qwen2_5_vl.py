"""Qwen2.5-VL adapter family (Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct).

Image tokens: the image processor cuts the (resized) image into P x P patches
(P = 14), groups them in m x m merge windows (m = 2) and the vision tower merges each
window into one language token, so a working image of side S (a multiple of
P * m = 28, e.g. 224) gives an (S/P) x (S/P) patch grid and an
(S/(P*m)) x (S/(P*m)) token grid read from ``image_grid_thw`` and ``merge_size``
(224 -> 16 x 16 patches -> 8 x 8 tokens). ``min_pixels`` / ``max_pixels`` are
bounded (defaults 56*56 and 1024*28*28) so no image explodes into thousands of tokens.

Pixel packing: ``pixel_values`` are flattened patches, one row of C * T * P * P
values (channel, temporal copy, patch row, patch column) per patch, rows stored
merge window by merge window: for each merged token (row-major) its m x m patches
consecutively. :meth:`QwenVLAdapter.pixel_values` packs exactly that in torch and
``to_working(..., "pixel", ...)`` undoes it, so left and right halves never interleave (see docs/user-guide.md).

Vision-encoder order: the tower regroups the merge windows into attention windows
(``window_size`` pixels) before its blocks and restores the order after the merger,
so block outputs follow :attr:`~cxr_attrib.adapter.Geometry.patch_order`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cxr_attrib.adapter import Adapter, Geometry, LoadOptions, Reduction
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.grounding import BoxConvention
from cxr_attrib.hf import HFAdapter, ProcessingParts, expand_placeholder, grey_to_rgb
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.typing import WorkingImage

__all__ = ["CARDS", "DEFAULT_MAX_PIXELS", "DEFAULT_MIN_PIXELS", "QwenVLAdapter", "token_grid"]

DEFAULT_MIN_PIXELS = 56 * 56
"""Lower bound on resized image pixels (the processor's own default)."""
DEFAULT_MAX_PIXELS = 1024 * 28 * 28
"""Upper bound on resized image pixels (at most 1024 image tokens)."""

CARDS: dict[str, tuple[str, str]] = {
    "qwen2_5_vl_3b": ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL 3B Instruct"),
    "qwen2_5_vl_7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL 7B Instruct"),
}
"""Registry key -> (Hugging Face id, summary)."""


def token_grid(grid_thw: Sequence[int] | torch.Tensor, merge_size: int) -> tuple[int, int]:
    """The language-token grid of one image from its ``image_grid_thw`` row.

    Merged tokens come out of the vision tower row-major over
    (t * h / merge_size, w / merge_size); images have t = 1.

    Args:
        grid_thw: ``(t, h, w)`` patch counts of one image (``image_grid_thw[i]``).
        merge_size (int): the processor's ``merge_size`` (2 for Qwen2.5-VL).

    Returns:
        tuple[int, int]: (gh, gw) rows and columns of image tokens.

    Examples::

        >>> token_grid((1, 16, 22), 2)
        (8, 11)
    """
    t, h, w = (int(v) for v in grid_thw)
    if h % merge_size or w % merge_size:
        raise ValueError(f"patch grid {h}x{w} is not divisible by merge_size {merge_size}.")
    return t * h // merge_size, w // merge_size

QWEN_BOX_INSTRUCTION = "Output its bbox coordinates in JSON format."
"""Qwen2.5-VL's grounding request: absolute pixel coordinates of the image it was given (its
resized input), which is the format it was trained to answer in."""


class QwenVLAdapter(HFAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints.

    ``pixel_inputs`` / ``pixel_values`` return (B, N, C*T*P*P) float32 patches (N =
    patches per image, merge-window storage order);
    ``encode``'s inputs carry ``pixel_values`` (B*N, C*T*P*P), ``image_grid_thw``
    (B, 3) and ``mm_token_type_ids`` (B, L), so ``self.model(**inputs)`` uses the
    3-D (M-RoPE) positions of the real processor.
    """

    family = "qwen2_5_vl"
    model_type = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    end_of_turn = "<|im_end|>"
    default_layer = -2
    """Penultimate decoder layer: the deepest whose image-token states reach the predictor
    rows (through the last layer's causal attention); see docs/methods/gradcam.md."""

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions, parts: ProcessingParts) -> None:
        super().__init__(name, model, options, parts)
        processor = self.image_processor
        self.patch_size = int(processor.patch_size)
        self.merge_size = int(processor.merge_size)
        self.temporal_patch_size = int(processor.temporal_patch_size)
        self._size = {
            "shortest_edge": options.min_pixels or DEFAULT_MIN_PIXELS,
            "longest_edge": options.max_pixels or DEFAULT_MAX_PIXELS,
        }
        if self._size["shortest_edge"] > self._size["longest_edge"]:
            raise ModelLoadError(
                f"min_pixels {self._size['shortest_edge']} exceeds max_pixels {self._size['longest_edge']}; "
                "pass LoadOptions with min_pixels <= max_pixels."
            )
        self._resize = True
        probe = self._process([np.zeros((self.working_size, self.working_size), np.float32)])
        t, h, w = (int(v) for v in probe["image_grid_thw"][0])
        if t != 1:
            raise ModelLoadError(f"model {name!r}: an image gave {t} temporal patches; expected 1.")
        self.patch_grid = (h, w)
        model_size = (h * self.patch_size, w * self.patch_size)
        self._resize = model_size != (self.working_size, self.working_size)
        self._geometry = Geometry(
            working_size=self.working_size, model_size=model_size, patch_size=self.patch_size,
            patch_grid=(h, w), token_grid=token_grid((t, h, w), self.merge_size),
            patches_per_token=(self.merge_size, self.merge_size), patch_order=self._block_order(h, w),
        )

    def _block_order(self, h: int, w: int) -> torch.Tensor:
        """Row-major patch index of each position of the vision blocks' sequence."""
        from transformers.vision_utils import get_vision_window_index

        vision = self.model.config.vision_config
        windows, _ = get_vision_window_index(
            torch.tensor([[1, h, w]]), spatial_merge_size=self.merge_size,
            window_size=int(vision.window_size), patch_size=self.patch_size,
        )
        m = self.merge_size
        unit = windows.repeat_interleave(m * m)  # merged token of each position
        within = torch.arange(m * m).repeat(windows.numel())  # patch inside its merge window
        rows = (unit // (w // m)) * m + within // m
        cols = (unit % (w // m)) * m + within % m
        return rows * w + cols

    def _process(self, images: Sequence[WorkingImage]) -> Any:
        return self.image_processor(
            images=grey_to_rgb(images, self.working_size), return_tensors="pt", size=self._size,
            do_resize=self._resize, do_rescale=False, do_convert_rgb=False, input_data_format="channels_last",
        )

    @property
    def geometry(self) -> Geometry:
        """Patch grid from ``image_grid_thw``; tokens = 2 x 2 merge windows (8 x 8 at 224 px)."""
        return self._geometry

    @property
    def box_convention(self) -> BoxConvention:
        """Qwen2.5-VL grounding: ``{"bbox_2d": [x1, y1, x2, y2]}`` in pixels of its resized input."""
        height, width = self._geometry.model_size
        return BoxConvention(
            key="bbox_2d", order="xyxy", frame=(float(width), float(height)), instruction=QWEN_BOX_INSTRUCTION
        )

    def vision_layers(self) -> list[torch.nn.Module]:
        """The vision tower's blocks (window and full attention), first to last."""
        return list(self.model.model.visual.blocks)

    def expand_image(self, text: str) -> str:
        gh, gw = self.grid
        return expand_placeholder(text, self.image_token, self.image_token * (gh * gw), self.name)

    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """(B, N, C*T*P*P) float32 processed patches, in the processor's storage order."""
        out = self._process(images)
        pixels = out["pixel_values"]
        return pixels.view(len(images), -1, pixels.shape[-1]).to(self.device, torch.float32)

    def vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixel_values`` (b*N, C*T*P*P), ``image_grid_thw`` (b, 3), ``mm_token_type_ids`` (b, L)."""
        batch = pixels.shape[0]
        dtype = self.model.model.visual.dtype
        grid = torch.tensor([[1, *self.patch_grid]], dtype=torch.long, device=self.device).expand(batch, -1)
        return {
            "pixel_values": pixels.reshape(-1, pixels.shape[-1]).to(self.device, dtype),
            "image_grid_thw": grid.contiguous(),
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
        }

    def pack(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C*T*P*P): patches of each merge window consecutively."""
        batch, channels = rgb.shape[:2]
        (h, w), m, p, t = self.patch_grid, self.merge_size, self.patch_size, self.temporal_patch_size
        patches = rgb.reshape(batch, channels, h // m, m, p, w // m, m, p)
        # (B, token row, token col, win row, win col, C, pr, pc), then T copies of each patch
        patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)[:, :, :, :, :, :, None]
        patches = patches.expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
        return patches.reshape(batch, h * w, channels * t * p * p)

    def unpack(self, values: torch.Tensor, reduce: Reduction) -> torch.Tensor:
        """(B, N, C*T*P*P) -> (B, H, W): merge-window order undone, channels and copies reduced."""
        (h, w), m, p, t = self.patch_grid, self.merge_size, self.patch_size, self.temporal_patch_size
        batch = values.shape[0]
        if values.shape[1:] != (h * w, 3 * t * p * p):
            raise ValueError(f"pixel-space values must be (B, {h * w}, {3 * t * p * p}), got {tuple(values.shape)}")
        patches = values.reshape(batch, h // m, w // m, m, m, 3 * t, p, p)
        # (B, token row, token col, win row, win col, C*T, pr, pc) -> (B, C*T, H, W)
        space = patches.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(batch, 3 * t, h * p, w * p)
        return space.sum(dim=1) if reduce == "sum" else space.mean(dim=1)


@hookimpl
def register_adapters(register: Any) -> None:
    """Register the Qwen2.5-VL registry keys."""
    for card in QwenVLAdapter.cards(CARDS):
        register(card)


@hookimpl
def resolve_adapter(reference: str, options: LoadOptions) -> Adapter | None:
    """Load a folder or Hub id whose config says ``model_type: qwen2_5_vl``."""
    return QwenVLAdapter.resolve(reference, options, [source for source, _ in CARDS.values()])
