"""Procedural frontal chest X-ray phantoms with exact anatomical masks (SPEC 8.3, 6).

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
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from cxr_attrib.errors import CxrAttribError
from cxr_attrib.typing import GreyImage, WorkingImage

from ._draw import BoolArray, FloatArray, draw_segments, ellipse_half_width, ellipse_value
from ._draw import smoothstep, tight_box

__all__ = [
    "CONCEPTS",
    "COMPOSITES",
    "SIDES",
    "MIN_SIZE",
    "Anatomy",
    "Phantom",
    "PhantomParameterError",
    "Thorax",
    "cardiothoracic_ratio",
    "enlarged_heart",
    "generate_phantom",
    "imaging_noise",
    "render_phantom",
    "sample_anatomy",
]

CONCEPTS: tuple[str, ...] = (
    "cardiac_silhouette",
    "left_lung",
    "right_lung",
    "mediastinum",
    "upper_mediastinum",
    "left_clavicle",
    "right_clavicle",
    "left_hilar",
    "right_hilar",
    "left_costophrenic_angle",
    "right_costophrenic_angle",
)
"""The 11 anatomical concepts of MedFocus (SPEC 6.2), in the paper's order."""

COMPOSITES: dict[str, tuple[str, ...]] = {
    "bilateral_lungs": ("left_lung", "right_lung"),
    "bilateral_clavicles": ("left_clavicle", "right_clavicle"),
    "bilateral_hilar": ("left_hilar", "right_hilar"),
    "bilateral_costophrenic": ("left_costophrenic_angle", "right_costophrenic_angle"),
}
"""Composite concepts: the union of a left/right pair."""

SIDES: tuple[str, str] = ("right", "left")
"""Patient sides by index; index 0 (right) is drawn on the image's left."""

MIN_SIZE = 64
"""Smallest supported image side in pixels (thin structures vanish below it)."""

_SIGN = (-1.0, 1.0)
_HEART_ELLIPSES = ((0.0, 0.0, 1.0, 0.8), (-0.58, -0.22, 0.45, 0.8))  # cx, cy, a, b
_HEART_ANCHOR = (-0.35, -0.4)  # template point the heart grows from (inside both ellipses)
_CP_RADIUS = 0.075


