"""Random anatomy of a phantom and its analytic geometry (shapes, coordinates).

All lengths are in *anatomy coordinates*: fractions of the image side, origin at the
image centre, x to the image's right, y down, before the random shift, rotation and
scale. ``side`` index 0 is the patient's right (image left, ``sign = -1``), index 1
the patient's left (image right, ``sign = +1``); ``xs = sign * x`` points laterally.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from cxr_attrib.errors import CxrAttribError
from cxr_attrib.pools import COMPOSITES, CONCEPTS

from ._draw import BoolArray, FloatArray, ellipse_half_width, ellipse_value, smoothstep

SIDES: tuple[str, str] = ("right", "left")
"""Patient sides by index; index 0 (right) is drawn on the image's left."""

MIN_SIZE = 64
"""Smallest supported image side in pixels (thin structures vanish below it)."""

_SIGN = (-1.0, 1.0)
_HEART_ELLIPSES = ((0.0, 0.0, 1.0, 0.66), (-0.6, -0.2, 0.45, 0.75))  # cx, cy, a, b
_HEART_ANCHOR = (-0.35, -0.4)  # template point the heart grows from (inside both ellipses)
_CP_RADIUS = 0.075


class PhantomParameterError(CxrAttribError, ValueError):
    """A phantom argument (seed, size, concept name, option) that cannot be used."""


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


def check_seed_size(seed: object, size: object) -> tuple[int, int]:
    """Validate a phantom seed (int >= 0) and image side (int >= :data:`MIN_SIZE`); returns both."""
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
    seed, _ = check_seed_size(seed, MIN_SIZE)
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
        shift=(u(-0.015, 0.015), u(-0.025, 0.025)),
        angle=u(-1.0, 1.0) * np.deg2rad(5.0),
        scale=u(0.92, 1.04),
        body_half_width=u(0.42, 0.50),
        shoulder_y=u(-0.46, -0.42),
        thorax_half_width=(tw + u(-0.01, 0.01), tw + u(-0.01, 0.01)),
        apex_y=(apex + u(-0.01, 0.01), apex + u(-0.01, 0.01)),
        dome_y=(dome_left - u(0.015, 0.035), dome_left),
        dome_curvature=u(1.6, 2.4),
        mediastinum_half_width=mediastinum,
        ctr=u(0.42, 0.48),
        heart_left_fraction=u(0.26, 0.32),
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
        curvature = np.where(xs > peak, an.dome_curvature, 0.35 * an.dome_curvature)
        return an.dome_y[side] + curvature * (xs - peak) ** 2

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


def enlarged_heart(anatomy: Anatomy, factor: float) -> Anatomy:
    """The same anatomy with the heart scaled by ``factor`` about its base."""
    return replace(anatomy, heart_scale=float(factor))

