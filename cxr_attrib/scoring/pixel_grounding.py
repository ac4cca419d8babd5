"""XBench-style grounding on pixel masks: thresholded maps against a truth mask.

Where :mod:`cxr_attrib.scoring.localisation` compares *boxes* (exact union areas), this
module compares *pixel masks*, as the grounding benchmarks of CLIP-style models do
(MedKLIP's grounding code is the closest public reference):

- **Truth** is an (H, W) bool mask: the union of boxes filled with the pixel-centre
  rule of :func:`truth_mask` (a pixel is inside when its centre ``(col + 0.5, row + 0.5)``
  lies in a box, the rule the box-based pointing game uses), or a given mask (e.g. a
  decoded SIIM-ACR RLE mask).
- **Prediction** is the map thresholded at ``tau``: with ``rule="normalised"`` the map is
  min-max normalised per image to [0, 1] over its finite pixels first
  (:func:`normalise_map`) and the mask is ``n > tau``; with ``rule="raw"`` the mask is
  ``map > tau`` on the raw values (attention probabilities; MedKLIP's tau is
  :data:`RAW_TAU` = 0.008, uniform attention over 196 patches being 0.005).
- **Ignored pixels**: a NaN in the map (e.g. outside a model's centre crop) removes that
  pixel from both the prediction and the truth, so a metric only judges what the map says.
- **IoU** = TP / (|G| + |P| - TP) and **Dice** = 2 TP / (|G| + |P|) over the counted
  pixels; both are 1.0 when G and P are both empty and 0.0 when exactly one is.
- **Pointing game** in two named conventions over the maximal finite pixels M:
  ``"any"`` (lenient; ties count): 1.0 when some pixel of M is in the truth;
  ``"share"`` (ours): |M ∩ G| / |M|, the expected hit when ties are broken at random.
- **Tau sweep**: mean IoU and Dice over images for each tau of a grid
  (:data:`TAU_GRID`, 0.05..0.95 in steps of 0.05); the tau reported on a test split is the
  one with the best mean Dice on a separate **calibration** split
  (:func:`calibration_split`, :func:`calibrate_tau`), never on the test split itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cxr_attrib.errors import DataError
from cxr_attrib.scoring.boxes import _as_heatmap
from cxr_attrib.scoring.localisation import _centre_mask, as_boxes

__all__ = [
    "POINTING_CONVENTIONS",
    "RAW_TAU",
    "TAU_GRID",
    "MaskScores",
    "TauSweep",
    "calibrate_tau",
    "calibration_split",
    "grounding_metrics",
    "metric_key",
    "sample_truth",
    "mask_overlap",
    "normalise_map",
    "pixel_pointing_game",
    "pointing_game",
    "predicted_mask",
    "tau_sweep",
    "truth_mask",
]

RAW_TAU = 0.008
"""MedKLIP's threshold on raw attention probabilities (the ``rule="raw"`` default)."""

