"""Baseline images that perturbation methods and the scorer fill regions with."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from .errors import DataError, check_choice
from .method import Param
from .typing import WorkingImage

__all__ = ["baseline_image", "check_fill", "check_removal_fill", "FILLS", "REMOVAL_FILLS", "pixel_remover"]

FILLS = ("zero", "mean", "blur")
"""Fills that are one baseline image (any method that replaces a region accepts them)."""

REMOVAL_FILLS = (*FILLS, "noisy_linear")
"""Fills of :func:`pixel_remover` (the scorer): the baselines and ROAD's noisy linear
imputation, which depends on the removed set (:mod:`cxr_attrib.imputation`)."""


FILL = Param(float, low=0.0, high=1.0, also=FILLS, doc="what replaces a hidden region: a name or a grey level in [0, 1]")
"""The declaration of a method's ``fill`` parameter (:func:`check_fill` accepts the same values)."""


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


def check_removal_fill(fill: object) -> str | float:
    """``fill`` when :func:`pixel_remover` accepts it (a name of :data:`REMOVAL_FILLS` or a number in [0, 1]).

    Raises:
        DataError: an unknown name or a number outside [0, 1] (a ValueError too).
    """
    if fill == "noisy_linear":
        return "noisy_linear"
    if isinstance(fill, str) and fill not in FILLS:
        return check_choice(fill, REMOVAL_FILLS, what="fill", argument="fill")
    return check_fill(fill)


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


def pixel_remover(
    image: WorkingImage,
    fill: str | float = "zero",
    *,
    seed: int = 0,
    valid: npt.NDArray[np.bool_] | None = None,
    noise: float = 0.01,
) -> Callable[[npt.NDArray[np.bool_]], WorkingImage]:
    """A function that removes a set of pixels from ``image`` by filling them.

    Args:
        image: (S, S) float32 working-frame image in [0, 1].
        fill: a fill of :func:`baseline_image` (the removed pixels take the baseline's
            values) or ``"noisy_linear"`` (each call imputes the removed pixels from
            the kept ones, :func:`~cxr_attrib.imputation.noisy_linear_impute`).
            Default: "zero".
        seed: seed of the imputation noise; successive calls draw successive noise
            from one seeded stream. Default: 0.
        valid: (S, S) bool image content; ``noisy_linear`` neither uses nor fills
            pixels outside it. Default: None (all).
        noise: noise standard deviation of ``noisy_linear`` (image units). Default: 0.01.

    Returns:
        ``remove(mask)``: (S, S) bool mask of the removed pixels -> a new (S, S) float32
        image, ``image`` outside the mask.

    Raises:
        DataError: an unknown fill (before any image is built).

    >>> remove = pixel_remover(np.ones((2, 2), dtype=np.float32))
    >>> remove(np.array([[True, False], [False, False]])).tolist()
    [[0.0, 1.0], [1.0, 1.0]]
    """
    fill = check_removal_fill(fill)
    if fill == "noisy_linear":
        from .imputation import noisy_linear_impute

        rng = np.random.default_rng([seed, 2])

        def impute(mask: npt.NDArray[np.bool_]) -> WorkingImage:
            return noisy_linear_impute(image, mask, valid=valid, noise=noise, rng=rng)

        return impute
    baseline = baseline_image(image, fill)

    def remove(mask: npt.NDArray[np.bool_]) -> WorkingImage:
        return np.where(mask, baseline, image).astype(np.float32, copy=False)

    return remove
