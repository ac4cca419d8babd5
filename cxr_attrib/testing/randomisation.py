"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018).

An explanation of a model's answer should depend on the model. The check compares a
method's map on a trained model with its map on copies whose language-model decoder
layers are re-initialised **cascading from the top**: depth ``k`` re-draws the last
``k`` decoder layers (depth ``L`` = all of them). If the maps stay rank-correlated
once every layer is random, the method shows the image, not the model.

Re-initialisation: every parameter tensor of a re-drawn layer is replaced by i.i.d.
Gaussian values with the trained tensor's own mean and standard deviation (a tensor
that is constant, such as a norm scale at 1, therefore keeps its value). The scale of
each layer is preserved and everything it learnt is destroyed. Layer ``i`` is drawn
from a generator seeded with ``(seed, i)``, so depth ``k + 1`` is depth ``k`` plus one
more random layer. The adapter passed in is deep-copied and never modified.

Example::

    >>> curve = randomisation_curve(adapter, "occlusion", items)   # doctest: +SKIP
    >>> curve                                                      # doctest: +SKIP
    {0: 1.0, 1: 0.62, 2: 0.31, 3: 0.12, 4: 0.05}
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ..adapter import Adapter, PassCounter
from ..api import attribute
from ..errors import MethodParameterError

__all__ = ["randomised_copy", "rank_correlation", "randomisation_curve"]


def randomised_copy(adapter: Adapter, depth: int, *, seed: int = 0) -> Adapter:
    """A deep copy of ``adapter`` whose last ``depth`` decoder layers are re-drawn.

    Args:
        adapter (Adapter): the trained model (left untouched).
        depth (int): how many decoder layers, counted from the top, to re-initialise;
            0 <= depth <= number of layers.
        seed (int): seed of the new weights. Default: 0.

    Returns:
        Adapter: the randomised copy, with a fresh pass counter.

    Raises:
        MethodParameterError: ``depth`` out of range.
    """
    total = len(adapter.decoder_layers())
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= total:
        raise MethodParameterError(f"depth must be an integer in [0, {total}] (decoder layers), got {depth!r}")
    clone = copy.deepcopy(adapter)
    clone.counter = PassCounter()
    layers = list(clone.decoder_layers())
    with torch.no_grad():
        for index in range(total - depth, total):
            rng = np.random.default_rng([seed, index])
            for param in layers[index].parameters():
                trained = param.detach().double().cpu()
                spread = float(trained.std()) if trained.numel() > 1 else 0.0
                fresh = rng.normal(float(trained.mean()), spread, size=tuple(param.shape))
                param.copy_(torch.from_numpy(fresh).to(param.dtype))
    return clone


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps of equal shape (flattened).

    A constant map carries no ranking, so its correlation with anything is 0.0 (where
    :func:`scipy.stats.spearmanr` would return NaN).

    Args:
        first (np.ndarray): (H, W) map.
        second (np.ndarray): (H, W) map.

    Returns:
        float: in [-1, 1].
    """
    a, b = np.ravel(first), np.ravel(second)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {np.shape(first)} vs {np.shape(second)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomisation_curve(
    adapter: Adapter,
    method: str,
    items: Iterable[tuple[np.ndarray, str]],
    *,
    params: Mapping[str, Any] | None = None,
    depths: Sequence[int] | None = None,
    answer: str = "Yes",
    seed: int = 0,
    compare_seed: int | None = None,
) -> dict[int, float]:
    """Mean rank correlation between the trained model's maps and the randomised models'.

    Args:
        adapter (Adapter): the trained model (left untouched).
        method (str): a registered method that uses the model.
        items (Iterable[tuple[np.ndarray, str]]): (image (H, W) uint8, question) pairs.
        params (Mapping | None): the method's hyper-parameters. Default: its defaults.
        depths (Sequence[int] | None): cascade depths to measure. Default: every depth
            from 0 (the trained model itself) to the number of decoder layers.
        answer (str): the teacher-forced answer explained on every model. Default: "Yes".
        seed (int): seed of the method and of the new weights. Default: 0.
        compare_seed (int | None): the method's seed on the compared models; None uses
            ``seed``, so a stochastic method draws the same samples for both maps. With
            another seed, depth 0 measures how well the method agrees with itself across
            seeds on the trained model. Default: None.

    Returns:
        dict[int, float]: depth -> mean Spearman correlation over the items.
    """
    params = dict(params or {})
    items = list(items)
    depths = list(range(len(adapter.decoder_layers()) + 1)) if depths is None else list(depths)

    other = seed if compare_seed is None else compare_seed

    def maps(model: Adapter, method_seed: int) -> list[np.ndarray]:
        return [attribute(model, image, question, method=method, answer=answer, seed=method_seed, **params).heatmap
                for image, question in items]

    trained = maps(adapter, seed)
    curve = {}
    for depth in depths:
        model = adapter if depth == 0 else randomised_copy(adapter, depth, seed=seed)
        randomised = trained if depth == 0 and other == seed else maps(model, other)
        curve[depth] = float(np.mean([rank_correlation(a, b) for a, b in zip(trained, randomised)]))
    return curve