class PhantomParameterError(CxrAttribError, ValueError):
    """A phantom argument (seed, size, finding) that cannot be used."""


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Random parameters of one phantom; all lengths in anatomy coordinates.

    Per-side tuples are ``(right, left)`` (patient sides). Intensities are densities
    in [0, 1] before the imaging chain. ``vessels`` is ``(K, 6)``: ``x0, y0, x1, y1,
    half_width, amplitude`` of the pulmonary vessel segments. ``heart_scale`` > 1
    enlarges the heart about its base (cardiomegaly); everything else is unchanged.
    """

    seed: int
    shift: tuple[float, float]
    angle: float
    scale: float
    body_half_width: float
    shoulder_y: float
    thorax_half_width: tuple[float, float]
    apex_y: tuple[float, float]
    dome_y: tuple[float, float]
    dome_curvature: float
    mediastinum_half_width: float
    ctr: float
    heart_left_fraction: float
    heart_drop: float
    heart_tilt: float
    hilum_y: tuple[float, float]
    clavicle_y: float
    clavicle_rise: float
    clavicle_thickness: float
    rib_spacing: float
    rib_offset: float
    rib_contrast: float
    soft_tissue: float
    lung_air: float
    mediastinum_level: float
    heart_level: float
    abdomen_level: float
    bone: float
    gastric_bubble: bool
    gain: float
    bias: float
    noise_sigma: float
    blur_px: float
    vessels: np.ndarray = field(repr=False)
    heart_scale: float = 1.0


def _check_seed_size(seed: object, size: object) -> tuple[int, int]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomParameterError(
            f"expected the phantom seed as a non-negative int, got {seed!r}; pass e.g. seed=0."
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise PhantomParameterError(
            f"expected the image side as an int >= {MIN_SIZE} pixels, got {size!r};"
            " pass e.g. size=224 (Qwen) or size=896 (Gemma)."
        )
    return int(seed), int(size)


def _vessel_tree(rng: np.random.Generator, sign: float, root: tuple[float, float]) -> list[list[float]]:
    segments: list[list[float]] = []
    stack = []
    count = int(rng.integers(4, 6))
    for theta in np.linspace(-1.3, 1.1, count) + rng.uniform(-0.15, 0.15, count):
        start_y = root[1] + 0.05 * float(theta) / 1.3 + rng.uniform(-0.01, 0.01)
        stack.append((root[0], start_y, float(theta), rng.uniform(0.05, 0.07), 0.008, 0.1, 0))
    while stack:
        x0, y0, theta, length, half, amp, depth = stack.pop()
        x1 = x0 + sign * length * np.cos(theta)
        y1 = y0 + length * np.sin(theta)
        segments.append([x0, y0, x1, y1, half, amp])
        if depth < 3:
            for turn in (-1.0, 1.0):
                child = theta + turn * rng.uniform(0.2, 0.5)
                shrink = rng.uniform(0.7, 0.9)
                stack.append((x1, y1, child, length * shrink, half * 0.75, amp * 0.8, depth + 1))
    return segments


def sample_anatomy(seed: int) -> Anatomy:
    """Draw the random anatomy and imaging parameters of phantom ``seed``.

    Args:
        seed (int): non-negative; the same seed always gives the same anatomy.

    Returns:
        Anatomy: the parameters (independent of the image size).

    Raises:
        PhantomParameterError: negative or non-int seed.
    """
    seed, _ = _check_seed_size(seed, MIN_SIZE)
    rng = np.random.default_rng([seed, 0])
    u = rng.uniform
    tw, apex, dome_left = u(0.33, 0.37), u(-0.41, -0.37), u(0.19, 0.24)
    mediastinum = u(0.06, 0.075)
    hilum_right = u(-0.06, -0.02)
    hilum_y = (hilum_right, hilum_right - u(0.01, 0.03))
    vessels: list[list[float]] = []
    for i, sign in enumerate(_SIGN):
        vessels += _vessel_tree(rng, sign, (sign * (mediastinum + 0.03), hilum_y[i]))
    return Anatomy(
        seed=seed,
        shift=(u(-0.02, 0.02), u(-0.025, 0.025)),
        angle=u(-1.0, 1.0) * np.deg2rad(5.0),
        scale=u(0.92, 1.04),
        body_half_width=u(0.42, 0.50),
        shoulder_y=u(-0.46, -0.42),
        thorax_half_width=(tw + u(-0.01, 0.01), tw + u(-0.01, 0.01)),
        apex_y=(apex + u(-0.01, 0.01), apex + u(-0.01, 0.01)),
        dome_y=(dome_left - u(0.015, 0.035), dome_left),
        dome_curvature=u(1.6, 2.4),
        mediastinum_half_width=mediastinum,
        ctr=u(0.41, 0.48),
        heart_left_fraction=u(0.3, 0.36),
        heart_drop=u(0.05, 0.07),
        heart_tilt=u(0.55, 0.75),
        hilum_y=hilum_y,
        clavicle_y=apex + u(0.09, 0.13),
        clavicle_rise=u(0.06, 0.09),
        clavicle_thickness=u(0.03, 0.038),
        rib_spacing=u(0.055, 0.065),
        rib_offset=u(0.0, 0.02),
        rib_contrast=u(0.03, 0.05),
        soft_tissue=u(0.48, 0.56),
        lung_air=u(0.30, 0.38),
        mediastinum_level=u(0.70, 0.78),
        heart_level=u(0.74, 0.82),
        abdomen_level=u(0.68, 0.76),
        bone=u(0.16, 0.22),
        gastric_bubble=bool(rng.random() < 0.6),
        gain=u(0.9, 1.1),
        bias=u(-0.04, 0.04),
        noise_sigma=u(0.012, 0.025),
        blur_px=u(0.6, 1.1),
        vessels=np.asarray(vessels, dtype=np.float64),
    )


class Thorax:
    """The anatomy's analytic geometry evaluated on one image grid.

    Args:
        anatomy (Anatomy): the parameters.
        size (int): image side ``S`` in pixels.

    Attributes:
        x, y (np.ndarray): ``(S, S)`` float32 anatomy coordinates of the pixel centres.
        px_per_unit (float): pixels per anatomy unit (``S * scale``).
    """

    def __init__(self, anatomy: Anatomy, size: int) -> None:
        self.anatomy = anatomy
        self.size = size
        self.px_per_unit = float(size * anatomy.scale)
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        gx = centres[None, :] - np.float32(anatomy.shift[0])
        gy = centres[:, None] - np.float32(anatomy.shift[1])
        c, s = np.float32(np.cos(anatomy.angle)), np.float32(np.sin(anatomy.angle))
        k = np.float32(anatomy.scale)
        self.x = (c * gx + s * gy) / k
        self.y = (-s * gx + c * gy) / k

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map anatomy coordinates to pixel coordinates ``(col, row)``."""
        an = self.anatomy
        c, s = np.cos(an.angle), np.sin(an.angle)
        gx = an.shift[0] + an.scale * (c * x - s * y)
        gy = an.shift[1] + an.scale * (s * x + c * y)
        return self.size * (gx + 0.5) - 0.5, self.size * (gy + 0.5) - 0.5

    def lateral(self, side: int) -> FloatArray:
        """``(S, S)`` lateral coordinate ``xs = sign * x`` of ``side`` (0 right, 1 left)."""
        return self.x * np.float32(_SIGN[side])

    def medial_border(self, y: FloatArray) -> FloatArray:
        """Half-width of the mediastinum (the lungs' medial border) at height ``y``."""
        an = self.anatomy
        return an.mediastinum_half_width * (0.7 + 0.4 * smoothstep((y - min(an.apex_y)) / 0.45))

    def dome(self, side: int, xs: FloatArray) -> FloatArray:
        """Height of the hemidiaphragm of ``side`` at lateral coordinate ``xs``."""
        an = self.anatomy
        peak = 0.45 * an.thorax_half_width[side]
        return an.dome_y[side] + an.dome_curvature * (xs - peak) ** 2

    def diaphragm(self) -> FloatArray:
        """``(S, S)`` height of the diaphragm under every pixel (each side's own dome)."""
        right = self.dome(0, self.lateral(0))
        left = self.dome(1, self.lateral(1))
        return np.where(self.x < 0, right, left)

    def lung_ellipse(self, side: int) -> tuple[float, float, float, float]:
        """``(xc, yc, a, b)`` of the ellipse bounding the lung's lateral wall and apex (xs, y)."""
        an = self.anatomy
        tw = an.thorax_half_width[side]
        xc = 0.35 * tw
        base = an.dome_y[side] + an.dome_curvature * (0.55 * tw) ** 2
        yc = base - 0.05
        return xc, yc, tw - xc, yc - an.apex_y[side]

    def lung_field(self, side: int) -> BoolArray:
        """``(S, S)`` bool: the lung of ``side`` including the part hidden by the heart."""
        xs = self.lateral(side)
        xc, yc, a, b = self.lung_ellipse(side)
        inside = ellipse_value(xs, self.y, xc, yc, a, b) < 1.0
        return inside & (xs > self.medial_border(self.y)) & (self.y < self.dome(side, xs))

    def wall_distance(self, side: int) -> FloatArray:
        """``(S, S)`` approximate distance in pixels from the lung's lateral wall/apex, inward > 0."""
        xs = self.lateral(side)
        xc, yc, a, b = self.lung_ellipse(side)
        root = np.sqrt(ellipse_value(xs, self.y, xc, yc, a, b))
        gx, gy = (xs - xc) / (a * a), (self.y - yc) / (b * b)
        grad = np.sqrt(gx * gx + gy * gy) / np.maximum(root, 1e-6)
        return (1.0 - root) / np.maximum(grad, 1e-6) * np.float32(self.px_per_unit)

    def heart(self) -> BoolArray:
        """``(S, S)`` bool cardiac silhouette (enlarged when ``heart_scale`` > 1)."""
        an = self.anatomy
        (c1x, c1y, a1, b1), (c2x, c2y, a2, b2) = _HEART_ELLIPSES
        half1 = ellipse_half_width(a1, b1, an.heart_tilt)
        left_t, right_t = min(c1x - half1, c2x - a2), max(c1x + half1, c2x + a2)
        width = an.ctr * sum(an.thorax_half_width)
        unit = width / (right_t - left_t)
        x0 = -an.heart_left_fraction * width - left_t * unit
        y0 = an.dome_y[1] - an.heart_drop
        ax, ay = _HEART_ANCHOR
        tx = ax + ((self.x - x0) / unit - ax) / an.heart_scale
        ty = ay + ((self.y - y0) / unit - ay) / an.heart_scale
        shape = ellipse_value(tx, ty, c1x, c1y, a1, b1, an.heart_tilt) < 1.0
        shape |= ellipse_value(tx, ty, c2x, c2y, a2, b2) < 1.0
        return shape & (self.y < self.diaphragm() + 0.01)

    def carina_y(self) -> float:
        """Height of the tracheal bifurcation (the upper mediastinum's lower limit)."""
        return float(np.mean(self.anatomy.hilum_y)) - 0.05

    def aortic_knob(self) -> BoolArray:
        """``(S, S)`` bool aortic knob, bulging into the left lung (image right)."""
        an = self.anatomy
        ky = an.hilum_y[1] - 0.085
        kx = an.mediastinum_half_width * 0.75 + 0.01
        return ellipse_value(self.x, self.y, kx, ky, 0.035, 0.032) < 1.0


