"""Intervention faithfulness without ground truth: bounded deletion, insertion, random.

A faithful attribution marks the pixels the answer depends on, so removing them first
should make the answer collapse fastest. Everything here happens in the **working
frame** (the images the adapter sees). The model's raw output is the *target
log-prob* ``l(x)`` (nats: the sum over target tokens of
:meth:`~cxr_attrib.adapter.Adapter.score`; a dual encoder's log p(positive)); every
score is computed on the **probability of the explained answer** ``p(x) = exp(l(x))``,
in ``[0, 1]`` whatever the model, so scores mean the same on every model.

Definitions (``x`` the working image):

1. **Ranking.** Only content pixels (``content_mask`` True) are ranked or changed;
   padding never is. They are ordered by attribution, highest first; ties are broken
   by a seeded random permutation (``seed``), so a flat map removes pixels in a random
   but reproducible order rather than top to bottom. ``R_f`` is the set of the first
   ``round(f * N)`` ranked pixels (``N`` content pixels, half up).
2. **Removal.** ``x - R`` is ``x`` with the pixels of ``R`` replaced by the fill
   (:func:`~cxr_attrib.perturb.remove_pixels`: a baseline image for ``zero``, ``mean``,
   ``blur`` or a number; the pixels of ``R`` imputed from the rest for
   ``noisy_linear``; the functions here default to ``zero``, whose values can be checked
   by hand, while :func:`~cxr_attrib.scoring.score` and leaderboards default to
   ``noisy_linear``). **Deletion** ``x_del(f) = x - R_f``; **insertion**
   ``x_ins(f) = x - (C \\ R_f)`` (``C`` the content: only ``R_f`` is kept). Hence
   ``x_del(0) = x_ins(1) = x`` and ``x_del(1) = x_ins(0) = x_empty`` (all content
   removed).
3. **Random order.** A second seeded permutation ``Q`` of the content, independent of
   the map: ``x_rnd(f) = x - Q_f``, the deletion curve of a worthless map on the same
   image, with the same steps. With ``f = k / steps``, ``k = 0 .. steps``, the three
   curves are ``3 * steps - 1`` distinct images, scored in one
   :meth:`~cxr_attrib.adapter.Adapter.score` call (chunked by ``batch_size``), the
   original among them.
4. **AUCs** (trapezoid rule of ``p`` over ``f`` in ``[0, 1]``, so each lies in
   ``[0, 1]`` by construction): ``deletion_auc`` (lower is better), ``insertion_auc``
   (higher is better) and ``random_auc``. Relative to chance on the same image:
   ``deletion_gain = random_auc - deletion_auc`` and
   ``insertion_gain = insertion_auc - random_auc``, both in ``[-1, 1]``; positive means
   better than a random order, whatever the model does on an empty image. Revealing
   the first ``k`` pixels of a random order is removing the other ``N - k``, again a
   random set, so the random insertion curve is the random deletion curve mirrored in
   expectation and one random curve serves both gains.
5. **MoRF and LeRF** (Samek et al. 2017; Rong et al., ICML 2022 "ROAD"): the MoRF
   curve removes the most relevant pixels first (the deletion curve: ``morf_auc =
   deletion_auc``); the LeRF curve removes the least relevant first, and removing the
   least relevant ``f`` keeps exactly ``R_{1-f}``, i.e. ``LeRF(f) = x_ins(1 - f)``
   (the same images), so ``lerf_auc = insertion_auc``. The ROAD-style score is
   ``morf_lerf = lerf_auc - morf_auc`` in ``[-1, 1]`` (higher is better).
6. **Random regions.** The top region ``R_fraction`` is compared with ``n`` random
   regions of the same area ``A = |R_fraction|``: each is the ``A`` content pixels
   nearest (Euclidean, between pixel centres) to a centre pixel drawn uniformly from
   the content, ties broken by the same seeded permutation, i.e. a disc of area ``A``
   that is clipped to the content and grows inwards at its border. The drop of a
   region is ``p(x) - p(x - region)``, in ``[-1, 1]``.

The log-prob curves themselves (nats) are kept as raw data (:meth:`Curves.to_dict`),
so any other reading can be recomputed from a store.
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
from cxr_attrib.perturb import pixel_remover
from cxr_attrib.typing import Heatmap, WorkingImage

__all__ = [
    "Curves",
    "RegionDrop",
    "deletion_insertion",
    "faithfulness",
    "probability",
    "random_region_drop",
]


def _frozen(values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64, copy=True)
    array.setflags(write=False)
    return array


def probability(logprob: npt.ArrayLike) -> np.ndarray:
    """``exp(logprob)`` clipped to [0, 1]: the probability of the explained answer.

    Args:
        logprob (array-like): target log-probs in nats (any shape).

    Returns:
        np.ndarray: float64 of the same shape, in [0, 1] (a log-prob a rounding error
        above 0 gives 1).

    >>> probability([0.0, -np.inf, np.log(0.25)]).tolist()
    [1.0, 0.0, 0.25]
    """
    return np.clip(np.exp(np.asarray(logprob, dtype=np.float64)), 0.0, 1.0)


def _auc(logprobs: np.ndarray, fractions: np.ndarray) -> float:
    """Trapezoid area of the probability curve over ``fractions`` (in [0, 1] for f in [0, 1])."""
    return float(np.clip(np.trapezoid(probability(logprobs), fractions), 0.0, 1.0))


@dataclass(frozen=True, eq=False)
class Curves:
    """Deletion, insertion and random-order curves of one attribution (module steps 1-5).

    The arrays hold the raw target log-probs (nats); every AUC is computed on the
    probabilities ``exp(log-prob)`` and lies in [0, 1], every gain in [-1, 1].

    Attributes:
        fractions (np.ndarray): (steps + 1,) float64 ``k / steps``: share of the content
            pixels removed (deletion, random) or kept (insertion).
        deletion (np.ndarray): (steps + 1,) float64 log-probs of ``x_del(f)``;
            ``deletion[0]`` is the original's, ``deletion[-1]`` the empty image's.
        insertion (np.ndarray): (steps + 1,) float64 log-probs of ``x_ins(f)``;
            ``insertion[-1]`` is the original's.
        random (np.ndarray): (steps + 1,) float64 log-probs of ``x_rnd(f)``, the
            deletion curve of a seeded random order.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random: np.ndarray

    def __post_init__(self) -> None:
        for name in ("fractions", "deletion", "insertion", "random"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        shapes = {getattr(self, name).shape for name in ("fractions", "deletion", "insertion", "random")}
        if len(shapes) != 1 or self.fractions.ndim != 1 or self.fractions.size < 2:
            raise DataError(f"curves need equal 1-D arrays of >= 2 points, got shapes {sorted(shapes)}")

    @property
    def original(self) -> float:
        """Target log-prob of the unperturbed image (nats)."""
        return float(self.deletion[0])

    @property
    def empty(self) -> float:
        """Target log-prob with every content pixel removed (nats)."""
        return float(self.deletion[-1])

    @property
    def deletion_auc(self) -> float:
        """Area under the deletion probability curve, in [0, 1] (lower is better)."""
        return _auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> float:
        """Area under the insertion probability curve, in [0, 1] (higher is better)."""
        return _auc(self.insertion, self.fractions)

    @property
    def random_auc(self) -> float:
        """Area under the random-order deletion probability curve, in [0, 1]."""
        return _auc(self.random, self.fractions)

    @property
    def deletion_gain(self) -> float:
        """``random_auc - deletion_auc`` in [-1, 1]; positive: deletion beats chance."""
        return self.random_auc - self.deletion_auc

    @property
    def insertion_gain(self) -> float:
        """``insertion_auc - random_auc`` in [-1, 1]; positive: insertion beats chance."""
        return self.insertion_auc - self.random_auc

    @property
    def morf_lerf(self) -> float:
        """``lerf_auc - morf_auc`` = ``insertion_auc - deletion_auc`` in [-1, 1] (module step 5)."""
        return self.insertion_auc - self.deletion_auc

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe raw curves (log-probs in nats) and the bounded scores."""
        return {
            "fractions": self.fractions.tolist(),
            "deletion": self.deletion.tolist(),
            "insertion": self.insertion.tolist(),
            "random": self.random.tolist(),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_auc": self.random_auc,
            "deletion_gain": self.deletion_gain,
            "insertion_gain": self.insertion_gain,
            "morf_lerf": self.morf_lerf,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curves:
        """Inverse of :meth:`to_dict` (the derived scores are recomputed).

        Raises:
            DataError: a curve is missing or malformed.
        """
        try:
            return cls(**{name: data[name] for name in ("fractions", "deletion", "insertion", "random")})
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed curves {sorted(data) if isinstance(data, dict) else data!r}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class RegionDrop:
    """Top-attributed region versus random regions of the same area (module step 6).

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
        """``p(x) - p(x - top)`` in [-1, 1]: what removing the attributed region costs."""
        return float(probability(self.original) - probability(self.top))

    @property
    def random_drops(self) -> np.ndarray:
        """(n,) float64 ``p(x) - p(x - random region)``, each in [-1, 1]."""
        return probability(self.original) - probability(self.random)

    @property
    def random_drop(self) -> float:
        """Mean probability drop over the random regions, in [-1, 1]."""
        return float(self.random_drops.mean())

    @property
    def gain(self) -> float:
        """``top_drop - random_drop`` in [-1, 1]; positive when the map beats chance."""
        return self.top_drop - self.random_drop

    @property
    def beats_random(self) -> float:
        """Share of random regions whose drop is smaller than the top region's, in [0, 1]."""
        return float(np.mean(self.random_drops < self.top_drop))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe raw log-probs (nats) and the probability drops."""
        return {
            "fraction": self.fraction,
            "area": self.area,
            "original": self.original,
            "top": self.top,
            "random": self.random.tolist(),
            "top_drop": self.top_drop,
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
        self.remove = pixel_remover(image, fill, seed=seed, valid=mask)
        rows, cols = np.nonzero(mask)
        self.rows, self.cols = rows, cols
        rng = np.random.default_rng(seed)
        self.tiebreak = rng.permutation(rows.size)
        self.rng = rng
        # lexsort: last key is primary -> by score descending, then by the permutation.
        self.order = np.lexsort((self.tiebreak, -scores[rows, cols]))
        # The random order has its own stream, so the random regions do not depend on it.
        self.random_order = np.random.default_rng([seed, 1]).permutation(rows.size)
        self.empty = self.deleted(np.arange(rows.size))

    @property
    def n_pixels(self) -> int:
        return int(self.rows.size)

    def count(self, fraction_num: int, fraction_den: int) -> int:
        return _round_half_up(fraction_num * self.n_pixels, fraction_den)

    def deleted(self, picked: np.ndarray) -> np.ndarray:
        """The image with the content pixels ``picked`` (indices) removed."""
        removed = np.zeros(self.image.shape, dtype=bool)
        removed[self.rows[picked], self.cols[picked]] = True
        return self.remove(removed)

    def kept(self, picked: np.ndarray) -> np.ndarray:
        """The image with every content pixel but ``picked`` removed."""
        others = np.ones(self.n_pixels, dtype=bool)
        others[picked] = False
        return self.deleted(np.flatnonzero(others))

    def random_region(self, centre: int, area: int) -> np.ndarray:
        """Indices of the ``area`` content pixels nearest to content pixel ``centre``."""
        distance = (self.rows - self.rows[centre]) ** 2 + (self.cols - self.cols[centre]) ** 2
        key = distance.astype(np.int64) * self.n_pixels + self.tiebreak  # unique keys
        if area >= key.size:
            return np.arange(key.size)
        return np.argpartition(key, area - 1)[:area]


def _curve_images(plan: _Plan, steps: int) -> list[np.ndarray]:
    """[original, empty, del(1..steps-1), ins(1..steps-1), rnd(1..steps-1)]: 3 * steps - 1 images."""
    images = [plan.image, plan.empty]
    counts = [plan.count(k, steps) for k in range(1, steps)]
    images += [plan.deleted(plan.order[:n]) for n in counts]
    images += [plan.kept(plan.order[:n]) for n in counts]
    images += [plan.deleted(plan.random_order[:n]) for n in counts]
    return images


def _curves(values: np.ndarray, steps: int) -> Curves:
    original, empty = values[0], values[1]
    middle = [values[2 + i * (steps - 1) : 2 + (i + 1) * (steps - 1)] for i in range(3)]
    return Curves(
        fractions=np.arange(steps + 1) / steps,
        deletion=np.concatenate([[original], middle[0], [empty]]),
        insertion=np.concatenate([[empty], middle[1], [original]]),
        random=np.concatenate([[original], middle[2], [empty]]),
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
    """Deletion, insertion and random-order curves and the random-region drop from ONE batch.

    The original is scored once, in the same :meth:`~cxr_attrib.adapter.Adapter.score`
    call as the ``3 * steps - 2`` other curve images, the top-region image and the
    ``n`` random-region images (``3 * steps + n`` in all; see the module docstring),
    so the forward calls are ``ceil((3 * steps + n) / batch_size)``.

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
        fill (str | float): how removed pixels are filled, see
            :func:`~cxr_attrib.perturb.pixel_remover`. Default: ``"zero"``.
        seed (int): seed of the tie-break permutation, the random order, the random
            centres and the fill's noise. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool, True on the image content; None
            treats every pixel as content. Default: None.

    Returns:
        tuple[Curves, RegionDrop]: raw log-probs (nats) and bounded scores.

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
    """Deletion, insertion and random-order curves of an attribution, scored in one batch.

    ``3 * steps - 1`` images (the original, the empty image and ``steps - 1`` of each
    curve) go through one :meth:`~cxr_attrib.adapter.Adapter.score` call.

    Args:
        adapter (Adapter): the model.
        image_working (WorkingImage): (S, S) float32 working-frame image in [0, 1].
        query (Query): prompt, answer and span policy whose target log-prob is tracked.
        heatmap_working (Heatmap): (S, S) attribution in the working frame.
        steps (int): fractions ``0, 1/steps, ..., 1``. Default: 10.
        fill (str | float): how removed pixels are filled, see
            :func:`~cxr_attrib.perturb.pixel_remover`. Default: ``"zero"``.
        seed (int): seed of the tie-break permutation and the random order. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool content; None = everything.
            Default: None.

    Returns:
        Curves: (steps + 1,) log-prob curves and their bounded AUCs and gains.

    Raises:
        DataError: mismatched shapes, non-finite values or bad parameters.

    Examples::

        >>> curves = deletion_insertion(adapter, working, query, heat)  # doctest: +SKIP
        >>> curves.deletion.shape, curves.deletion_auc, curves.deletion_gain  # doctest: +SKIP
        ((11,), 0.21, 0.35)
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
    """The probability drop of the top-attributed region versus ``n`` random regions.

    The original, the top-region image and the ``n`` random-region images (discs of
    the same area, module docstring step 6) are scored in one call.

    Args:
        adapter (Adapter): the model.
        image_working (WorkingImage): (S, S) float32 working-frame image in [0, 1].
        query (Query): prompt, answer and span policy whose target log-prob is tracked.
        heatmap_working (Heatmap): (S, S) attribution in the working frame.
        fraction (float): share of the content pixels in each region, in (0, 1].
        n (int): random regions. Default: 8.
        fill (str | float): how removed pixels are filled. Default: ``"zero"``.
        seed (int): seed of the tie-break permutation and of the centres. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        content_mask (array-like | None): (S, S) bool content; None = everything.
            Default: None.

    Returns:
        RegionDrop: raw log-probs and probability drops.

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
