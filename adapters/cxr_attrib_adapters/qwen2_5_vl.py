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
consecutively. :meth:`QwenVLAdapter.pixels_to_working` undoes exactly that, so left
and right halves never interleave (see docs/user-guide.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cxr_attrib.adapter import Adapter, LoadOptions
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.typing import WorkingImage

from ._hf_base import HFAdapter, area_resize, grey_to_rgb
from ._loading import ProcessingParts

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


class QwenVLAdapter(HFAdapter):
    """Adapter for ``Qwen2_5_VLForConditionalGeneration`` checkpoints.

    ``pixel_inputs`` returns (B, N, C*T*P*P) float32 patches (N = patches per image);
    ``encode``'s inputs carry ``pixel_values`` (B*N, C*T*P*P), ``image_grid_thw``
    (B, 3) and ``mm_token_type_ids`` (B, L), so ``self.model(**inputs)`` uses the
    3-D (M-RoPE) positions of the real processor.
    """

    family = "qwen2_5_vl"
    model_type = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    end_of_turn = "<|im_end|>"

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
        self._grid = token_grid((t, h, w), self.merge_size)
        self._resize = (h * self.patch_size, w * self.patch_size) != (self.working_size, self.working_size)

    def _process(self, images: Sequence[WorkingImage]) -> Any:
        return self.image_processor(
            images=grey_to_rgb(images, self.working_size), return_tensors="pt", size=self._size,
            do_resize=self._resize, do_rescale=False, do_convert_rgb=False, input_data_format="channels_last",
        )

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) = patch grid / merge size, e.g. (8, 8) at 224 px."""
        return self._grid

    def _expand_image(self, text: str) -> str:
        if text.count(self.image_token) != 1:
            raise ModelLoadError(
                f"model {self.name!r}: the rendered prompt holds {text.count(self.image_token)} "
                f"{self.image_token!r} placeholders; expected exactly one image."
            )
        gh, gw = self.grid
        return text.replace(self.image_token, self.image_token * (gh * gw))

    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """(B, N, C*T*P*P) float32 processed patches, in the processor's storage order."""
        out = self._process(images)
        pixels = out["pixel_values"]
        return pixels.view(len(images), -1, pixels.shape[-1]).to(self.device, torch.float32)

    def _vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = pixels.shape[0]
        dtype = self.model.model.visual.dtype
        grid = torch.tensor([[1, *self.patch_grid]], dtype=torch.long, device=self.device).expand(batch, -1)
        return {
            "pixel_values": pixels.reshape(-1, pixels.shape[-1]).to(self.device, dtype),
            "image_grid_thw": grid.contiguous(),
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
        }

    def pixels_to_working(self, attribution: torch.Tensor) -> torch.Tensor:
        """Undo the merge-window storage order: (B, N, C*T*P*P) -> (B, S, S) float32.

        Channels and the temporal copies are summed; if the processor resized the
        working image, the (H, W) map is area-resized back to S.
        """
        h, w = self.patch_grid
        m, p, t = self.merge_size, self.patch_size, self.temporal_patch_size
        batch = attribution.shape[0]
        patches = attribution.reshape(batch, h // m, w // m, m, m, -1, t, p, p)
        # (B, token row, token col, win row, win col, C, T, pr, pc) -> (B, C, T, H, W)
        space = patches.permute(0, 5, 6, 1, 3, 7, 2, 4, 8).reshape(batch, -1, t, h * p, w * p)
        return area_resize(space.sum(dim=(1, 2)), self.working_size)


@hookimpl
def register_adapters(register: Any) -> None:
    """Register the Qwen2.5-VL registry keys."""
    for card in QwenVLAdapter.cards(CARDS):
        register(card)


@hookimpl
def resolve_adapter(reference: str, options: LoadOptions) -> Adapter | None:
    """Load a folder or Hub id whose config says ``model_type: qwen2_5_vl``."""
    return QwenVLAdapter.resolve(reference, options, [source for source, _ in CARDS.values()])