TAU_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""The tau sweep: 0.05, 0.10, ..., 0.95 (19 values)."""

POINTING_CONVENTIONS = ("any", "share")
"""``"any"``: some maximal pixel in the truth (lenient, MedKLIP-style); ``"share"``: share of maximal pixels in it (ours)."""

Rule = Literal["normalised", "raw"]
Convention = Literal["any", "share"]


def _map(heatmap: object, name: str = "heatmap") -> np.ndarray:
    array = np.asarray(heatmap)
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(f"{name} must be a non-empty (H, W) array; received shape {array.shape}.")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{name} must hold real numbers; received dtype {array.dtype}.")
    array = array.astype(np.float64)
    if np.isinf(array).any():
        raise DataError(f"{name} holds an infinite value; only finite values or NaN (ignored pixel) are allowed.")
    return array


def _truth(truth: object, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(truth)
    if mask.dtype != bool:
        raise DataError(f"truth mask must be a bool array; received dtype {mask.dtype}.")
    if mask.shape != shape:
        raise DataError(
            f"truth mask has shape {mask.shape} but its map has shape {shape}; both must be in the same (H, W) frame."
        )
    return mask


def truth_mask(boxes: object, shape: tuple[int, int]) -> np.ndarray:
    """The union of ground-truth boxes filled as an (H, W) bool mask.

    Args:
        boxes (array-like): (N, 4) ``x1, y1, x2, y2`` in pixels, exclusive ends.
        shape (tuple[int, int]): (H, W) of the image.

    Returns:
        np.ndarray: (H, W) bool; a pixel is True when its centre lies in some box.

    Examples::

        >>> truth_mask([[1, 0, 3, 1]], (2, 4)).astype(int).tolist()
        [[0, 1, 1, 0], [0, 0, 0, 0]]
    """
    height, width = (int(side) for side in shape)
    return _centre_mask(as_boxes(boxes, name="gt_boxes"), height, width)


def normalise_map(heatmap: object) -> np.ndarray:
    """Min-max normalise a map per image to [0, 1] over its finite pixels.

    Args:
        heatmap (array-like): (H, W) real scores; NaN marks ignored pixels.

    Returns:
        np.ndarray: (H, W) float64 in [0, 1], NaN where the input is NaN; a map with no
        contrast (constant, or all NaN) becomes 0 on its finite pixels.

    Examples::

        >>> normalise_map([[2.0, 4.0], [3.0, float("nan")]]).tolist()
        [[0.0, 1.0], [0.5, nan]]
    """
    values = _map(heatmap)
    finite = ~np.isnan(values)
    out = np.full(values.shape, np.nan)
    if not finite.any():
        return out
    low, high = values[finite].min(), values[finite].max()
    out[finite] = 0.0 if high == low else (values[finite] - low) / (high - low)
    return out


def predicted_mask(heatmap: object, tau: float, *, rule: Rule = "normalised") -> np.ndarray:
    """The map thresholded at ``tau``: the predicted (H, W) bool mask.

    Args:
        heatmap (array-like): (H, W) scores; NaN pixels are never predicted.
        tau (float): threshold; in [0, 1] for ``rule="normalised"``.
        rule (str): ``"normalised"`` (``normalise_map(h) > tau``) or ``"raw"``
            (``h > tau``; use :data:`RAW_TAU` for attention probabilities).
            Default: ``"normalised"``.

    Returns:
        np.ndarray: (H, W) bool.

    Examples::

        >>> predicted_mask([[0.0, 0.2], [0.6, 1.0]], 0.5).tolist()
        [[False, False], [True, True]]
        >>> predicted_mask([[0.001, 0.01]], 0.008, rule="raw").tolist()
        [[False, True]]
    """
    tau = _check_tau(tau, rule)
    values = normalise_map(heatmap) if rule == "normalised" else _map(heatmap)
    with np.errstate(invalid="ignore"):
        return values > tau  # NaN > tau is False


def _check_tau(tau: object, rule: str) -> float:
    if rule not in ("normalised", "raw"):
        raise DataError(f"rule must be 'normalised' or 'raw'; received {rule!r}.")
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not np.isfinite(tau):
        raise DataError(f"tau must be a finite number; received {tau!r}.")
    if rule == "normalised" and not 0.0 <= tau <= 1.0:
        raise DataError(f"tau must be in [0, 1] for a normalised map; received {tau!r}.")
    return float(tau)


@dataclass(frozen=True)
class MaskScores:
    """Agreement of one predicted mask with one truth mask (counted pixels only).

    Attributes:
        iou (float): TP / (|G| + |P| - TP) in [0, 1].
        dice (float): 2 TP / (|G| + |P|) in [0, 1].
        tp (int): pixels in both.
        predicted (int): |P|.
        truth (int): |G|.
    """

    iou: float
    dice: float
    tp: int
    predicted: int
    truth: int


def mask_overlap(pred: object, truth: object, *, ignore: object | None = None) -> MaskScores:
    """IoU and Dice of two pixel masks.

    Args:
        pred (array-like): (H, W) bool predicted mask.
        truth (array-like): (H, W) bool truth mask (same shape).
        ignore (array-like | None): (H, W) bool pixels left out of both (e.g. NaN map
            pixels). Default: None (every pixel counts).

    Returns:
        MaskScores: 1.0 for both metrics when both masks are empty, 0.0 when only one is.

    Raises:
        DataError: the shapes differ or a mask is not bool.

    Examples::

        >>> s = mask_overlap([[True, True, False]], [[False, True, True]])
        >>> round(s.iou, 4), s.dice
        (0.3333, 0.5)
    """
    predicted = np.asarray(pred)
    if predicted.dtype != bool or predicted.ndim != 2:
        raise DataError(f"pred must be an (H, W) bool mask; received dtype {predicted.dtype}, shape {predicted.shape}.")
    gt = _truth(truth, predicted.shape)
    if ignore is not None:
        keep = ~_truth(ignore, predicted.shape)
        predicted, gt = predicted & keep, gt & keep
    tp = int(np.count_nonzero(predicted & gt))
    n_pred, n_truth = int(np.count_nonzero(predicted)), int(np.count_nonzero(gt))
    if n_pred + n_truth == 0:
        return MaskScores(1.0, 1.0, 0, 0, 0)
    return MaskScores(tp / (n_pred + n_truth - tp), 2.0 * tp / (n_pred + n_truth), tp, n_pred, n_truth)


def pixel_pointing_game(heatmap: object, truth: object, *, convention: Convention = "share") -> float:
    """Whether the map's maximum lies in the truth mask, in a named convention.

    Only finite pixels compete for the maximum. ``"any"`` (the lenient convention of
    MedKLIP-style code) gives 1.0 when any maximal pixel is in the truth, so a constant
    map hits every non-empty truth; ``"share"`` (ours) gives the share of maximal pixels
    in the truth, the expected hit when the tie is broken uniformly at random.

    Args:
        heatmap (array-like): (H, W) scores; NaN pixels are ignored.
        truth (array-like): (H, W) bool truth mask.
        convention (str): ``"any"`` or ``"share"``. Default: ``"share"``.

    Returns:
        float: in [0, 1]; 0.0 when the truth is empty or the map has no finite pixel.

    Examples::

        >>> h = [[1.0, 1.0], [0.0, 0.0]]
        >>> g = np.array([[True, False], [False, False]])
        >>> pixel_pointing_game(h, g, convention="any"), pixel_pointing_game(h, g, convention="share")
        (1.0, 0.5)
    """
    if convention not in POINTING_CONVENTIONS:
        raise DataError(f"convention must be one of {POINTING_CONVENTIONS}; received {convention!r}.")
    values = _map(heatmap)
    gt = _truth(truth, values.shape)
    finite = ~np.isnan(values)
    if not finite.any() or not gt.any():
        return 0.0
    peak = finite & (values == values[finite].max())
    hits = int(np.count_nonzero(peak & gt))
    if convention == "any":
        return float(hits > 0)
    return hits / int(np.count_nonzero(peak))


def pointing_game(heatmap: np.ndarray, gt_boxes: object) -> float:
    """Whether the heatmap's peak falls inside the union of the GT boxes (1.0 or 0.0).

    With a unique maximum this is the classic hit (1.0) or miss (0.0). A map whose
    maximum is a plateau (a tile of occlusion, a concept region, a constant map) has
    no single peak: the score is then the share of its maximal pixels that lie
    inside, which is the expected hit when the tie is broken uniformly at random. No
    tie is resolved by position, so a plateau is never judged by its top-left
    pixel, and a constant map scores the GT's share of the image, like a random
    point. A pixel is inside when its centre ``(col + 0.5, row + 0.5)`` lies in some
    box. This is :func:`~cxr_attrib.scoring.pixel_grounding.pixel_pointing_game`'s
    ``"share"`` convention on the boxes' pixel mask.

    Args:
        heatmap (np.ndarray): (H, W) attribution scores.
        gt_boxes (array-like): (M, 4) ground-truth boxes, exclusive ends, in the
            heatmap's frame.

    Returns:
        float: in [0, 1]; 0.0 when there are no GT boxes.

    Examples::

        >>> h = np.zeros((4, 4)); h[2, 3] = 1.0
        >>> pointing_game(h, [[3, 2, 4, 3]]), pointing_game(h, [[0, 0, 3, 4]])
        (1.0, 0.0)
        >>> h[2, 2] = 1.0  # a two-pixel plateau, one pixel inside
        >>> pointing_game(h, [[3, 2, 4, 3]])
        0.5
    """
    scores = _as_heatmap(heatmap)  # the box version of pixel_pointing_game (one implementation)
    boxes = as_boxes(gt_boxes, name="gt_boxes")
    return pixel_pointing_game(scores, _centre_mask(boxes, *scores.shape), convention="share")


@dataclass(frozen=True)
class TauSweep:
    """Mean IoU and Dice over images at each tau of a grid.

    Attributes:
        taus (np.ndarray): (K,) float64 thresholds.
        iou (np.ndarray): (K,) float64 mean IoU over the images at each tau.
        dice (np.ndarray): (K,) float64 mean Dice.
        n (int): number of images.
    """

    taus: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    n: int

    def best(self, metric: Literal["dice", "iou"] = "dice") -> float:
        """The tau with the highest mean ``metric`` (the smallest such tau on ties)."""
        values = self.dice if metric == "dice" else self.iou
        return float(self.taus[int(np.argmax(values))])

    def at(self, tau: float) -> tuple[float, float]:
        """(mean IoU, mean Dice) at a tau of the grid."""
        hits = np.flatnonzero(np.isclose(self.taus, tau, rtol=0.0, atol=1e-12))
        if not hits.size:
            raise DataError(f"tau {tau!r} is not on the sweep's grid {self.taus.tolist()}.")
        return float(self.iou[hits[0]]), float(self.dice[hits[0]])


def tau_sweep(
    maps: Sequence[object],
    truths: Sequence[object],
    *,
    taus: Sequence[float] = TAU_GRID,
    rule: Rule = "normalised",
) -> TauSweep:
    """IoU and Dice of every map against its truth at each tau, averaged over images.

    Args:
        maps (Sequence[array-like]): N (H_i, W_i) maps (NaN = ignored pixel).
        truths (Sequence[array-like]): N (H_i, W_i) bool truth masks (positives only).
        taus (Sequence[float]): thresholds. Default: :data:`TAU_GRID`.
        rule (str): ``"normalised"`` or ``"raw"``. Default: ``"normalised"``.

    Returns:
        TauSweep: (K,) mean IoU and Dice; NaN curves when N is 0.

    Raises:
        DataError: different numbers of maps and truths, a shape mismatch, a bad tau.
    """
    if len(maps) != len(truths):
        raise DataError(f"tau_sweep needs one truth mask per map; received {len(maps)} maps and {len(truths)} truths.")
    grid = np.array([_check_tau(tau, rule) for tau in taus], dtype=np.float64)
    if not grid.size:
        raise DataError("taus must hold at least one threshold.")
    iou = np.zeros((len(maps), grid.size))
    dice = np.zeros((len(maps), grid.size))
    for row, (heatmap, truth) in enumerate(zip(maps, truths)):
        values = normalise_map(heatmap) if rule == "normalised" else _map(heatmap)
        counted = ~np.isnan(values)
        gt = _truth(truth, values.shape) & counted
        scores = values[counted]
        inside = gt[counted]
        n_truth = np.count_nonzero(inside)
        # |P| and TP for every tau at once: P = {scores > tau}.
        n_pred = (scores[None, :] > grid[:, None]).sum(axis=1)
        tp = (scores[inside][None, :] > grid[:, None]).sum(axis=1)
        both = n_pred + n_truth
        empty = both == 0
        safe = np.where(empty, 1, both)
        iou[row] = np.where(empty, 1.0, tp / np.where(empty, 1, both - tp))
        dice[row] = np.where(empty, 1.0, 2.0 * tp / safe)
    if not len(maps):
        return TauSweep(grid, np.full(grid.size, np.nan), np.full(grid.size, np.nan), 0)
    return TauSweep(grid, iou.mean(axis=0), dice.mean(axis=0), len(maps))


def calibration_split(sample_id: str, *, fraction: float = 0.3, salt: str = "xbench-calibration") -> bool:
    """Whether a sample belongs to the calibration split (else to the test split).

    The split is a pure function of the id (a stable hash), so it is the same in every
    run, shard and store, and no test sample can ever choose its own tau.

    Args:
        sample_id (str): the sample's stable id.
        fraction (float): expected share of calibration samples, in (0, 1). Default: 0.3.
        salt (str): changes the split when a fresh one is wanted. Default: ``"xbench-calibration"``.

    Returns:
        bool: True for calibration.

    Examples::

        >>> calibration_split("phantom/0") == calibration_split("phantom/0")
        True
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"fraction must be in (0, 1); received {fraction!r}.")
    digest = hashlib.blake2b(f"{salt}\x1f{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def calibrate_tau(
    maps: Sequence[object],
    truths: Sequence[object],
    *,
    taus: Sequence[float] = TAU_GRID,
    rule: Rule = "normalised",
    metric: Literal["dice", "iou"] = "dice",
) -> float:
    """The tau of the grid with the best mean ``metric`` on a calibration split.

    Pass the calibration split's maps only (:func:`calibration_split`); the returned
    tau is then applied to the test split.

    Args:
        maps, truths: as for :func:`tau_sweep`, calibration samples only (N >= 1).
        taus (Sequence[float]): the grid. Default: :data:`TAU_GRID`.
        rule (str): ``"normalised"`` or ``"raw"``. Default: ``"normalised"``.
        metric (str): ``"dice"`` or ``"iou"``. Default: ``"dice"``.

    Returns:
        float: the chosen tau (the smallest one on ties).

    Raises:
        DataError: no calibration samples.
    """
    if not len(maps):
        raise DataError("calibrate_tau needs at least one calibration sample; the calibration split is empty.")
    if metric not in ("dice", "iou"):
        raise DataError(f"metric must be 'dice' or 'iou'; received {metric!r}.")
    return tau_sweep(maps, truths, taus=taus, rule=rule).best(metric)


