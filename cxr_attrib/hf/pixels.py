"""Working-frame images on their way into a processor, checked first.

An adapter receives (S, S) float32 grey images in the working frame; anything else
(another size, a colour image, an input-frame image) is refused with a one-line
error before any model pass, never silently resized (the boxes would then be in
the wrong frame). :func:`grey_to_rgb` does that for the processor path (numpy) and
:func:`check_working_batch` for the differentiable path (torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..adapter import Geometry, Reduction
from ..errors import ModelLoadError
from ..typing import WorkingImage

__all__ = ["RESAMPLE_MODES", "PlainPixels", "check_working_batch", "grey_to_rgb", "square_side"]

RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}
"""PIL resample codes of the image processors -> torch interpolation modes."""


def grey_to_rgb(images: Sequence[WorkingImage], size: int) -> list[np.ndarray]:
    """Check working-frame images and repeat them to three channels.

    Args:
        images: B arrays (S, S) float32 in [0, 1].
        size (int): the expected side S.

    Returns:
        list[np.ndarray]: B new arrays (S, S, 3) float32 (inputs are not modified).

    Raises:
        ValueError: an image is not (S, S).

    Examples::

        >>> grey_to_rgb([np.zeros((4, 4), np.float32)], 4)[0].shape
        (4, 4, 3)
    """
    out = []
    for index, image in enumerate(images):
        array = np.asarray(image, dtype=np.float32)
        if array.shape != (size, size):
            raise ValueError(
                f"image {index} has shape {array.shape}; expected the working frame ({size}, {size}) "
                "float32 in [0, 1] (use cxr_attrib.frames.ResizePad to make it)."
            )
        out.append(np.repeat(array[:, :, None], 3, axis=2))
    return out


def check_working_batch(images: torch.Tensor, size: int) -> None:
    """Raise ValueError unless ``images`` is a (B, S, S) batch of working-frame images."""
    if images.ndim != 3 or tuple(images.shape[1:]) != (size, size):
        raise ValueError(
            f"expected (B, {size}, {size}) working-frame images, got {tuple(images.shape)}; "
            "use cxr_attrib.frames.ResizePad to make them."
        )


def square_side(count: int, what: str) -> int:
    """Side of a square grid of ``count`` cells (raises ModelLoadError when not a square)."""
    side = math.isqrt(count)
    if side * side != count:
        raise ModelLoadError(f"{what} is {count}, not a square number; expected a square image-token grid.")
    return side


class PlainPixels:
    """``pack`` / ``unpack`` of models whose ``pixel_values`` are plain (B, 3, H, W) model-frame images.

    Put it before :class:`cxr_attrib.hf.HFAdapter` in a family's bases.
    """

    geometry: Geometry

    def pack(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images are the pixel layout already."""
        return rgb.contiguous()

    def unpack(self, values: torch.Tensor, reduce: Reduction) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W), channels summed (``"sum"``) or averaged (``"mean"``)."""
        if values.ndim != 4 or values.shape[1:] != (3, *self.geometry.model_size):
            raise ValueError(f"pixel-space values must be (B, 3, {self.geometry.model_size}), got {tuple(values.shape)}")
        return values.sum(dim=1) if reduce == "sum" else values.mean(dim=1)
