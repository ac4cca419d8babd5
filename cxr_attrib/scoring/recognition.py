"""Recognition scores and their link to grounding, XBench-style.

*Recognition* asks whether a model tells images with a finding (positives) from images
without it (negatives), from its p(positive) alone: the teacher-forced p("Yes") of an
LVLM, or a dual encoder's p(positive prompt). Per (model, finding):

- **AUC**: the probability that a random positive scores above a random negative, ties
  counting one half (the Mann-Whitney statistic divided by n_pos * n_neg);
- **accuracy** and **F1** of the answer ``p >= threshold`` (default 0.5);
- 95% **bootstrap** intervals, resampling positives and negatives separately
  (stratified, so every replicate has both classes and an AUC).

*Recognition vs grounding* is the Spearman rank correlation, over (model, finding)
pairs, of a recognition score (AUC) and a grounding score (e.g. mean Dice at the
calibrated tau), with a bootstrap interval over the pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from cxr_attrib.errors import DataError

__all__ = [
    "Interval",
    "RecognitionScores",
    "accuracy",
    "auc",
    "correlation",
    "f1",
    "recognition_scores",
    "spearman",
]

_DEFAULT_BOOT = 1000


def _labels_probs(labels: object, probs: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise DataError(f"labels and probs must be 1-D of equal length; received shapes {y.shape} and {p.shape}.")
    if y.size and not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 (negative) or 1 (positive); received values {np.unique(y)[:5].tolist()}.")
    if not np.isfinite(p).all() or (p.size and (p.min() < 0.0 or p.max() > 1.0)):
        raise DataError("probs must be finite probabilities in [0, 1]; received a value outside.")
    return y.astype(bool), p


def auc(labels: object, probs: object) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties 1/2.

    Args:
        labels (array-like): (N,) 0/1, 1 = the image has the finding.
        probs (array-like): (N,) p(positive) in [0, 1].

    Returns:
        float: in [0, 1]; NaN when either class is absent.

    Examples::

        >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y, p = _labels_probs(labels, probs)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(p)  # average ranks of ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not 0.0 < float(threshold) < 1.0:
        raise DataError(f"threshold must be in (0, 1); received {threshold!r}.")
    return float(threshold)


def accuracy(labels: object, probs: object, *, threshold: float = 0.5) -> float:
    """Share of images whose answer ``p >= threshold`` matches the label (NaN when N = 0).

    Examples::

        >>> accuracy([0, 1, 1], [0.2, 0.5, 0.4])
        0.6666666666666666
    """
    y, p = _labels_probs(labels, probs)
    if not y.size:
        return float("nan")
    return float(np.mean((p >= _check_threshold(threshold)) == y))


def f1(labels: object, probs: object, *, threshold: float = 0.5) -> float:
    """F1 of the positive class for the answer ``p >= threshold``: 2TP / (2TP + FP + FN).

    0.0 when there is no true positive (also when nothing is positive at all); NaN when N = 0.

    Examples::

        >>> f1([0, 1, 1, 0], [0.9, 0.8, 0.1, 0.2])
        0.5
    """
    y, p = _labels_probs(labels, probs)
    if not y.size:
        return float("nan")
    said = p >= _check_threshold(threshold)
    tp = int(np.count_nonzero(said & y))
    wrong = int(np.count_nonzero(said != y))
    return 0.0 if tp == 0 else 2.0 * tp / (2.0 * tp + wrong)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        value (float): the estimate on the full data.
        low (float): lower bound of the interval.
        high (float): upper bound.
    """

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RecognitionScores:
    """Recognition of one finding by one model.

    Attributes:
        auc (Interval): ROC AUC.
        accuracy (Interval): at the threshold.
        f1 (Interval): at the threshold.
        n_pos (int): positives.
        n_neg (int): negatives.
        threshold (float): the answer threshold on p(positive).
    """

    auc: Interval
    accuracy: Interval
    f1: Interval
    n_pos: int
    n_neg: int
    threshold: float


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])


