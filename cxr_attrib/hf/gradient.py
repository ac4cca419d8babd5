"""The :class:`~cxr_attrib.adapter.GradientSurface` of a Hugging Face chat-template VLM.

* **The differentiable pixel path** (:meth:`HFGradientSurface.pixel_values`): the
  grey working image is resized in torch with the processor's filter when the model
  frame differs from the working frame, repeated to RGB and normalised with the
  processor's mean and std; the family then packs it (:meth:`HFGradientSurface.pack`).
* **One forward** (:meth:`HFGradientSurface.forward`) from the images to the float32
  target log-probs, following the three rules of :mod:`cxr_attrib.hf.passes`: the
  graph starts at the images, captures lie on the gradient path, and every backward
  pass that reaches the log-probs is counted.
* **Back to the working frame** (:meth:`HFGradientSurface.to_working`): pixel values
  are unpacked by the family (:meth:`HFGradientSurface.unpack`), patch values put
  back in row-major order, token values laid on the grid, then summed or averaged
  onto working-frame pixels (:func:`cxr_attrib.frames.cells_to_working`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from ..adapter import ForwardResult, GradientSurface, PassCounter, Query, Reduction, Space
from ..frames import cells_to_working
from .passes import capture_layers, count_backward, start_graph
from .pixels import RESAMPLE_MODES, check_working_batch

__all__ = ["HFGradientSurface"]


class HFGradientSurface(GradientSurface):
    """Pixels, captures, gradients and the way back, for a ``*ForConditionalGeneration`` model.

    Used beside :class:`cxr_attrib.hf.scorer.HFScorer` (it reads ``layout`` and
    ``target_logprobs``); a family supplies :attr:`geometry`, :meth:`pack`,
    :meth:`unpack` and :meth:`vision_layers`.
    """

    model: torch.nn.Module
    image_processor: object
    counter: PassCounter
    working_size: int
    vision_prefix_tokens: ClassVar[int] = 0
    """Leading positions of every vision block's output that are not patches (a class token)."""

    @abstractmethod
    def pack(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised model-frame images -> the family's pixel layout (B, ...)."""

    @abstractmethod
    def unpack(self, values: torch.Tensor, reduce: Reduction) -> torch.Tensor:
        """Pixel-layout values (B, ...) -> (B, H, W) model-frame map, channels reduced by ``reduce``."""

    @property
    def supports_gradients(self) -> bool:
        """True when every weight is a float tensor (quantised weights carry no gradient)."""
        return all(p.dtype.is_floating_point for p in self.model.parameters())

    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The language model's decoder layers, first to last."""
        return list(self.model.model.language_model.layers)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.GradientSurface.pixel_values`.

        Resizing (only when the model frame differs from the working frame) uses
        torch's antialiased filter of the processor's kind. The processor rounds to 8
        bits before PIL resizes and clips the result to [0, 255], so the two then agree
        to about one grey level on smooth images (measured: bilinear 112 -> 224, at most
        one level; bicubic 100 -> 112, 1.4 levels on a ramp, more on pixel noise where
        PIL clips the filter's overshoot).
        """
        check_working_batch(images, self.working_size)
        processor = self.image_processor
        grey = images.to(self.device, torch.float32)[:, None]
        height, width = self.geometry.model_size
        if (height, width) != (self.working_size, self.working_size):
            mode = RESAMPLE_MODES.get(int(getattr(processor, "resample", 3)), "bicubic")
            grey = torch.nn.functional.interpolate(
                grey, size=(height, width), mode=mode, antialias=True, align_corners=False
            )
        mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=grey.device)[None, :, None, None]
        std = torch.tensor(processor.image_std, dtype=torch.float32, device=grey.device)[None, :, None, None]
        return self.pack((grey.expand(-1, 3, -1, -1) - mean) / std)

    def forward(
        self,
        images: torch.Tensor,
        query: Query,
        *,
        hidden: Sequence[int] = (),
        vision: Sequence[int] = (),
        grad: bool = False,
    ) -> ForwardResult:
        """See :meth:`cxr_attrib.adapter.GradientSurface.forward`."""
        layout = self.layout(query)
        batch = int(images.shape[0])
        with (
            capture_layers(self.decoder_layers(), hidden, batch=batch, grad=grad, kind="decoder layers") as kept,
            capture_layers(self.vision_layers(), vision, batch=batch, grad=grad, what="vision",
                           kind="vision blocks", skip=self.vision_prefix_tokens) as blocks,
            torch.set_grad_enabled(grad or torch.is_grad_enabled()),
        ):
            logprobs = self.target_logprobs(layout, self.pixel_values(start_graph(images, grad)))
        count_backward(logprobs, self.counter)
        return ForwardResult(
            logprobs=logprobs, hidden=kept, vision=blocks,
            image_positions=layout.image_positions, predictor_positions=layout.target_positions - 1,
        )

    def to_working(self, values: torch.Tensor, space: Space, reduce: Reduction) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.GradientSurface.to_working`."""
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        geometry = self.geometry
        batch = values.shape[0]
        if space == "pixel":
            cells = self.unpack(values, reduce)
        elif space == "patch":
            (ph, pw) = geometry.patch_grid
            if values.shape[1:] != (ph * pw,):
                raise ValueError(f"patch-space values must be (B, {ph * pw}), got {tuple(values.shape)}")
            inverse = torch.argsort(geometry.patch_order.to(values.device))
            cells = values[:, inverse].reshape(batch, ph, pw)
        elif space == "token":
            gh, gw = geometry.token_grid
            if values.shape[1:] != (gh * gw,):
                raise ValueError(f"token-space values must be (B, {gh * gw}), got {tuple(values.shape)}")
            cells = values.reshape(batch, gh, gw)
        else:
            raise ValueError(f"space must be 'pixel', 'patch' or 'token', got {space!r}")
        return cells_to_working(cells, self.working_size, reduce)