def metric_key(metric: Literal["pixel_iou", "pixel_dice"], tau: float) -> str:
    """The name of a tau-sweep value in a unit's metrics, e.g. ``"pixel_dice@0.35"``."""
    return f"{metric}@{tau:.2f}"


def sample_truth(boxes: object, mask: np.ndarray | None, shape: tuple[int, int], *, sample: str) -> np.ndarray:
    """A sample's (H, W) truth mask: its given mask, or the union of its boxes.

    Args:
        boxes (array-like): (N, 4) boxes, input frame, exclusive ends.
        mask (np.ndarray | None): (H, W) bool mask (e.g. SIIM-ACR's), or None.
        shape (tuple[int, int]): (H, W) of the image.
        sample (str): the sample id, for the message.

    Raises:
        DataError: the mask's shape differs from the image's (names the sample and both shapes).
    """
    if mask is None:
        return truth_mask(boxes, shape)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape) or mask.dtype != bool:
        raise DataError(
            f"sample {sample!r}: its truth mask is {mask.dtype} {mask.shape} but its image is {tuple(shape)}; "
            "a mask must be bool with its image's (H, W) shape."
        )
    return mask


def grounding_metrics(heatmap: object, truth: object, *, taus: Sequence[float] = TAU_GRID) -> dict[str, float]:
    """Every XBench-style grounding value of one map, flat, for a leaderboard unit.

    Args:
        heatmap (array-like): (H, W) input-frame map (a box-only method: its boxes' mask).
        truth (array-like): (H, W) bool truth mask.
        taus (Sequence[float]): the sweep. Default: :data:`TAU_GRID`.

    Returns:
        dict[str, float]: ``pointing_any``, ``pointing_share`` and, per tau,
        ``pixel_iou@tau`` and ``pixel_dice@tau`` (:func:`metric_key`), normalised rule.
    """
    sweep = tau_sweep([heatmap], [truth], taus=taus)
    out = {
        "pointing_any": pixel_pointing_game(heatmap, truth, convention="any"),
        "pointing_share": pixel_pointing_game(heatmap, truth, convention="share"),
    }
    for k, tau in enumerate(sweep.taus):
        out[metric_key("pixel_iou", tau)] = float(sweep.iou[k])
        out[metric_key("pixel_dice", tau)] = float(sweep.dice[k])
    return out
