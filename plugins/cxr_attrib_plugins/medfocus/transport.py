"""Entropic unbalanced optimal transport between two working-frame images (POT).

An image becomes a discrete measure on a ``g x g`` grid: the grey image is min-max
scaled to [0, 1], averaged over the cells of the grid, the cells brighter than
``threshold`` (at most ``max_cells`` of the strongest) form the support, and their
intensities, normalised to sum 1, are the masses. The cost between two cells is
their squared distance in grid cells divided by the 90th percentile of all
support-to-support squared distances, so ``epsilon`` is relative to the image's
extent. :func:`solve_uot` calls POT's ``ot.unbalanced.sinkhorn_unbalanced`` with the
negative-entropy regulariser (``reg_type="entropy"``; POT's default ``"kl"`` solves
another problem) and KL marginal penalties ``marginal`` on both sides; POT's
log-domain (stabilised) solver also runs when ``epsilon`` is small or the scaling
solver fails. With ``device`` set the solve runs on POT's torch backend there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import ot
import torch

from cxr_attrib.errors import CxrAttribError, MethodParameterError

__all__ = [
    "MAX_SUPPORT",
    "STABILISED_BELOW",
    "SUPPORT_THRESHOLD",
    "GridMeasure",
    "NoSupportError",
    "Solver",
    "UOTResult",
    "cell_edges",
    "cost_matrix",
    "downsample",
    "grid_measure",
    "solve_uot",
]

SUPPORT_THRESHOLD = 0.02
"""A cell is in the support when its mean min-max grey level exceeds this."""

MAX_SUPPORT = 4000
"""At most this many of the strongest cells form the support."""

STABILISED_BELOW = 0.02
"""``solver="auto"`` switches to POT's log-domain solver when ``epsilon`` is below this."""

Solver = Literal["auto", "sinkhorn", "sinkhorn_stabilized"]
_SOLVERS = ("auto", "sinkhorn", "sinkhorn_stabilized")
_EXPECTED_NOTES = ("If reg_type = entropy", "Numerical errors", "did not converge")


class NoSupportError(CxrAttribError, ValueError):
    """An image with no cell above the support threshold (blank, constant or all black)."""


def cell_edges(size: int, grid: int) -> npt.NDArray[np.intp]:
    """Pixel edges of ``grid`` cells tiling ``size`` pixels: cell ``i`` is ``[e[i], e[i+1])``.

    Args:
        size (int): side ``S`` of the working frame, pixels.
        grid (int): cells per side, ``1 <= grid <= S``.

    Returns:
        np.ndarray: ``(grid + 1,)`` int, ``e[i] = floor(i * S / grid)``.

    Examples::

        >>> cell_edges(224, 14)[:3].tolist()
        [0, 16, 32]
    """
    return (np.arange(grid + 1) * size) // grid


