"""Procedural frontal chest X-ray phantoms with exact anatomical masks (see docs/phantom.md).

A phantom is drawn from a seed: random anatomy (:class:`Anatomy`) is rendered into a
density image, blurred, then passed through an imaging chain (gain, bias, noise).
Every structure is an analytic shape in *anatomy coordinates* (fractions of the image
side, origin at the image centre, x to the image's right, y down, before the random
shift, rotation and scale), so the 11 concept masks are exact.

Radiological convention: the patient's left is the image's right. ``side`` index 0 is
the patient's right (image left, ``sign = -1``), index 1 the patient's left
(image right, ``sign = +1``); ``xs = sign * x`` points laterally on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cxr_attrib.typing import GreyImage, WorkingImage

from ._draw import BoolArray, FloatArray, tight_box
from ._geometry import (
    COMPOSITES,
    CONCEPTS,
    MIN_SIZE,
    SIDES,
    Anatomy,
    PhantomParameterError,
    Thorax,
    check_seed_size,
    enlarged_heart,
    sample_anatomy,
)
from ._render import imaging_noise, render_density

__all__ = [
    "CONCEPTS",
    "COMPOSITES",
    "SIDES",
    "MIN_SIZE",
    "Anatomy",
    "Phantom",
    "PhantomParameterError",
    "RenderLayers",
    "Thorax",
    "cardiothoracic_ratio",
    "enlarged_heart",
    "generate_phantom",
    "imaging_noise",
    "render_phantom",
    "sample_anatomy",
]


def cardiothoracic_ratio(masks: Mapping[str, np.ndarray]) -> float:
    """Cardiothoracic ratio measured on masks: heart width over thoracic width.

    Args:
        masks (Mapping[str, np.ndarray]): ``(H, W)`` bool masks with at least
            ``cardiac_silhouette``, ``left_lung`` and ``right_lung``.

    Returns:
        float: widest horizontal extent of the heart divided by the horizontal extent
        of the lungs and heart together (image columns). Normal phantoms measure about
        0.41-0.49, cardiomegaly cases 0.6-0.7.

    Examples::

        >>> names = ("cardiac_silhouette", "left_lung", "right_lung")
        >>> masks = {n: np.zeros((4, 10), bool) for n in names}
        >>> masks["right_lung"][:, 0:4] = True
        >>> masks["left_lung"][:, 6:10] = True
        >>> masks["cardiac_silhouette"][2:, 3:7] = True
        >>> cardiothoracic_ratio(masks)
        0.4
    """
    heart = tight_box(masks["cardiac_silhouette"])
    thorax = tight_box(masks["left_lung"] | masks["right_lung"] | masks["cardiac_silhouette"])
    return float((heart[2] - heart[0]) / max(thorax[2] - thorax[0], 1.0))


@dataclass(frozen=True, eq=False)
class RenderLayers:
    """What findings need to draw into a phantom consistently.

    Attributes:
        clean (np.ndarray): ``(H, W)`` float32 blurred density before the imaging chain.
        noise (np.ndarray): ``(H, W)`` float32 noise added by the imaging chain.
        vessels (np.ndarray): ``(H, W)`` float32 unblurred lung-vessel density.
        lung_fields (np.ndarray): ``(2, H, W)`` bool lungs (right, left) including
            the parts behind the heart.
        blur_sigma (float): the global blur's standard deviation, pixels.
    """

    clean: FloatArray
    noise: FloatArray
    vessels: FloatArray
    lung_fields: BoolArray
    blur_sigma: float


@dataclass(frozen=True, eq=False)
class Phantom:
    """One rendered normal phantom and its exact concept masks.

    Attributes:
        seed (int): the seed it was drawn from.
        size (int): image side ``S`` in pixels.
        image (np.ndarray): ``(S, S)`` float32 grey image in [0, 1] (the working frame).
        masks (dict[str, np.ndarray]): concept name -> ``(S, S)`` bool mask, for every
            name in :data:`CONCEPTS`.
        anatomy (Anatomy): the random parameters.
        layers (RenderLayers): render internals used to draw findings.
    """

    seed: int
    size: int
    image: WorkingImage
    masks: dict[str, BoolArray]
    anatomy: Anatomy = field(repr=False)
    layers: RenderLayers = field(repr=False)

    def to_uint8(self) -> GreyImage:
        """The image as ``(S, S)`` uint8, ``round(255 * image)``."""
        return np.round(self.image * 255.0).astype(np.uint8)

    def mask(self, name: str) -> BoolArray:
        """``(S, S)`` bool mask of a concept or a composite (union of its pair)."""
        if name in COMPOSITES:
            return np.logical_or.reduce([self.masks[part] for part in COMPOSITES[name]])
        if name not in self.masks:
            raise PhantomParameterError(
                f"unknown concept {name!r}; expected one of {', '.join(CONCEPTS + tuple(COMPOSITES))}."
            )
        return self.masks[name]

    @property
    def thorax(self) -> Thorax:
        """The analytic geometry on this phantom's grid."""
        return Thorax(self.anatomy, self.size)

    def compose(
        self,
        clean: FloatArray,
        *,
        noise: FloatArray | None = None,
        gain: float | None = None,
        bias: float | None = None,
    ) -> WorkingImage:
        """Pass a (possibly edited) clean density through this phantom's imaging chain.

        Args:
            clean (np.ndarray): ``(S, S)`` float32 density, e.g. ``layers.clean`` plus a finding.
            noise (np.ndarray | None, optional): ``(S, S)`` noise. Default: the phantom's own.
            gain (float | None, optional): contrast. Default: the anatomy's.
            bias (float | None, optional): brightness offset. Default: the anatomy's.

        Returns:
            np.ndarray: ``(S, S)`` float32 image in [0, 1];
            ``compose(layers.clean)`` equals ``image`` exactly.
        """
        an = self.anatomy
        return _compose(
            clean,
            self.layers.noise if noise is None else noise,
            an.gain if gain is None else gain,
            an.bias if bias is None else bias,
        )


