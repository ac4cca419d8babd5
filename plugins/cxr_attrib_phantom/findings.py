"""Findings drawn into phantoms, with exact boxes and exact counterfactuals (see docs/benchmark-protocol.md, docs/phantom.md).

A finding is an edit of the phantom's clean density (or, for cardiomegaly, of its
anatomy) confined to a bounded neighbourhood. After the imaging chain, pixels that
moved by less than :data:`VISIBLE_STEP` are set back to the normal image, so the
finding's drawn pixels are exactly where the case differs from the normal phantom,
and its ground-truth box is their tight box. Hence:

- ``removed`` (the same phantom without the finding) equals the normal phantom and
  differs from ``image`` only inside the box;
- ``kept`` and ``kept_normal`` (stand-ins for RadEdit's "No {finding}" and
  "No abnormality" edits outside the region) differ from ``image`` only outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from cxr_attrib.errors import UnknownNameError
from cxr_attrib.typing import BoxArray, GreyImage, WorkingImage

from ._draw import BoolArray, FloatArray, ellipse_value, smoothstep, tight_box
from .anatomy import (
    SIDES,
    Phantom,
    Thorax,
    cardiothoracic_ratio,
    enlarged_heart,
    generate_phantom,
    imaging_noise,
    render_phantom,
)

__all__ = [
    "FINDINGS",
    "DISPLAY_NAMES",
    "VISIBLE_STEP",
    "Case",
    "UnknownFindingError",
    "make_case",
]

FINDINGS: tuple[str, ...] = (
    "nodule",
    "mass",
    "pleural_effusion",
    "consolidation",
    "pneumothorax",
    "cardiomegaly",
)
"""Finding names, in a fixed order (the order seeds the per-finding random streams)."""

DISPLAY_NAMES: dict[str, str] = {
    "nodule": "nodule",
    "mass": "mass",
    "pleural_effusion": "pleural effusion",
    "consolidation": "consolidation",
    "pneumothorax": "pneumothorax",
    "cardiomegaly": "cardiomegaly",
}
"""Finding name -> how it reads in a question ("Is there evidence of {name} ...")."""

VISIBLE_STEP = 1.0 / 255.0
"""Smallest intensity change that counts as drawn; smaller changes are discarded."""

_EDIT_RAMP_PX = 6.0  # at 224 px: outside edits fade in over this distance from the box


class UnknownFindingError(UnknownNameError):
    """A finding name that the phantom suite cannot draw."""

    kind = "finding"


@dataclass(frozen=True, eq=False)
class Case:
    """A phantom with (at most) one finding, its ground truth and counterfactuals.

    Attributes:
        seed (int): phantom seed (anatomy, noise and finding placement).
        size (int): image side ``S`` in pixels.
        finding (str | None): a name in :data:`FINDINGS`, or None for a normal case.
        region (str | None): the concept the finding is bound to (e.g. ``"left_lung"``,
            ``"right_costophrenic_angle"``, ``"cardiac_silhouette"``).
        image (np.ndarray): ``(S, S)`` float32 in [0, 1], the case image.
        boxes (np.ndarray): ``(N, 4)`` float64 ground-truth boxes ``x1, y1, x2, y2``,
            pixels, exclusive ends; ``N = 1`` with a finding, 0 without.
        finding_mask (np.ndarray): ``(S, S)`` bool, the pixels the finding changed.
        masks (dict[str, np.ndarray]): concept masks of *this* image (the enlarged
            heart for cardiomegaly).
        removed (np.ndarray | None): ``(S, S)`` the same phantom without the finding
            (equals ``phantom.image``); differs from ``image`` only inside the box.
        kept (np.ndarray | None): ``(S, S)`` an edit outside the box that keeps the
            finding (fresh noise realisation), like RadEdit's "No {finding}" edit.
        kept_normal (np.ndarray | None): ``(S, S)`` a second edit outside the box
            (fresh noise and a contrast/brightness change), like "No abnormality".
        details (dict[str, float | str]): JSON-safe facts about the finding
            (``side``, sizes in pixels, cardiothoracic ratio, ...).
        phantom (Phantom): the normal phantom of the same seed.
    """

    seed: int
    size: int
    finding: str | None
    region: str | None
    image: WorkingImage
    boxes: BoxArray
    finding_mask: BoolArray
    masks: dict[str, BoolArray]
    removed: WorkingImage | None
    kept: WorkingImage | None
    kept_normal: WorkingImage | None
    details: dict[str, float | str]
    phantom: Phantom = field(repr=False)

    @property
    def display_name(self) -> str | None:
        """The finding as it reads in a question, e.g. ``"pleural effusion"``."""
        return None if self.finding is None else DISPLAY_NAMES[self.finding]

    def to_uint8(self) -> GreyImage:
        """The case image as ``(S, S)`` uint8, ``round(255 * image)``."""
        return np.round(self.image * 255.0).astype(np.uint8)


_Drawn = tuple[FloatArray, dict[str, BoolArray], str, dict[str, float | str]]
"""What a drawer returns: the case's clean density, its masks, region and details."""


