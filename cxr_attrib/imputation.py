"""Noisy linear imputation: fill removed pixels from their neighbours (ROAD).

Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods" (ICML 2022) remove pixels without leaving the
image distribution: each removed pixel becomes the weighted mean of its 8 neighbours
(weight 1/6 for the 4 direct neighbours, 1/12 for the diagonals, renormalised where
a neighbour does not exist), which for all removed pixels together is one sparse
linear system, then small Gaussian noise is added so the filled region carries no
smooth-shape signal of its own. Known pixels are the kept pixels inside ``valid``
(the image content; padding is neither known nor filled). A connected removed
region with no known neighbour at all (e.g. the whole content removed) takes the
mean of the known content, or of the original content when nothing is known.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu

from .errors import DataError

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute"]

NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)  # fmt: skip
"""(row offset, column offset, weight) of the 8-neighbour stencil (Rong et al. 2022)."""


def _check(image: np.ndarray, removed: np.ndarray, valid: np.ndarray) -> None:
    if image.ndim != 2:
        raise DataError(f"noisy linear imputation needs an (H, W) image, got shape {image.shape}")
    for name, mask in (("removed", removed), ("valid", valid)):
        if mask.shape != image.shape or mask.dtype != bool:
            raise DataError(f"{name} must be a bool mask of shape {image.shape}, got {mask.dtype} {mask.shape}")


def _anchored(unknown: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Unknown pixels whose 8-connected unknown region touches a known pixel."""
    labels, count = ndimage.label(unknown, structure=np.ones((3, 3), dtype=bool))
    touching = ndimage.binary_dilation(known, structure=np.ones((3, 3), dtype=bool)) & unknown
    good = np.zeros(count + 1, dtype=bool)
    good[np.unique(labels[touching])] = True
    good[0] = False
    return good[labels]


def _solve(image: np.ndarray, unknown: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Values of the ``unknown`` pixels (row-major order) from the linear system."""
    height, width = image.shape
    index = np.full(image.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(unknown)
    n = rows.size
    index[rows, cols] = np.arange(n)
    diagonal = np.zeros(n)
    rhs = np.zeros(n)
    a_rows, a_cols, a_vals = [], [], []
    for dr, dc, weight in NEIGHBOUR_WEIGHTS:
        nr, nc = rows + dr, cols + dc
        inside = (nr >= 0) & (nr < height) & (nc >= 0) & (nc < width)
        here, nr, nc = np.flatnonzero(inside), nr[inside], nc[inside]
        is_known, is_unknown = known[nr, nc], unknown[nr, nc]
        diagonal[here[is_known | is_unknown]] += weight
        np.add.at(rhs, here[is_known], weight * image[nr[is_known], nc[is_known]])
        a_rows.append(here[is_unknown])
        a_cols.append(index[nr[is_unknown], nc[is_unknown]])
        a_vals.append(np.full(int(is_unknown.sum()), -weight))
    a_rows.append(np.arange(n))
    a_cols.append(np.arange(n))
    a_vals.append(diagonal)
    matrix = sparse.csc_matrix(
        (np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(n, n)
    )
    # The matrix is symmetric (w_ij = w_ji): a symmetric fill-reducing order halves the
    # factorisation time of block-shaped holes against the default COLAMD.
    factors = splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    return np.atleast_1d(factors.solve(rhs))


def noisy_linear_impute(
    image: npt.ArrayLike,
    removed: npt.ArrayLike,
    *,
    valid: npt.ArrayLike | None = None,
    noise: float = 0.01,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Replace the ``removed`` pixels by the noisy linear imputation of the rest.

    Args:
        image (array-like): (H, W) float image (e.g. a working-frame image in [0, 1]).
        removed (array-like): (H, W) bool, True on the pixels to fill.
        valid (array-like | None): (H, W) bool, True where the image has content;
            pixels outside it are never filled and never used. Default: None (all).
        noise (float): standard deviation of the Gaussian noise added to each filled
            pixel, in image units; 0 gives the noiseless solution. Default: 0.01.
        rng (np.random.Generator | None): noise source. Default: None
            (``np.random.default_rng(0)``).

    Returns:
        np.ndarray: (H, W) float32 copy of ``image`` with the removed valid pixels
        filled, clipped to [0, 1] (the working-frame range).

    Raises:
        DataError: masks of the wrong shape or dtype, or a negative ``noise``.

    >>> ramp = np.tile(np.linspace(0, 1, 8), (8, 1))
    >>> hole = np.zeros((8, 8), dtype=bool); hole[2:6, 2:6] = True
    >>> bool(np.allclose(noisy_linear_impute(ramp, hole, noise=0.0), ramp, atol=1e-6))
    True
    """
    pixels = np.asarray(image, dtype=np.float64)
    removed = np.asarray(removed)
    valid = np.ones(pixels.shape, dtype=bool) if valid is None else np.asarray(valid)
    _check(pixels, removed, valid)
    if not noise >= 0.0:
        raise DataError(f"noise must be a standard deviation >= 0, got {noise!r}")
    out = pixels.copy()
    unknown = removed & valid
    if not unknown.any():
        return out.astype(np.float32)
    known = valid & ~removed
    anchored = _anchored(unknown, known)
    if anchored.any():
        out[anchored] = _solve(pixels, anchored, known)
    loose = unknown & ~anchored
    if loose.any():
        out[loose] = pixels[known].mean() if known.any() else pixels[valid].mean()
    if noise > 0.0:
        rng = rng if rng is not None else np.random.default_rng(0)
        out[unknown] += rng.normal(0.0, noise, size=int(unknown.sum()))
    return np.clip(out, 0.0, 1.0).astype(np.float32)
