"""Rendering of a phantom's density image, concept masks and film noise."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from ._draw import BoolArray, FloatArray, draw_segments, ellipse_value, smoothstep
from ._geometry import _CP_RADIUS, _SIGN, CONCEPTS, SIDES, Anatomy, Thorax


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
    """``(S, S)`` smooth parenchymal texture of amplitude ~0.02 (a coarse random grid, upsampled)."""
    coarse = np.random.default_rng([seed, 2]).standard_normal((14, 14)).astype(np.float32)
    return np.float32(0.02) * zoom(coarse, size / 14.0, order=1, mode="nearest", grid_mode=True)[:size, :size]


def _ribs(th: Thorax, side: int, field: FloatArray) -> FloatArray:
    """Posterior (arching) and fainter anterior (descending) ribs of one side, times ``field``."""
    an = th.anatomy
    xs, y = th.lateral(side), th.y
    spacing = an.rib_spacing
    out = np.zeros_like(y)
    for curve, amp, width, start, count in (
        ((1.8, -0.45), an.rib_contrast, 0.36, an.apex_y[side] + an.rib_offset, 10),
        ((0.4, -0.55), 0.5 * an.rib_contrast, 0.3, an.apex_y[side] + 0.12, 6),
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


def _segments_to_pixels(th: Thorax, segments: np.ndarray) -> np.ndarray:
    """``(K, 6)`` segments from anatomy coordinates/units to pixels (amplitudes unchanged)."""
    out = np.array(segments, dtype=np.float64)
    out[:, 0], out[:, 1] = th.to_pixels(out[:, 0], out[:, 1])
    out[:, 2], out[:, 3] = th.to_pixels(out[:, 2], out[:, 3])
    out[:, 4] *= th.px_per_unit
    return out


def _body(th: Thorax) -> tuple[BoolArray, FloatArray, FloatArray]:
    """Body mask, relative soft-tissue thickness and the starting density (soft tissue on air)."""
    an, x, y = th.anatomy, th.x, th.y
    ax, bw = np.abs(x), an.body_half_width
    wall = bw * (0.9 + 0.1 * smoothstep((y - an.shoulder_y) / 0.5))
    torso = (ax < wall) & (y > an.shoulder_y + 0.2 * (ax / bw) ** 2.5)
    neck = ax < 0.085 + 0.12 * smoothstep((y - an.shoulder_y + 0.08) / 0.1)
    body = torso | neck
    thickness = np.sqrt(np.clip(1.0 - (x / bw) ** 2, 0.0, None))
    density = np.where(body, an.soft_tissue * (0.55 + 0.45 * thickness), 0.04).astype(np.float32)
    return body, thickness, density


def _lungs(th: Thorax, density: FloatArray, fields: BoolArray) -> FloatArray:
    """Darken the lungs, add ribs, parenchymal mottle and vessels; returns the vessel layer."""
    an, y = th.anatomy, th.y
    diaphragm = th.diaphragm()
    for side in (0, 1):
        xs = th.lateral(side)
        xc, yc, a, b = th.lung_ellipse(side)
        depth = np.sqrt(np.clip(1.0 - ellipse_value(xs, y, xc, yc, a, b), 0.0, 1.0))
        lower = 1.0 - 0.3 * smoothstep((y - (an.dome_y[side] - 0.12)) / 0.15)
        density -= fields[side] * (an.lung_air * (0.4 + 0.6 * depth) * lower)
        cage = smoothstep((1.0 - ellipse_value(xs, y, xc, yc, a + 0.03, b + 0.03)) / 0.15)
        density += _ribs(th, side, cage * (y < diaphragm + 0.03))
    lungs = fields.any(axis=0)
    vessels = np.zeros_like(density)
    draw_segments(vessels, _segments_to_pixels(th, an.vessels))
    vessels *= lungs
    density += vessels + _mottle(an.seed, th.size) * lungs
    return vessels


def _centre(
    th: Thorax, density: FloatArray, body: BoolArray, thickness: FloatArray
) -> tuple[FloatArray, BoolArray, BoolArray, BoolArray]:
    """Mediastinum, abdomen, heart, hila and spine; returns density, mediastinum, knob, heart."""
    an, x, y = th.anatomy, th.x, th.y
    medial, diaphragm = th.medial_border(y), th.diaphragm()
    top = min(an.apex_y) - 0.02
    knob = th.aortic_knob()
    mediastinum = ((np.abs(x) < medial) & (y > top) & (y < diaphragm)) | knob
    level = an.mediastinum_level * (0.92 + 0.08 * smoothstep((y - top) / 0.4))
    density = np.where(mediastinum, level, density)
    above = (np.abs(x) < medial) & (y <= top) & body
    density = np.where(above, density + (level - density) * smoothstep((y - top + 0.12) / 0.12), density)
    abdomen = body & (y >= diaphragm)
    density = np.where(abdomen, an.abdomen_level * (0.85 + 0.15 * thickness), density)
    if an.gastric_bubble:
        bubble = ellipse_value(x, y, 0.45 * an.thorax_half_width[1], an.dome_y[1] + 0.055, 0.05, 0.028)
        density -= np.float32(0.22) * ((bubble < 1.0) & abdomen)
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
    airway += [[0.0, carina, sign * 0.065, carina + 0.055, 0.012, -0.08] for sign in _SIGN]
    draw_segments(density, _segments_to_pixels(th, np.asarray(airway)))
    return density, mediastinum, knob, heart


def _clavicles(th: Thorax, density: FloatArray, body: BoolArray) -> list[BoolArray]:
    """Add both clavicles (S-curved bony bands) to ``density``; returns their masks (right, left)."""
    an, y = th.anatomy, th.y
    masks = []
    for side in (0, 1):
        inner, outer = 0.03, an.thorax_half_width[side] + 0.02
        t = (th.lateral(side) - inner) / (outer - inner)
        centre = an.clavicle_y - an.clavicle_rise * t - 0.015 * np.sin(np.pi * t)
        slope = (-an.clavicle_rise - 0.015 * np.pi * np.cos(np.pi * t)) / (outer - inner)
        dist = np.abs(y - centre) / np.sqrt(1.0 + slope * slope)
        half = an.clavicle_thickness / 2.0
        bone = (dist < half) & (t >= 0.0) & (t <= 1.0) & body
        density += np.float32(an.bone) * np.sqrt(np.clip(1.0 - (dist / half) ** 2, 0.0, None)) * bone
        masks.append(bone)
    return masks


def render_density(
    anatomy: Anatomy, size: int
) -> tuple[FloatArray, dict[str, BoolArray], FloatArray, BoolArray]:
    """Draw the anatomy's density, blur it and compute the exact concept masks.

    Args:
        anatomy (Anatomy): the parameters.
        size (int): image side ``S`` in pixels.

    Returns:
        tuple: ``clean`` ``(S, S)`` float32 blurred density; ``masks`` concept name ->
        ``(S, S)`` bool; ``vessels`` ``(S, S)`` float32 unblurred lung-vessel density;
        ``fields`` ``(2, S, S)`` bool lungs (right, left) including the parts behind
        the heart.
    """
    th = Thorax(anatomy, size)
    body, thickness, density = _body(th)
    fields = np.stack([th.lung_field(0), th.lung_field(1)])
    vessels = _lungs(th, density, fields)
    density, mediastinum, knob, heart = _centre(th, density, body, thickness)
    clavicles = _clavicles(th, density, body)
    masks = _concept_masks(th, fields, heart, knob, mediastinum, clavicles)
    clean = gaussian_filter(density, anatomy.blur_px * size / 224.0, mode="nearest", truncate=3.0)
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
