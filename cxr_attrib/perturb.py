"""Baseline images that perturbation methods and the scorer fill regions with."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .typing import WorkingImage

__all__ = ["baseline_image", "FILLS"]

FILLS = ("zero", "mean", "blur")


def baseline_image(image: WorkingImage, fill: str | float = "zero", *, blur_sigma: float = 8.0) -> WorkingImage:
    """The image a perturbed region is replaced with.

    Args:
        image: (S, S) float32 working-frame image in [0, 1].
        fill: ``"zero"`` (black), ``"mean"`` (the image's mean grey), ``"blur"``
            (a Gaussian blur of the image) or a number in [0, 1]. Default: "zero".
        blur_sigma: Gaussian sigma in working-frame pixels for ``"blur"``. Default: 8.

    Returns:
        (S, S) float32 baseline.

    Raises:
        ValueError: an unknown fill name or a number outside [0, 1].
    """
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        if not 0.0 <= float(fill) <= 1.0:
            raise ValueError(f"fill value must be in [0, 1], got {fill}")
        return np.full_like(image, float(fill), dtype=np.float32)
    if fill == "zero":
        return np.zeros_like(image, dtype=np.float32)
    if fill == "mean":
        return np.full_like(image, float(image.mean()), dtype=np.float32)
    if fill == "blur":
        return ndimage.gaussian_filter(image.astype(np.float32), sigma=blur_sigma, mode="nearest")
    raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS} or a number in [0, 1]")
