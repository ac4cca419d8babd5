"""RISE: score the answer on many randomly masked copies of the image.

Petsiuk, Das & Saenko (BMVC 2018). ``n_masks`` binary ``cells x cells`` grids are
drawn with each cell kept with probability ``p``; each grid is bilinearly up-sampled
to ``(cells + 1) * C`` pixels a side (``C = ceil(S / cells)``) and cropped to the
S x S working frame at a random offset in ``[0, C)`` on each axis, so cell edges
fall anywhere. A masked image keeps a pixel in proportion to its mask value and
fills the rest with the baseline (the same fills as occlusion). With ``P_i`` the
target probability of masked image ``i`` (``exp`` of the summed target log-probs),
``P_0`` that of the original and ``M_i`` the (S, S) mask, the saliency of a pixel is
the Monte Carlo estimate of ``E[P | pixel kept] / P_0``::

    saliency = sum_i (P_i / P_0) * M_i / (n_masks * p)

This is the paper's ``sum_i P_i M_i / (N p)`` divided by the constant ``P_0`` (same
ranking, same peak): the probability of a long target span (a reasoning response)
underflows float32, the ratio does not. The ratios are computed in float64.

``smooth=False`` skips the up-sampling and the shifts: each grid cell becomes one
hard tile of occlusion's tile layout. Every random choice comes from the request's
seed, so a seed fixes the map. The original image rides in the first scoring call,
so the method makes exactly ``ceil((n_masks + 1) / batch_size)`` forward calls.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import BATCH_SIZE, Method, MethodOutput, MethodRequest, Param
from cxr_attrib.perturb import FILL, baseline_image

from .occlusion import tile_mask

__all__ = ["Rise", "draw_grids", "expand_masks"]


def draw_grids(
    rng: np.random.Generator, n_masks: int, cells: int, p: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the random part of ``n_masks`` RISE masks.

    Args:
        rng (np.random.Generator): the only source of randomness.
        n_masks (int): N, masks to draw.
        cells (int): s, grid cells per side.
        p (float): probability that a cell is kept, in (0, 1).
        size (int): S, working-frame side in pixels (sets the shift range).

    Returns:
        tuple: ``grids`` (N, s, s) float32 in {0, 1} and ``shifts`` (N, 2) int64
        ``(dy, dx)`` crop offsets in ``[0, ceil(S / s))`` pixels.
    """
    grids = (rng.random((n_masks, cells, cells)) < p).astype(np.float32)
    shifts = rng.integers(0, math.ceil(size / cells), size=(n_masks, 2))
    return grids, shifts