def downsample(values: npt.ArrayLike, grid: int) -> npt.NDArray[np.float64]:
    """Area mean of a square map over the cells of a ``grid x grid`` partition.

    Args:
        values (array-like): ``(S, S)`` map (a grey image or a 0/1 mask).
        grid (int): cells per side, ``1 <= grid <= S``.

    Returns:
        np.ndarray: ``(grid, grid)`` float64; a mask becomes the covered fraction of
        each cell.

    Examples::

        >>> downsample(np.arange(16.0).reshape(4, 4), 2).tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    array = np.asarray(values, dtype=np.float64)
    edges = cell_edges(array.shape[0], grid)
    sums = np.add.reduceat(np.add.reduceat(array, edges[:-1], axis=0), edges[:-1], axis=1)
    widths = np.diff(edges).astype(np.float64)
    return sums / np.outer(widths, widths)


@dataclass(frozen=True, eq=False)
class GridMeasure:
    """An image as a discrete measure on a grid.

    Attributes:
        grid (int): cells per side ``g``.
        cells (np.ndarray): ``(N,)`` int flat cell indices ``row * g + col``, ascending.
        mass (np.ndarray): ``(N,)`` float64 masses, sum 1.
    """

    grid: int
    cells: npt.NDArray[np.intp]
    mass: npt.NDArray[np.float64]

    @property
    def positions(self) -> npt.NDArray[np.float64]:
        """``(N, 2)`` float64 ``(row, col)`` of each support cell, in grid cells."""
        return np.stack(np.divmod(self.cells, self.grid), axis=1).astype(np.float64)


def grid_measure(
    image: npt.ArrayLike,
    grid: int,
    *,
    threshold: float = SUPPORT_THRESHOLD,
    max_cells: int = MAX_SUPPORT,
) -> GridMeasure:
    """The measure of a working-frame image on a ``grid x grid`` grid.

    Args:
        image (array-like): ``(S, S)`` grey working-frame image (any range; min-max
            scaled here).
        grid (int): cells per side, ``1 <= grid <= S``.
        threshold (float): support threshold on the cell means in [0, 1].
            Default: 0.02.
        max_cells (int): keep at most this many strongest cells. Default: 4000.

    Returns:
        GridMeasure: support cells and their normalised masses.

    Raises:
        NoSupportError: a constant image or no cell above ``threshold``.
    """
    grey = np.asarray(image, dtype=np.float64)
    low, high = float(grey.min()), float(grey.max())
    if not high > low:
        raise NoSupportError(f"the image is constant (every pixel {low:g}); optimal transport needs "
                             "an image with some content (a blank or all-black image has no support)")
    means = downsample((grey - low) / (high - low), grid).ravel()
    cells = np.flatnonzero(means > threshold)
    if cells.size == 0:
        raise NoSupportError(f"no {grid}x{grid} cell of the image is brighter than {threshold} after "
                             "min-max scaling; the image has no support for optimal transport")
    if cells.size > max_cells:
        strongest = np.argsort(-means[cells], kind="stable")[:max_cells]
        cells = np.sort(cells[strongest])
    weights = means[cells]
    return GridMeasure(grid, cells, weights / weights.sum())


def cost_matrix(source: GridMeasure, target: GridMeasure) -> npt.NDArray[np.float64]:
    """Squared grid distances between support cells over their 90th percentile.

    Args:
        source (GridMeasure): ``Ns`` cells.
        target (GridMeasure): ``Nt`` cells on the same grid.

    Returns:
        np.ndarray: ``(Ns, Nt)`` float64, unitless; its 90th percentile is 1 (or the
        raw squared distances when that percentile is 0).
    """
    squared = ot.dist(source.positions, target.positions, metric="sqeuclidean")
    scale = float(np.quantile(squared, 0.9))
    return squared / scale if scale > 0 else squared


@dataclass(frozen=True, eq=False)
class UOTResult:
    """A solved unbalanced transport problem.

    Attributes:
        plan (np.ndarray): ``(Ns, Nt)`` float64 plan ``P`` (mass moved from source
            cell i to target cell j).
        cost (float): transport cost ``<P, C>`` (unitless, cost normalised as above).
        objective (float): full objective ``<P, C> + eps * sum(P log P - P)
            + lam * KL(P 1 | a) + lam * KL(P^T 1 | b)`` with generalised KL.
        solver (str): the POT method that produced the plan.
        error (float): the solver's last relative change of its scalings.
        converged (bool): ``error`` below the tolerance.
        backend (str): ``"numpy"`` or ``"torch:<device>"``.
    """

    plan: npt.NDArray[np.float64]
    cost: float
    objective: float
    solver: str
    error: float
    converged: bool
    backend: str

    def info(self) -> dict[str, Any]:
        """The scalar facts as a JSON-safe dict."""
        return {"solver": self.solver, "error": self.error, "converged": self.converged,
                "backend": self.backend, "cost": self.cost, "objective": self.objective,
                "mass": float(self.plan.sum())}


def check_uot_params(epsilon: float, marginal: float, max_iter: int, tol: float, solver: str) -> None:
    """Validate solver settings before any work.

    Raises:
        MethodParameterError: naming the parameter, its value and the valid range.
    """
    for name, value in (("epsilon", epsilon), ("marginal", marginal), ("tol", tol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            value > 0 and (math.isfinite(value) or name == "marginal")
        ):
            raise MethodParameterError(f"{name} must be a positive number, got {value!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise MethodParameterError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if solver not in _SOLVERS:
        raise MethodParameterError(f"solver must be one of {', '.join(_SOLVERS)}, got {solver!r}")


def solve_uot(
    source: GridMeasure,
    target: GridMeasure,
    *,
    epsilon: float = 0.05,
    marginal: float = 0.1,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: Solver = "auto",
    device: str | torch.device | None = None,
) -> UOTResult:
    """Entropic UOT from ``source`` to ``target`` with POT (``reg_type="entropy"``).

    Args:
        source (GridMeasure): masses ``a`` (sum 1).
        target (GridMeasure): masses ``b`` (sum 1), same grid.
        epsilon (float): entropic regularisation, in units of the normalised cost.
            Default: 0.05.
        marginal (float): KL penalty on both marginals (``reg_m``); ``inf`` gives
            balanced transport. Default: 0.1.
        max_iter (int): Sinkhorn iterations at most. Default: 500.
        tol (float): stop when the scalings change by less (relative). Default: 1e-6.
        solver (str): ``"sinkhorn"`` (scaling), ``"sinkhorn_stabilized"`` (log-domain)
            or ``"auto"``: for ``epsilon`` >= 0.02 the scaling solver, plus the
            log-domain one when it does not converge cleanly; below 0.02 both. When
            two run, the plan with the lower objective is kept. Default: "auto".
        device (str | torch.device | None): run on POT's torch backend on this device
            (float64); None runs NumPy. Default: None.

    Returns:
        UOTResult: the plan (NumPy) and its cost, objective and solver facts.

    Examples::

        >>> m = grid_measure(np.eye(8), 8)
        >>> result = solve_uot(m, m)
        >>> result.plan.shape, result.solver
        ((8, 8), 'sinkhorn')
    """
    check_uot_params(epsilon, marginal, max_iter, tol, solver)
    arrays = (source.mass, target.mass, cost_matrix(source, target))
    backend = "numpy"
    if device is not None:
        arrays = tuple(torch.as_tensor(x, dtype=torch.float64, device=device) for x in arrays)
        backend = f"torch:{arrays[0].device}"
    if solver != "auto":
        return _attempt(*arrays, epsilon, marginal, solver, max_iter, tol, backend)
    first = "sinkhorn_stabilized" if epsilon < STABILISED_BELOW else "sinkhorn"
    result = _attempt(*arrays, epsilon, marginal, first, max_iter, tol, backend)
    if first == "sinkhorn" and result.converged:
        return result
    # POT's log-domain unbalanced solver can drift once it absorbs its scalings (a known
    # upstream POT bug), even to a plan it reports as converged, and the scaling solver can
    # overflow at small epsilon: run the other one too and keep the plan with the
    # lower objective (the problem is convex, the better plan is the closer one).
    other = _attempt(*arrays, epsilon, marginal, "sinkhorn" if first != "sinkhorn" else
                     "sinkhorn_stabilized", max_iter, tol, backend)
    return min((result, other), key=lambda r: r.objective if math.isfinite(r.objective) else math.inf)


def _attempt(a: Any, b: Any, cost: Any, epsilon: float, marginal: float, method: str, max_iter: int,
             tol: float, backend: str) -> UOTResult:
    """One POT solve and its facts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan, log = ot.unbalanced.sinkhorn_unbalanced(
            a, b, cost, reg=epsilon, reg_m=(marginal, marginal), method=method, reg_type="entropy",
            numItermax=max_iter, stopThr=tol, log=True,
        )
    messages = [str(w.message) for w in caught]
    for w, text in zip(caught, messages):  # pass on anything unexpected; these notes are by design
        if not any(note in text for note in _EXPECTED_NOTES):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    nx = ot.backend.get_backend(plan)
    values = np.asarray(nx.to_numpy(plan), dtype=np.float64)
    finite = bool(np.isfinite(values).all())
    objective = float(log["cost"] + epsilon * nx.sum(plan * nx.log(plan + 1e-300) - plan)
                      + _kl(nx, nx.sum(plan, 1), a, marginal) + _kl(nx, nx.sum(plan, 0), b, marginal))
    error = float(log["err"][-1]) if log["err"] else float("nan")
    numerical = any("Numerical errors" in text for text in messages)
    return UOTResult(
        plan=values,
        cost=float(log["cost"]),
        objective=objective if finite else math.nan,
        solver=method,
        error=error,
        converged=finite and not numerical and error < tol,
        backend=backend,
    )


def _kl(nx: Any, p: Any, q: Any, weight: float) -> Any:
    """``weight * KL(p | q)``, generalised (with the mass term); 0 when ``weight`` is inf."""
    return 0.0 if math.isinf(weight) else weight * nx.kl_div(p, q, mass=True)