def _check_boot(n_boot: int, ci: float) -> None:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise DataError(f"n_boot must be an integer >= 1; received {n_boot!r}.")
    if not 0.0 < ci < 1.0:
        raise DataError(f"ci must be in (0, 1); received {ci!r}.")


def _interval(value: float, replicates: np.ndarray, ci: float) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if not finite.size or not np.isfinite(value):
        return Interval(value, float("nan"), float("nan"))
    low, high = np.percentile(finite, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
    return Interval(value, float(low), float(high))


def recognition_scores(
    labels: object,
    probs: object,
    *,
    threshold: float = 0.5,
    n_boot: int = _DEFAULT_BOOT,
    ci: float = 0.95,
    seed: int = 0,
) -> RecognitionScores:
    """AUC, accuracy and F1 of p(positive), with stratified bootstrap intervals.

    Args:
        labels (array-like): (N,) 0/1 (1 = the image has the finding).
        probs (array-like): (N,) p(positive) in [0, 1].
        threshold (float): answer "Yes" when ``p >= threshold``, in (0, 1). Default: 0.5.
        n_boot (int): bootstrap replicates. Default: 1000.
        ci (float): interval coverage. Default: 0.95.
        seed (int): bootstrap seed. Default: 0.

    Returns:
        RecognitionScores: each metric's value with its interval (AUC NaN with one class).
    """
    y, p = _labels_probs(labels, probs)
    threshold = _check_threshold(threshold)
    _check_boot(n_boot, ci)
    pos, neg = p[y], p[~y]
    rng = _rng(seed, "recognition")
    values = {"auc": auc(y, p), "accuracy": accuracy(y, p, threshold=threshold), "f1": f1(y, p, threshold=threshold)}
    replicates = {name: np.full(n_boot, np.nan) for name in values}
    if y.size:
        label = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        for k in range(n_boot):
            draw = np.concatenate([pos[rng.integers(0, pos.size, pos.size)] if pos.size else pos,
                                   neg[rng.integers(0, neg.size, neg.size)] if neg.size else neg])
            replicates["auc"][k] = auc(label, draw)
            replicates["accuracy"][k] = accuracy(label, draw, threshold=threshold)
            replicates["f1"][k] = f1(label, draw, threshold=threshold)
    return RecognitionScores(
        *(_interval(values[name], replicates[name], ci) for name in ("auc", "accuracy", "f1")),
        n_pos=int(pos.size), n_neg=int(neg.size), threshold=threshold,
    )


def spearman(x: object, y: object) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks).

    Args:
        x (array-like): (N,) values.
        y (array-like): (N,) values.

    Returns:
        float: in [-1, 1]; NaN when N < 2 or either side is constant.

    Examples::

        >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
        0.8
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise DataError(f"x and y must be 1-D of equal length; received shapes {a.shape} and {b.shape}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("spearman needs finite values; drop pairs with a missing score first.")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (a.size + 1) / 2.0
    return float(np.clip((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)), -1.0, 1.0))


def correlation(
    recognition: Sequence[float],
    grounding: Sequence[float],
    *,
    n_boot: int = _DEFAULT_BOOT,
    ci: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Spearman correlation of recognition and grounding over (model, finding) pairs.

    Args:
        recognition (Sequence[float]): (P,) one recognition score per pair (e.g. AUC).
        grounding (Sequence[float]): (P,) the grounding score of the same pairs.
        n_boot (int): bootstrap replicates over the pairs. Default: 1000.
        ci (float): interval coverage. Default: 0.95.
        seed (int): bootstrap seed. Default: 0.

    Returns:
        Interval: rho and its interval (replicates with a constant side are skipped).
    """
    _check_boot(n_boot, ci)
    a, b = np.asarray(recognition, dtype=np.float64), np.asarray(grounding, dtype=np.float64)
    rho = spearman(a, b)
    rng = _rng(seed, "correlation")
    replicates = np.full(n_boot, np.nan)
    if a.size >= 2:
        for k in range(n_boot):
            pick = rng.integers(0, a.size, a.size)
            replicates[k] = spearman(a[pick], b[pick])
    return _interval(rho, replicates, ci)