def _soft(mask: BoolArray, sigma: float) -> FloatArray:
    """A mask blurred like the anatomy (so edits follow its soft edges), float32 in [0, 1]."""
    return gaussian_filter(mask.astype(np.float32), sigma, mode="constant", truncate=3.0)


def _pick_centre(
    rng: np.random.Generator, region: BoolArray, clearance: float
) -> tuple[float, float]:
    """A random pixel centre ``(col, row)`` of ``region`` at least ``clearance`` px from its edge."""
    inner = distance_transform_edt(region)
    ok = inner >= min(clearance, 0.8 * float(inner.max()))
    rows, cols = np.nonzero(ok)
    i = int(rng.integers(rows.size))
    return float(cols[i]) + rng.uniform(-0.5, 0.5), float(rows[i]) + rng.uniform(-0.5, 0.5)


def _polar(size: int, centre: tuple[float, float]) -> tuple[FloatArray, FloatArray]:
    """``(S, S)`` distance (pixels) and angle (radians) of every pixel centre from ``centre``."""
    cols = np.arange(size, dtype=np.float32)[None, :] - np.float32(centre[0])
    rows = np.arange(size, dtype=np.float32)[:, None] - np.float32(centre[1])
    return np.hypot(cols, rows), np.arctan2(rows, cols)


def _with_layer(phantom: Phantom, layer: FloatArray) -> FloatArray:
    """The phantom's clean density with a finding's density layer added."""
    return (phantom.layers.clean + layer).astype(np.float32)


def _lung_opacity(phantom: Phantom, rng: np.random.Generator, kind: str) -> _Drawn:
    """Nodule or mass: a round (mass: lobulated) opacity inside one lung."""
    side = int(rng.integers(2))
    region = f"{SIDES[side]}_lung"
    px = phantom.size / 224.0
    if kind == "nodule":
        diameter, lobes, amp = rng.uniform(16.0, 24.0) * px, (0.0, 0.0), rng.uniform(0.32, 0.4)
    else:
        diameter, lobes, amp = rng.uniform(30.0, 44.0) * px, (0.08, 0.05), rng.uniform(0.26, 0.34)
    radius = diameter / 2.0
    centre = _pick_centre(rng, phantom.masks[region], radius * (1.0 + sum(lobes)) + 2.0 * px)
    r, theta = _polar(phantom.size, centre)
    phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    wobble = lobes[0] * np.sin(3 * theta + phase[0]) + lobes[1] * np.sin(5 * theta + phase[1])
    edge = radius * (1.0 + wobble)
    soft = 1.5 * px if kind == "nodule" else 2.5 * px
    layer = amp * smoothstep((edge - r) / soft) * (1.0 - 0.25 * np.clip(r / edge, 0.0, 1.0) ** 2)
    details = {"side": SIDES[side], "diameter_px": round(float(diameter), 2)}
    return _with_layer(phantom, layer.astype(np.float32)), phantom.masks, region, details