def expand_masks(grids: np.ndarray, shifts: np.ndarray, size: int, *, smooth: bool = True) -> torch.Tensor:
    """Turn grids into working-frame masks.

    Args:
        grids (np.ndarray): (K, s, s) cell values in {0, 1}.
        shifts (np.ndarray): (K, 2) ``(dy, dx)`` crop offsets in pixels (unused when
            ``smooth`` is False).
        size (int): S, working-frame side in pixels.
        smooth (bool): bilinear up-sampling to ``(s + 1) * ceil(S / s)`` pixels, then an
            S x S crop at each offset; False: each cell is one hard tile with
            occlusion's tile edges (``floor(i * S / s)``). Default: True.

    Returns:
        torch.Tensor: (K, S, S) float32 masks in [0, 1] (1 = pixel kept).
    """
    cells = grids.shape[-1]
    if len(grids) == 0:
        return torch.zeros((0, size, size), dtype=torch.float32)
    if not smooth:
        flat = torch.from_numpy(grids.reshape(len(grids), cells * cells))
        return flat[:, torch.from_numpy(tile_mask(size, cells))]
    up = (cells + 1) * math.ceil(size / cells)
    large = F.interpolate(torch.from_numpy(grids)[:, None], size=(up, up), mode="bilinear", align_corners=False)
    large.clamp_(0.0, 1.0)  # interpolation rounding can overshoot 1 by an ulp
    return torch.stack([large[i, 0, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(shifts)])


def _check(params: Any, size: int) -> tuple[int, int, float, bool, int]:
    """Validated ``(n_masks, cells, p, smooth, batch_size)``; raises before any model pass."""

    def integer(name: str, value: Any, low: int, high: float) -> int:
        if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
            bound = f"[{low}, {int(high)}]" if math.isfinite(high) else f">= {low}"
            raise MethodParameterError(f"rise: {name} must be an integer {bound}, got {value!r}")
        return int(value)

    n_masks = integer("n_masks", params["n_masks"], 1, math.inf)
    cells = integer("cells", params["cells"], 1, size)
    batch_size = integer("batch_size", params["batch_size"], 1, math.inf)
    p = params["p"]
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 < float(p) < 1.0:
        raise MethodParameterError(
            f"rise: p (keep probability) must be a number in the open interval (0, 1), got {p!r}"
        )
    smooth = params["smooth"]
    if not isinstance(smooth, bool):
        raise MethodParameterError(f"rise: smooth must be True or False, got {smooth!r}")
    return n_masks, cells, float(p), smooth, batch_size


class Rise(Method):
    """Randomised input sampling: saliency = E[target probability | pixel kept] / P(original)."""

    name = "rise"
    summary = "Score the answer on N random smooth masks; saliency = sum(P * mask) / (N * p), P / P(original)."
    reference = (
        "Petsiuk, Das & Saenko, 'RISE: Randomized Input Sampling for Explanation of Black-box "
        "Models', BMVC 2018, https://arxiv.org/abs/1806.07421"
    )
    defaults = MappingProxyType(
        {"n_masks": 500, "cells": 8, "p": 0.5, "smooth": True, "fill": "zero", "batch_size": 64}
    )
    param_types = MappingProxyType({
        "n_masks": Param(int, low=1, memory=8.0, doc="random masks scored (each held as (S, S) float32)"),
        "cells": Param(int, low=1, high="size", doc="mask grid cells per side before up-sampling"),
        "p": Param(float, low=0.0, high=1.0, low_open=True, high_open=True, doc="keep probability of a cell"),
        "smooth": Param(bool, doc="bilinear up-sampling with random shifts (False: nearest, no shift)"),
        "fill": FILL,
        "batch_size": BATCH_SIZE,
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        n_masks, cells, p, smooth, batch_size = _check(request.params, request.size)
        original = np.array(request.image, dtype=np.float32)  # a writable copy
        try:
            baseline = torch.from_numpy(baseline_image(original, request.params["fill"]))
        except ValueError as error:
            raise MethodParameterError(f"rise: fill: {error}") from None
        grids, shifts = draw_grids(request.rng(), n_masks, cells, p, request.size)
        difference = torch.from_numpy(original) - baseline
        saliency = np.zeros((request.size, request.size), dtype=np.float64)
        # Slot 0 is the original image, slots 1..N the masked ones, batch_size slots per call.
        for start in range(0, n_masks + 1, batch_size):
            first, stop = max(start - 1, 0), min(start + batch_size, n_masks + 1) - 1
            masks = expand_masks(grids[first:stop], shifts[first:stop], request.size, smooth=smooth)
            images = list((baseline + difference * masks).numpy())
            if start == 0:
                images.insert(0, original)
            logprobs = request.adapter.score(images, request.query).sum(-1).double().numpy()
            if start == 0:
                original_logprob, logprobs = float(logprobs[0]), logprobs[1:]
            ratios = np.exp(logprobs - original_logprob)  # P_i / P_0, float64: no underflow on long spans
            saliency += np.tensordot(ratios, masks.double().numpy(), axes=1)
        heat = (saliency / (n_masks * p)).astype(np.float32)
        return MethodOutput(
            heatmap=heat,
            unit="E[target probability | pixel kept] / target probability of the original",
            info={"original_logprob": original_logprob},
        )


@hookimpl
def register_methods(register) -> None:
    register(Rise)