def _compose(clean: FloatArray, noise: FloatArray, gain: float, bias: float) -> WorkingImage:
    out = np.float32(gain) * (clean - np.float32(0.5)) + np.float32(0.5 + bias) + noise
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def render_phantom(anatomy: Anatomy, size: int = 224) -> Phantom:
    """Render an anatomy into a phantom (image, masks, render layers).

    Args:
        anatomy (Anatomy): e.g. from :func:`sample_anatomy`, possibly edited with
            :func:`dataclasses.replace` (``heart_scale`` for cardiomegaly).
        size (int, optional): image side ``S`` in pixels. Default: ``224``.

    Returns:
        Phantom: the ``(S, S)`` image and its masks. The noise depends only on the
        seed, ``size`` and ``noise_sigma``, so two anatomies that differ only in
        ``heart_scale`` give images that differ only near the heart.

    Raises:
        PhantomParameterError: size below :data:`MIN_SIZE`.
    """
    seed, size = check_seed_size(anatomy.seed, size)
    clean, masks, vessels, fields = render_density(anatomy, size)
    noise = imaging_noise(seed, size, anatomy.noise_sigma)
    layers = RenderLayers(clean, noise, vessels, fields, anatomy.blur_px * size / 224.0)
    image = _compose(clean, noise, anatomy.gain, anatomy.bias)
    return Phantom(seed, size, image, masks, anatomy, layers)


def generate_phantom(seed: int, size: int = 224) -> Phantom:
    """A normal frontal chest X-ray phantom, deterministic in ``seed``.

    Args:
        seed (int): non-negative; equal seeds give identical arrays.
        size (int, optional): image side ``S`` in pixels (224 for Qwen, 896 for
            Gemma). Default: ``224``.

    Returns:
        Phantom: ``image`` ``(S, S)`` float32 in [0, 1] and exact masks for every
        name in :data:`CONCEPTS`.

    Raises:
        PhantomParameterError: negative seed or size below :data:`MIN_SIZE`.

    Examples::

        >>> p = generate_phantom(0)
        >>> p.image.shape, p.image.dtype.name, sorted(p.masks) == sorted(CONCEPTS)
        ((224, 224), 'float32', True)
    """
    check_seed_size(seed, size)
    return render_phantom(sample_anatomy(seed), size)