def cardiothoracic_ratio(masks: Mapping[str, np.ndarray]) -> float:
    """Cardiothoracic ratio measured on masks: heart width over thoracic width.

    Args:
        masks (Mapping[str, np.ndarray]): ``(H, W)`` bool masks with at least
            ``cardiac_silhouette``, ``left_lung`` and ``right_lung``.

    Returns:
        float: widest horizontal extent of the heart divided by the horizontal extent
        of both lungs together (image columns). Normal phantoms lie near 0.41-0.48,
        cardiomegaly above 0.55.
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
        self, clean: FloatArray, *, noise: FloatArray | None = None, gain: float | None = None,
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


def imaging_noise(seed: int, size: int, sigma: float, stream: int = 1) -> FloatArray:
    """Slightly correlated Gaussian film noise of one phantom.

    Args:
        seed (int): the phantom's seed.
        size (int): image side ``S`` in pixels.
        sigma (float): standard deviation, intensity units.
        stream (int, optional): realisation index; 1 is the phantom's own noise,
            other values give independent realisations (used by edits). Default: ``1``.

    Returns:
        np.ndarray: ``(S, S)`` float32 noise with standard deviation ``sigma``.
    """
    rng = np.random.default_rng([seed, stream, size])
    white = rng.standard_normal((size, size), dtype=np.float32)
    grain = gaussian_filter(white, 0.6 * size / 224.0, mode="reflect", truncate=3.0)
    return grain * np.float32(sigma / max(float(grain.std()), 1e-6))


def _mottle(seed: int, size: int) -> FloatArray:
    coarse = np.random.default_rng([seed, 2]).standard_normal((14, 14)).astype(np.float32)
    return np.float32(0.02) * zoom(coarse, size / 14.0, order=1, mode="nearest", grid_mode=True)[:size, :size]


def _ribs(th: Thorax, side: int, field: FloatArray) -> FloatArray:
    an = th.anatomy
    xs, y = th.lateral(side), th.y
    spacing = an.rib_spacing
    out = np.zeros_like(y)
    for curve, slope, amp, width, start, count in (
        ((1.8, -0.45), None, an.rib_contrast, 0.36, an.apex_y[side] + an.rib_offset, 10),
        ((0.4, -0.55), None, 0.5 * an.rib_contrast, 0.3, an.apex_y[side] + 0.12, 6),
    ):
        g = curve[0] * xs * xs + curve[1] * xs
        dg = 2.0 * curve[0] * xs + curve[1]
        phase = (y - g - start) / spacing
        index = np.floor(phase)
        dist = np.abs(phase - index - 0.5) * spacing / np.sqrt(1.0 + dg * dg)
        half = width * spacing
        band = np.sqrt(np.clip(1.0 - (dist / half) ** 2, 0.0, None))
        band *= (index >= 0) & (index < count)
        out += np.float32(amp) * band
    return out * field * smoothstep((xs - th.medial_border(y)) / 0.04)


def _render(anatomy: Anatomy, size: int) -> tuple[FloatArray, dict[str, BoolArray], FloatArray, BoolArray]:
    an, th = anatomy, Thorax(anatomy, size)
    x, y = th.x, th.y
    ax = np.abs(x)
    bw = an.body_half_width
    torso = (ax < bw) & (y > an.shoulder_y + 0.2 * (ax / bw) ** 2.5)
    neck = ax < 0.085 + 0.12 * smoothstep((y - an.shoulder_y + 0.08) / 0.1)
    body = torso | neck
    thickness = np.sqrt(np.clip(1.0 - (x / bw) ** 2, 0.0, None))
    density = np.where(body, an.soft_tissue * (0.55 + 0.45 * thickness), 0.04).astype(np.float32)

    fields = np.stack([th.lung_field(0), th.lung_field(1)])
    diaphragm = th.diaphragm()
    vessel_px = np.zeros_like(density)
    segs = an.vessels.copy()
    segs[:, 0], segs[:, 1] = th.to_pixels(an.vessels[:, 0], an.vessels[:, 1])
    segs[:, 2], segs[:, 3] = th.to_pixels(an.vessels[:, 2], an.vessels[:, 3])
    segs[:, 4] *= th.px_per_unit
    draw_segments(vessel_px, segs)
    vessels = vessel_px * fields.any(axis=0)
    for side in (0, 1):
        xc, yc, a, b = th.lung_ellipse(side)
        depth = np.sqrt(np.clip(1.0 - ellipse_value(th.lateral(side), y, xc, yc, a, b), 0.0, 1.0))
        lower = 1.0 - 0.3 * smoothstep((y - (an.dome_y[side] - 0.12)) / 0.15)
        density -= fields[side] * (an.lung_air * (0.4 + 0.6 * depth) * lower)
        cage = smoothstep((1.0 - ellipse_value(th.lateral(side), y, xc, yc, a + 0.03, b + 0.03)) / 0.15)
        density += _ribs(th, side, cage * (y < diaphragm + 0.03))
    density += vessels + _mottle(an.seed, size) * fields.any(axis=0)

    medial = th.medial_border(y)
    top = min(an.apex_y) - 0.02
    mediastinum = (x > -medial) & (x < medial) & (y > top) & (y < diaphragm)
    knob = th.aortic_knob()
    mediastinum |= knob
    level = an.mediastinum_level * (0.92 + 0.08 * smoothstep((y - top) / 0.4))
    density = np.where(mediastinum, level, density)
    above = (ax < medial) & (y <= top) & body
    fade = smoothstep((y - top + 0.12) / 0.12)
    density = np.where(above, density + (level - density) * fade, density)
    abdomen = body & (y >= diaphragm)
    density = np.where(abdomen, an.abdomen_level * (0.85 + 0.15 * thickness), density)
    if an.gastric_bubble:
        bx = 0.45 * an.thorax_half_width[1]
        by = an.dome_y[1] + 0.055
        bubble = ellipse_value(x, y, bx, by, 0.05, 0.028) < 1.0
        density -= np.float32(0.22) * (bubble & abdomen)
    heart = th.heart()
    density = np.where(heart, np.float32(an.heart_level), density)

    for side, sign in enumerate(_SIGN):
        hx = sign * (th.medial_border(np.float32(an.hilum_y[side])) + 0.03)
        blob = np.clip(1.0 - ellipse_value(x, y, hx, an.hilum_y[side], 0.035, 0.06), 0.0, None)
        density += np.float32(0.14) * np.sqrt(blob) * ~heart
    spine = np.sqrt(np.clip(1.0 - (x / 0.04) ** 2, 0.0, None))
    density += (0.035 + 0.012 * np.cos(2.0 * np.pi * (y / 0.048))) * spine * body

    carina = th.carina_y()
    airway = [[0.0, an.shoulder_y - 0.1, 0.0, carina, 0.02, -0.14]]
    for sign in _SIGN:
        airway.append([0.0, carina, sign * 0.065, carina + 0.055, 0.012, -0.08])
    airway_px = np.asarray(airway)
    airway_px[:, 0], airway_px[:, 1] = th.to_pixels(airway_px[:, 0], airway_px[:, 1])
    airway_px[:, 2], airway_px[:, 3] = th.to_pixels(airway_px[:, 2], airway_px[:, 3])
    airway_px[:, 4] *= th.px_per_unit
    draw_segments(density, airway_px)

    clavicles = []
    for side in (0, 1):
        xs = th.lateral(side)
        inner, outer = 0.03, an.thorax_half_width[side] + 0.02
        t = (xs - inner) / (outer - inner)
        centre = an.clavicle_y - an.clavicle_rise * t - 0.015 * np.sin(np.pi * t)
        slope = (-an.clavicle_rise - 0.015 * np.pi * np.cos(np.pi * t)) / (outer - inner)
        dist = np.abs(y - centre) / np.sqrt(1.0 + slope * slope)
        half = an.clavicle_thickness / 2.0
        bone = (dist < half) & (t >= 0.0) & (t <= 1.0) & body
        density += np.float32(an.bone) * np.sqrt(np.clip(1.0 - (dist / half) ** 2, 0.0, None)) * bone
        clavicles.append(bone)

    masks = _concept_masks(th, fields, heart, knob, mediastinum, clavicles)
    sigma = an.blur_px * size / 224.0
    clean = gaussian_filter(density, sigma, mode="nearest", truncate=3.0)
    return clean, masks, vessels, fields


def _concept_masks(
    th: Thorax, fields: BoolArray, heart: BoolArray, knob: BoolArray, mediastinum: BoolArray,
    clavicles: list[BoolArray],
) -> dict[str, BoolArray]:
    an, x, y = th.anatomy, th.x, th.y
    masks: dict[str, BoolArray] = {"cardiac_silhouette": heart}
    for side, name in enumerate(SIDES):
        lung = fields[side] & ~heart & ~knob
        masks[f"{name}_lung"] = lung
        masks[f"{name}_clavicle"] = clavicles[side]
        sign = _SIGN[side]
        hx = sign * (th.medial_border(np.float32(an.hilum_y[side])) + 0.035)
        masks[f"{name}_hilar"] = ellipse_value(x, y, hx, an.hilum_y[side], 0.05, 0.075) < 1.0
        xs = th.lateral(side)
        reach = np.where(fields[side], y + 0.6 * xs, -np.inf)
        corner = np.unravel_index(int(np.argmax(reach)), reach.shape)
        cx, cy = x[corner], y[corner]
        near = (x - cx) ** 2 + (y - cy) ** 2 < _CP_RADIUS**2
        masks[f"{name}_costophrenic_angle"] = lung & near
    masks["mediastinum"] = mediastinum
    masks["upper_mediastinum"] = mediastinum & (y < th.carina_y())
    return {name: masks[name] for name in CONCEPTS}


def render_phantom(anatomy: Anatomy, size: int = 224) -> Phantom:
    """Render an anatomy into a phantom (image, masks, render layers).

    Args:
        anatomy (Anatomy): e.g. from :func:`sample_anatomy`, possibly edited with
            :func:`dataclasses.replace` (``heart_scale`` for cardiomegaly).
        size (int, optional): image side ``S`` in pixels. Default: ``224``.

    Returns:
        Phantom: the ``(S, S)`` image and its masks; the noise depends only on
        ``anatomy.seed`` and ``size``, so two anatomies of one seed differ only where
        their densities differ.

    Raises:
        PhantomParameterError: size below :data:`MIN_SIZE`.
    """
    seed, size = _check_seed_size(anatomy.seed, size)
    clean, masks, vessels, fields = _render(anatomy, size)
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
    _check_seed_size(seed, size)
    return render_phantom(sample_anatomy(seed), size)


def enlarged_heart(anatomy: Anatomy, factor: float) -> Anatomy:
    """The same anatomy with the heart scaled by ``factor`` about its base."""
    return replace(anatomy, heart_scale=float(factor))
