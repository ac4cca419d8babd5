"""Intervention faithfulness without ground truth: deletion, insertion, random regions.

A faithful attribution marks the pixels the answer depends on, so removing them first
should make the answer collapse fastest. Everything here happens in the **working
frame** (the images the adapter sees), and every number is the *target log-prob*
``l(x)``: the sum over target tokens of :meth:`~cxr_attrib.adapter.Adapter.score`, in
nats.

Definitions (``x`` the working image, ``b = baseline_image(x, fill)``):

1. **Ranking.** Only content pixels (``content_mask`` True) are ranked or changed;
   padding never is. They are ordered by attribution, highest first; ties are broken
   by a seeded random permutation (``seed``), so a flat map removes pixels in a random
   but reproducible order rather than top to bottom. ``R_f`` is the set of the first
   ``round(f * N)`` ranked pixels (``N`` content pixels, half up).
2. **Deletion** ``x_del(f)``: ``x`` with ``R_f`` replaced by ``b``.
   **Insertion** ``x_ins(f)``: ``b`` on the content with ``R_f`` put back from ``x``
   (padding stays ``x``'s). Hence ``x_del(0) = x_ins(1) = x`` (the original) and
   ``x_del(1) = x_ins(0) = x_empty`` (all content removed). With ``f = k / steps``,
   ``k = 0 .. steps``, that is ``2 * steps`` distinct images; they are scored in one
   :meth:`~cxr_attrib.adapter.Adapter.score` call (chunked by ``batch_size``), the
   original among them.
3. **AUCs.** *Raw*: the trapezoid rule of the curve over ``f`` in ``[0, 1]`` (nats).
   *Normalised*: the same after mapping each log-prob ``l`` to
   ``(l - l(x_empty)) / (l(x) - l(x_empty))``, so the original counts 1 and the empty
   image 0. A faithful map has a LOW normalised deletion AUC (the answer collapses as
   soon as its evidence is gone) and a HIGH normalised insertion AUC (it recovers as
   soon as its evidence is back); for monotone curves both lie in ``[0, 1]``. When the
   span ``l(x) - l(x_empty)`` is below :data:`MIN_SPAN` (removing the whole image does
   not lower the answer's log-prob) the normalised AUCs are undefined and are None.
4. **Random regions.** The top region ``R_fraction`` is compared with ``n`` random
   regions of the same area ``A = |R_fraction|``: each is the ``A`` content pixels
   nearest (Euclidean, between pixel centres) to a centre pixel drawn uniformly from
   the content, ties broken by the same seeded permutation, i.e. a disc of area ``A``
   that is clipped to the content and grows inwards at its border. The drop of a
   region is ``l(x) - l(x with the region replaced by b)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.errors import DataError
from cxr_attrib.perturb import baseline_image
from cxr_attrib.typing import Heatmap, WorkingImage

__all__ = [
    "MIN_SPAN",
    "Curves",
    "RegionDrop",
    "deletion_insertion",
    "faithfulness",
    "random_region_drop",
]

MIN_SPAN = 1e-6
"""Smallest ``l(x) - l(x_empty)`` (nats) for which normalised AUCs are defined."""


def _frozen(values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Curves:
    """Deletion and insertion curves of one attribution (module docstring, steps 1-3).

    Attributes:
        fractions (np.ndarray): (steps + 1,) float64 ``k / steps``: share of the content
            pixels removed (deletion) or revealed (insertion).
        deletion (np.ndarray): (steps + 1,) float64 target log-probs (nats) of
            ``x_del(f)``; ``deletion[0]`` is the original's.
        insertion (np.ndarray): (steps + 1,) float64 target log-probs (nats) of
            ``x_ins(f)``; ``insertion[-1]`` is the original's.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    def __post_init__(self) -> None:
        for name in ("fractions", "deletion", "insertion"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def original(self) -> float:
        """Target log-prob of the unperturbed image (nats)."""
        return float(self.deletion[0])

    @property
    def empty(self) -> float:
        """Target log-prob with every content pixel replaced by the baseline (nats)."""
        return float(self.deletion[-1])

    @property
    def span(self) -> float:
        """``original - empty`` (nats): what removing the whole image costs the answer."""
        return self.original - self.empty

    @property
    def deletion_auc_raw(self) -> float:
        """Trapezoid area under the deletion curve over ``f`` in [0, 1] (nats)."""
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc_raw(self) -> float:
        """Trapezoid area under the insertion curve over ``f`` in [0, 1] (nats)."""
        return float(np.trapezoid(self.insertion, self.fractions))

    def _normalised_auc(self, curve: np.ndarray) -> float | None:
        span = self.span
        if not span >= MIN_SPAN:
            return None
        return float(np.trapezoid((curve - self.empty) / span, self.fractions))

    @property
    def deletion_auc(self) -> float | None:
        """Normalised deletion AUC (lower is better); None when the span is < MIN_SPAN."""
        return self._normalised_auc(self.deletion)

    @property
    def insertion_auc(self) -> float | None:
        """Normalised insertion AUC (higher is better); None when the span is < MIN_SPAN."""
        return self._normalised_auc(self.insertion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe curves and AUCs (lists of floats; None where undefined)."""
        return {
            "fractions": self.fractions.tolist(),
            "deletion": self.deletion.tolist(),
            "insertion": self.insertion.tolist(),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "deletion_auc_raw": self.deletion_auc_raw,
            "insertion_auc_raw": self.insertion_auc_raw,
        }


@dataclass(frozen=True, eq=False)
class RegionDrop:
    """Top-attributed region versus random regions of the same area (module step 4).

    Attributes:
        fraction (float): share of the content pixels in each region.
        area (int): pixels per region, ``round(fraction * N)``.
        original (float): target log-prob of the unperturbed image (nats).
        top (float): target log-prob with the top region removed (nats).
        random (np.ndarray): (n,) float64 target log-probs with each random region
            removed (nats).
    """

    fraction: float
    area: int
    original: float
    top: float
    random: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "random", _frozen(self.random))

    @property
    def top_drop(self) -> float:
        """``original - top`` (nats): what removing the attributed region costs."""
        return self.original - self.top

    @property
    def random_drops(self) -> np.ndarray:
        """(n,) float64 ``original - random`` (nats)."""
        return self.original - self.random

    @property
    def random_drop(self) -> float:
        """Mean drop over the random regions (nats)."""
        return float(self.random_drops.mean())

    @property
    def gain(self) -> float:
        """``top_drop - random_drop`` (nats); positive when the map beats chance."""
        return self.top_drop - self.random_drop

    @property
    def beats_random(self) -> float:
        """Share of random regions whose drop is smaller than the top region's, in [0, 1]."""
        return float(np.mean(self.random_drops < self.top_drop))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (drops in nats)."""
        return {
            "fraction": self.fraction,
            "area": self.area,
            "top_drop": self.top_drop,
            "random_drops": self.random_drops.tolist(),
            "random_drop": self.random_drop,
            "gain": self.gain,
            "beats_random": self.beats_random,
        }


# ------------------------------------------------------------------ validation


def _check_inputs(
    image: WorkingImage, heatmap: Heatmap, content_mask: npt.ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2 or pixels.size == 0:
        raise DataError(
            f"expected a working-frame image of shape (S, S), got {pixels.shape}; "
            "resize-pad the input with ResizePad.image_to_working first"
        )
    if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
        raise DataError("the working image must be finite float in [0, 1]; scale uint8 images by 1/255")
    scores = np.asarray(heatmap, dtype=np.float64)
    if scores.shape != pixels.shape:
        raise DataError(
            f"heatmap shape {scores.shape} differs from the working image {pixels.shape}; map the "
            "input-frame heatmap with ResizePad.heatmap_to_working first"
        )
    if not np.isfinite(scores).all():
        raise DataError("heatmap contains NaN or infinite values; attribution scores must be finite")
    if content_mask is None:
        mask = np.ones(pixels.shape, dtype=bool)
    else:
        mask = np.asarray(content_mask)
        if mask.shape != pixels.shape or mask.dtype != bool:
            raise DataError(
                f"content_mask must be a bool array of shape {pixels.shape}, got {mask.dtype} "
                f"{mask.shape}; use ResizePad.content_mask()"
            )
        if not mask.any():
            raise DataError("content_mask has no True pixel; there is no image content to perturb")
    return pixels, scores, mask


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(fraction: object) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction must be a number in (0, 1], got {fraction!r}; e.g. 0.1 for 10% of the image")
    return float(fraction)


# ----------------------------------------------------------------- the plan


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


class _Plan:
    """Ranked content pixels and the images built from them."""

    def __init__(self, image: np.ndarray, scores: np.ndarray, mask: np.ndarray, fill: str | float, seed: int):
        self.image = image
        self.baseline = baseline_image(image, fill)
        rows, cols = np.nonzero(mask)
        self.rows, self.cols = rows, cols
        rng = np.random.default_rng(seed)
        self.tiebreak = rng.permutation(rows.size)
        self.rng = rng
        # lexsort: last key is primary -> by score descending, then by the permutation.
        self.order = np.lexsort((self.tiebreak, -scores[rows, cols]))
        self.empty = image.copy()
        self.empty[rows, cols] = self.baseline[rows, cols]

    @property
    def n_pixels(self) -> int:
        return int(self.rows.size)

    def count(self, fraction_num: int, fraction_den: int) -> int:
        return _round_half_up(fraction_num * self.n_pixels, fraction_den)

    def deleted(self, picked: np.ndarray) -> np.ndarray:
        out = self.image.copy()
        r, c = self.rows[picked], self.cols[picked]
        out[r, c] = self.baseline[r, c]
        return out

    def inserted(self, picked: np.ndarray) -> np.ndarray:
        out = self.empty.copy()
        r, c = self.rows[picked], self.cols[picked]
        out[r, c] = self.image[r, c]
        return out

    def random_region(self, centre: int, area: int) -> np.ndarray:
        """Indices of the ``area`` content pixels nearest to content pixel ``centre``."""
        distance = (self.rows - self.rows[centre]) ** 2 + (self.cols - self.cols[centre]) ** 2
        key = distance.astype(np.int64) * self.n_pixels + self.tiebreak  # unique keys
        if area >= key.size:
            return np.arange(key.size)
        return np.argpartition(key, area - 1)[:area]


def _curve_images(plan: _Plan, steps: int) -> list[np.ndarray]:
    """[original, empty, del(1..steps-1), ins(1..steps-1)]."""
    images = [plan.image, plan.empty]
    counts = [plan.count(k, steps) for k in range(1, steps)]
    images += [plan.deleted(plan.order[:n]) for n in counts]
    images += [plan.inserted(plan.order[:n]) for n in counts]
    return images


def _curves(values: np.ndarray, steps: int) -> Curves:
    original, empty = values[0], values[1]
    middle_del = values[2 : steps + 1]
    middle_ins = values[steps + 1 : 2 * steps]
    return Curves(
        fractions=np.arange(steps + 1) / steps,
        deletion=np.concatenate([[original], middle_del, [empty]]),
        insertion=np.concatenate([[empty], middle_ins, [original]]),
    )


def _region_images(plan: _Plan, fraction: float, n: int) -> tuple[int, list[np.ndarray]]:
    """Area and [top-deleted, random-deleted x n] (centres drawn after the tie-break)."""
    area = max(1, min(plan.n_pixels, int(np.floor(fraction * plan.n_pixels + 0.5))))
    centres = plan.rng.integers(0, plan.n_pixels, size=n)
    images = [plan.deleted(plan.order[:area])]
    images += [plan.deleted(plan.random_region(int(c), area)) for c in centres]
    return area, images


def _target_logprobs(
    adapter: Adapter, images: Sequence[np.ndarray], query: Query, batch_size: int | None
) -> np.ndarray:
    with torch.no_grad():
        out = adapter.score(list(images), query, batch_size=batch_size)
    totals = torch.as_tensor(out).detach().to(torch.float64).sum(-1).cpu().numpy()
    if totals.shape != (len(images),):
        raise DataError(
            f"adapter {adapter.name!r} returned scores of shape {tuple(out.shape)} for {len(images)} "
            "images; expected (B, T) target-token log-probs"
        )
    return totals


# --------------------------------------------------------------------- public


def faithfulness(
    adapter: Adapter,
    image_working: WorkingImage,
    query: Query,
    heatmap_working: Heatmap,
    *,
    steps: int = 10,
    fraction: float = 0.1,
    n: int = 8,
    fill: str | float = "zero",
    seed: int = 0,
    batch_size: int | None = None,
    content_mask: npt.ArrayLike | None = None,
) -> tuple[Curves, RegionDrop]:
    """Deletion/insertion curves and the random-region drop from ONE batch of images.

    The original is scored once, in the same :meth:`~cxr_attrib.adapter.Adapter.score`
    call as the ``2 * steps - 1`` curve images, the top-region image and the ``n``
    random-region images (``2 * steps + 1 + n`` in all; see the module docstring).

    Args:
        adapter (Adapter): the model.
        image_working (WorkingImage): (S, S) float32 working-frame image in [0, 1].
        query (Query): prompt, answer and span policy whose target log-prob is tracked.
        heatmap_working (Heatmap): (S, S) attribution in the working frame (any unit;
            only the order matters).
        steps (int): curve points minus one; fractions ``k / steps``. Default: 10.
        fraction (float): share of the content in the top and random regions, in (0, 1].
            Default: 0.1.
        n (int): random regions. Default: 8.
        fill (str | float): baseline, see :func:`~cxr_attrib.perturb.baseline_image`.
            Default: ``"zero"``.
        seed (int): seed of the tie-break permutation and the random centres. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool, True on the image content; None
            treats every pixel as content. Default: None.

    Returns:
        tuple[Curves, RegionDrop]: both in nats.

    Raises:
        DataError: mismatched shapes, non-finite values or bad parameters.
    """
    steps = _check_count("steps", steps, 1)
    n = _check_count("n", n, 1)
    fraction = _check_fraction(fraction)
    pixels, scores, mask = _check_inputs(image_working, heatmap_working, content_mask)
    plan = _Plan(pixels, scores, mask, fill, seed)
    curve_images = _curve_images(plan, steps)
    area, region_images = _region_images(plan, fraction, n)
    values = _target_logprobs(adapter, curve_images + region_images, query, batch_size)
    curves = _curves(values[: len(curve_images)], steps)
    rest = values[len(curve_images) :]
    drop = RegionDrop(fraction=fraction, area=area, original=float(values[0]), top=float(rest[0]), random=rest[1:])
    return curves, drop


def deletion_insertion(
    adapter: Adapter,
    image_working: WorkingImage,
    query: Query,
    heatmap_working: Heatmap,
    *,
    steps: int = 10,
    fill: str | float = "zero",
    seed: int = 0,
    batch_size: int | None = None,
    content_mask: npt.ArrayLike | None = None,
) -> Curves:
    """Deletion and insertion curves of an attribution, scored in one batch.

    ``2 * steps`` images (the original, the empty image and ``steps - 1`` of each
    curve) go through one :meth:`~cxr_attrib.adapter.Adapter.score` call.

    Args:
        adapter (Adapter): the model.
        image_working (WorkingImage): (S, S) float32 working-frame image in [0, 1].
        query (Query): prompt, answer and span policy whose target log-prob is tracked.
        heatmap_working (Heatmap): (S, S) attribution in the working frame.
        steps (int): fractions ``0, 1/steps, ..., 1``. Default: 10.
        fill (str | float): baseline, see :func:`~cxr_attrib.perturb.baseline_image`.
            Default: ``"zero"``.
        seed (int): seed of the tie-break permutation. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool content; None = everything.
            Default: None.

    Returns:
        Curves: (steps + 1,) curves in nats and their raw and normalised AUCs.

    Raises:
        DataError: mismatched shapes, non-finite values or bad parameters.

    Examples::

        >>> curves = deletion_insertion(adapter, working, query, heat)  # doctest: +SKIP
        >>> curves.deletion.shape, curves.deletion_auc                  # doctest: +SKIP
        ((11,), 0.21)
    """
    steps = _check_count("steps", steps, 1)
    pixels, scores, mask = _check_inputs(image_working, heatmap_working, content_mask)
    plan = _Plan(pixels, scores, mask, fill, seed)
    images = _curve_images(plan, steps)
    return _curves(_target_logprobs(adapter, images, query, batch_size), steps)


def random_region_drop(
    adapter: Adapter,
    image_working: WorkingImage,
    query: Query,
    heatmap_working: Heatmap,
    *,
    fraction: float,
    n: int = 8,
    fill: str | float = "zero",
    seed: int = 0,
    batch_size: int | None = None,
    content_mask: npt.ArrayLike | None = None,
) -> RegionDrop:
    """The log-prob drop of the top-attributed region versus ``n`` random regions.

    The original, the top-region image and the ``n`` random-region images (discs of
    the same area, module docstring step 4) are scored in one call.

    Args:
        adapter (Adapter): the model.
        image_working (WorkingImage): (S, S) float32 working-frame image in [0, 1].
        query (Query): prompt, answer and span policy whose target log-prob is tracked.
        heatmap_working (Heatmap): (S, S) attribution in the working frame.
        fraction (float): share of the content pixels in each region, in (0, 1].
        n (int): random regions. Default: 8.
        fill (str | float): baseline. Default: ``"zero"``.
        seed (int): seed of the tie-break permutation and of the centres. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool content; None = everything.
            Default: None.

    Returns:
        RegionDrop: drops in nats.

    Raises:
        DataError: mismatched shapes, non-finite values or bad parameters.
    """
    n = _check_count("n", n, 1)
    fraction = _check_fraction(fraction)
    pixels, scores, mask = _check_inputs(image_working, heatmap_working, content_mask)
    plan = _Plan(pixels, scores, mask, fill, seed)
    area, images = _region_images(plan, fraction, n)
    values = _target_logprobs(adapter, [plan.image, *images], query, batch_size)
    return RegionDrop(fraction=fraction, area=area, original=float(values[0]), top=float(values[1]), random=values[2:])