def _nodule(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    return _lung_opacity(phantom, rng, "nodule")


def _mass(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    return _lung_opacity(phantom, rng, "mass")


def _pleural_effusion(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    """Fluid layering at one lung base: blunted costophrenic angle and a meniscus."""
    side = int(rng.integers(2))
    an, th, layers = phantom.anatomy, phantom.thorax, phantom.layers
    xs, y = th.lateral(side), th.y
    medial = th.medial_border(y)
    reach = (xs - medial) / (an.thorax_half_width[side] - medial)
    top = an.dome_y[side] + rng.uniform(-0.09, -0.03)
    level = top - rng.uniform(0.05, 0.09) * np.clip(reach, 0.0, 1.0) ** 2
    xc, yc, a, b = th.lung_ellipse(side)
    chest = ellipse_value(xs, y, xc, yc, a, b) < 1.0
    chest &= (xs > medial) & ~phantom.masks["cardiac_silhouette"]
    thickness = np.sqrt(np.clip(1.0 - (th.x / an.body_half_width) ** 2, 0.0, None))
    fluid = an.abdomen_level * (0.85 + 0.15 * thickness)
    weight = smoothstep((y - level) / 0.015) * _soft(chest, layers.blur_sigma)
    layer = weight * np.maximum(fluid - layers.clean, 0.0)
    details = {"side": SIDES[side]}
    return _with_layer(phantom, layer), phantom.masks, f"{SIDES[side]}_costophrenic_angle", details


def _consolidation(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    """A patchy, ill-defined airspace opacity inside one lung."""
    side = int(rng.integers(2))
    region = f"{SIDES[side]}_lung"
    px = phantom.size / 224.0
    rx, ry = rng.uniform(16.0, 28.0, 2) * px
    centre = _pick_centre(rng, phantom.masks[region], 0.6 * min(rx, ry))
    cols = np.arange(phantom.size, dtype=np.float32)[None, :]
    rows = np.arange(phantom.size, dtype=np.float32)[:, None]
    patch = np.zeros((phantom.size, phantom.size), dtype=np.float32)
    for _ in range(int(rng.integers(18, 28))):
        rho, phi = np.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
        bx, by = centre[0] + rx * rho * np.cos(phi), centre[1] + ry * rho * np.sin(phi)
        blob_r = rng.uniform(0.3, 0.5) * min(rx, ry)
        d2 = ((cols - bx) ** 2 + (rows - by) ** 2) / blob_r**2
        patch += np.clip(1.0 - d2, 0.0, None) ** 2
    envelope = smoothstep((1.0 - ellipse_value(cols, rows, centre[0], centre[1], rx, ry)) / 0.6)
    amp = rng.uniform(0.28, 0.36)
    lung = _soft(phantom.masks[region], phantom.layers.blur_sigma)
    layer = amp * (1.0 - np.exp(-1.5 * patch)) * envelope * lung
    details = {"side": SIDES[side], "width_px": round(float(2 * rx), 2)}
    details["height_px"] = round(float(2 * ry), 2)
    return _with_layer(phantom, layer.astype(np.float32)), phantom.masks, region, details


def _pneumothorax(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    """A dark, vessel-free band at one lung's apex and lateral wall, with a pleural line."""
    side = int(rng.integers(2))
    th, layers = phantom.thorax, phantom.layers
    px = phantom.size / 224.0
    depth = th.wall_distance(side)
    _, yc, _, b = th.lung_ellipse(side)
    apex = yc - b
    cut = apex + rng.uniform(0.4, 0.65) * (yc - apex)
    width = rng.uniform(14.0, 24.0) * px * np.sqrt(np.clip((cut - th.y) / (cut - apex), 0.0, 1.0))
    lung = _soft(layers.lung_fields[side], layers.blur_sigma)
    band = smoothstep((width - depth) / px) * smoothstep(width / (2.0 * px)) * lung
    vessels = gaussian_filter(layers.vessels, layers.blur_sigma, mode="nearest", truncate=3.0)
    darker = rng.uniform(0.14, 0.18)
    line_sigma = 0.7 * px
    line = np.exp(-0.5 * ((depth - width) / line_sigma) ** 2) * smoothstep(width / (3.0 * px)) * lung
    layer = -band * (vessels + np.float32(darker)) + np.float32(rng.uniform(0.12, 0.16)) * line
    details = {"side": SIDES[side], "max_width_px": round(float(width.max()), 2)}
    return _with_layer(phantom, layer.astype(np.float32)), phantom.masks, f"{SIDES[side]}_lung", details


def _cardiomegaly(phantom: Phantom, rng: np.random.Generator) -> _Drawn:
    """The heart enlarged about its base until the cardiothoracic ratio reaches 0.6-0.7."""
    target = rng.uniform(0.6, 0.7)
    factor = target / cardiothoracic_ratio(phantom.masks)
    masks = phantom.masks
    left, _, right, _ = tight_box(masks["left_lung"] | masks["right_lung"] | masks["cardiac_silhouette"])
    for _ in range(8):
        anatomy = enlarged_heart(phantom.anatomy, factor)
        heart_box = tight_box(Thorax(anatomy, phantom.size).heart())
        ratio = (heart_box[2] - heart_box[0]) / max(right - left, 1.0)
        if ratio >= target - 0.005:
            break
        factor *= target / ratio
    enlarged = render_phantom(anatomy, phantom.size)
    details = {"ctr": round(cardiothoracic_ratio(enlarged.masks), 4)}
    details["heart_scale"] = round(float(factor), 4)
    return enlarged.layers.clean, enlarged.masks, "cardiac_silhouette", details


_DRAWERS: dict[str, Callable[[Phantom, np.random.Generator], _Drawn]] = {
    "nodule": _nodule,
    "mass": _mass,
    "pleural_effusion": _pleural_effusion,
    "consolidation": _consolidation,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
}


def _outside_weight(box: np.ndarray, size: int) -> FloatArray:
    """0 inside the box, rising smoothly to 1 within a few pixels outside it."""
    x1, y1, x2, y2 = box
    idx = np.arange(size, dtype=np.float32)
    dx = np.maximum(np.maximum(x1 - idx, idx - (x2 - 1.0)), 0.0)
    dy = np.maximum(np.maximum(y1 - idx, idx - (y2 - 1.0)), 0.0)
    dist = np.maximum(dx[None, :], dy[:, None])
    return smoothstep(dist / (_EDIT_RAMP_PX * size / 224.0))


def _kept_edits(
    phantom: Phantom,
    image: WorkingImage,
    clean: FloatArray,
    box: np.ndarray,
    rng: np.random.Generator,
) -> tuple[WorkingImage, WorkingImage]:
    """Two edits of ``image`` outside ``box``: fresh noise; fresh noise plus a contrast change."""
    an = phantom.anatomy
    outside = _outside_weight(box, phantom.size)
    contrast = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.08)
    edits = []
    for stream, gain, bias in (
        (101, an.gain * rng.uniform(0.98, 1.02), an.bias),
        (102, an.gain * contrast, an.bias + rng.uniform(-0.02, 0.02)),
    ):
        noise = imaging_noise(phantom.seed, phantom.size, an.noise_sigma, stream=stream)
        edited = phantom.compose(clean, noise=noise, gain=gain, bias=bias)
        edits.append((image + outside * (edited - image)).astype(np.float32))
    return edits[0], edits[1]


def _check_finding(finding: object) -> str | None:
    if finding is None or (isinstance(finding, str) and finding in _DRAWERS):
        return finding
    raise UnknownFindingError(str(finding), FINDINGS)


def make_case(seed: int, finding: str | None, size: int = 224) -> Case:
    """Draw phantom ``seed`` with one finding, its box and its counterfactuals.

    Args:
        seed (int): non-negative phantom seed; the anatomy is that of
            :func:`generate_phantom` ``(seed, size)``, the finding's placement is
            drawn from a stream of its own.
        finding (str | None): a name in :data:`FINDINGS`, or None for a normal case
            (no box, no counterfactuals).
        size (int, optional): image side ``S`` in pixels. Default: ``224``.

    Returns:
        Case: image, ``(N, 4)`` boxes (exclusive ends, pixels), masks and the
        ``removed`` / ``kept`` / ``kept_normal`` counterfactuals.

    Raises:
        UnknownFindingError: ``finding`` is not in :data:`FINDINGS`.
        PhantomParameterError: negative seed or size too small.

    Examples::

        >>> case = make_case(3, "nodule")
        >>> case.boxes.shape, bool((case.removed == case.phantom.image).all())
        ((1, 4), True)
    """
    finding = _check_finding(finding)
    phantom = generate_phantom(seed, size)
    if finding is None:
        return Case(
            seed=phantom.seed,
            size=size,
            finding=None,
            region=None,
            image=phantom.image,
            boxes=np.zeros((0, 4)),
            finding_mask=np.zeros((size, size), dtype=bool),
            masks=phantom.masks,
            removed=None,
            kept=None,
            kept_normal=None,
            details={},
            phantom=phantom,
        )
    rng = np.random.default_rng([phantom.seed, 3, FINDINGS.index(finding)])
    clean, masks, region, details = _DRAWERS[finding](phantom, rng)
    drawn = phantom.compose(clean)
    changed = np.abs(drawn - phantom.image) >= VISIBLE_STEP
    image = np.where(changed, drawn, phantom.image).astype(np.float32)
    box = tight_box(changed | (masks["cardiac_silhouette"] if finding == "cardiomegaly" else False))
    kept, kept_normal = _kept_edits(phantom, image, clean, box, rng)
    return Case(
        seed=phantom.seed,
        size=size,
        finding=finding,
        region=region,
        image=image,
        boxes=box[None, :],
        finding_mask=changed,
        masks=masks,
        removed=phantom.image,
        kept=kept,
        kept_normal=kept_normal,
        details=details,
        phantom=phantom,
    )
