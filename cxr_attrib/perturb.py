"""Baseline images that perturbation methods and the scorer fill regions with."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import DataError, check_choice
from .typing import WorkingImage

__all__ = ["baseline_image", "check_fill", "FILLS"]

FILLS = ("zero", "mean", "blur")


def check_fill(fill: object) -> str | float:
    """``fill`` when :func:`baseline_image` accepts it (a name of :data:`FILLS` or a number in [0, 1]).

    Raises:
        DataError: an unknown name or a number outside [0, 1] (a ValueError too).
    """
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        if not 0.0 <= float(fill) <= 1.0:
            raise DataError(f"fill value must be in [0, 1], got {fill}")
        return float(fill)
    return check_choice(fill, FILLS, what="fill", argument="fill")


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
        DataError: an unknown fill name or a number outside [0, 1] (a ValueError too).
    """
    fill = check_fill(fill)
    if isinstance(fill, float):
        return np.full_like(image, fill, dtype=np.float32)
    if fill == "zero":
        return np.zeros_like(image, dtype=np.float32)
    if fill == "mean":
        return np.full_like(image, float(image.mean()), dtype=np.float32)
    return ndimage.gaussian_filter(image.astype(np.float32), sigma=blur_sigma, mode="nearest")
