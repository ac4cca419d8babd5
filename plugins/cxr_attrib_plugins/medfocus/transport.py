"""Entropic unbalanced optimal transport between two working-frame images.

An image becomes a discrete measure on a ``g x g`` grid: the grey image is min-max
scaled to [0, 1], averaged over the cells of the grid, the cells brighter than
``threshold`` (optionally only the ``max_cells`` strongest) form the support, and their
intensities, normalised to sum 1, are the masses. The cost between two cells is
their squared distance in grid cells divided by the 90th percentile of all
support-to-support squared distances, so ``epsilon`` is relative to the image's
extent. :func:`solve_uot` solves entropic UOT (negative-entropy regulariser, KL
marginal penalties ``marginal`` on both sides, POT's ``sinkhorn_unbalanced`` with
``reg_type="entropy"``) with the separable-kernel solver of :mod:`.separable` by
default (the cost is a grid's squared distance, so the kernel factorises), in the
log domain for small ``epsilon`` or when the scaling iterations overflow. POT stays
the reference (``solver="pot"``) for checks. With ``device`` set the solve runs on
torch there.

A solve that did not converge, overflowed or produced a degenerate plan (no mass
moved, or a non-finite one) says so in :meth:`UOTResult.problem`; callers record it
as a fallback, never as a normal result.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch

from cxr_attrib.errors import CxrAttribError, MethodParameterError

from .separable import solve_separable

__all__ = [
    "DEGENERATE_MASS",
    "MAX_SUPPORT",
    "MIN_EPSILON",
    "STABILISED_BELOW",
    "SUPPORT_THRESHOLD",
    "DensePlan",
    "GridMeasure",
    "NoSupportError",
    "Solver",
    "TransportFailure",
    "TransportPlan",
    "UOTResult",
    "cell_edges",
    "cost_matrix",
    "downsample",
    "grid_measure",
    "grid_scale",
    "solve_uot",
]

SUPPORT_THRESHOLD = 0.02
"""A cell is in the support when its mean min-max grey level exceeds this."""

MAX_SUPPORT = 4000
"""POT's dense solvers (``solver="pot"`` and its methods) refuse a support of more cells
(their cost matrix is ``Ns x Nt`` float64: 128 MB at this size); the separable solver
has no limit."""

STABILISED_BELOW = 0.02
"""``solver="auto"`` solves in the log domain when ``epsilon`` is below this."""

MIN_EPSILON = 1e-3
"""The smallest supported ``epsilon``: below it the kernel of a typical grid underflows
everywhere but the diagonal and the iterations need far more than any useful
``max_iter``; it is refused."""

DEGENERATE_MASS = 1e-6
"""A plan moving less than this share of the smaller measure's mass is degenerate."""

Solver = Literal["auto", "separable", "separable_log", "pot", "sinkhorn", "sinkhorn_stabilized"]
_SOLVERS = ("auto", "separable", "separable_log", "pot", "sinkhorn", "sinkhorn_stabilized")
_POT_METHODS = ("sinkhorn", "sinkhorn_stabilized")
_EXPECTED_NOTES = ("If reg_type = entropy", "Numerical errors", "did not converge")


class NoSupportError(CxrAttribError, ValueError):
    """An image with no cell above the support threshold (blank, constant or all black)."""


class TransportFailure(CxrAttribError, RuntimeError):
    """No usable transport plan: the solve did not converge, overflowed or is degenerate."""


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
    max_cells: int | None = None,
) -> GridMeasure:
    """The measure of a working-frame image on a ``grid x grid`` grid.

    Args:
        image (array-like): ``(S, S)`` grey working-frame image (any range; min-max
            scaled here).
        grid (int): cells per side, ``1 <= grid <= S``.
        threshold (float): support threshold on the cell means in [0, 1].
            Default: 0.02.
        max_cells (int | None): keep at most this many strongest cells. Default: None
            (every cell above the threshold).

    Returns:
        GridMeasure: support cells and their normalised masses.

    Raises:
        NoSupportError: a constant or non-finite image, or no cell above ``threshold``.
    """
    grey = np.asarray(image, dtype=np.float64)
    if not np.isfinite(grey).all():
        raise NoSupportError("the image contains NaN or infinite values; optimal transport needs finite pixels")
    low, high = float(grey.min()), float(grey.max())
    if not high > low:
        raise NoSupportError(f"the image is constant (every pixel {low:g}); optimal transport needs "
                             "an image with some content (a blank or all-black image has no support)")
    means = downsample((grey - low) / (high - low), grid).ravel()
    cells = np.flatnonzero(means > threshold)
    if cells.size == 0:
        raise NoSupportError(f"no {grid}x{grid} cell of the image is brighter than {threshold} after "
                             "min-max scaling; the image has no support for optimal transport")
    if max_cells is not None and cells.size > max_cells:
        strongest = np.argsort(-means[cells], kind="stable")[:max_cells]
        cells = np.sort(cells[strongest])
    weights = means[cells]
    return GridMeasure(grid, cells, weights / weights.sum())


def _check_same_grid(source: GridMeasure, target: GridMeasure) -> None:
    if source.grid != target.grid:
        raise MethodParameterError(f"the two measures are on different grids ({source.grid}x{source.grid} and "
                                   f"{target.grid}x{target.grid}); transport needs one grid")


def cost_matrix(source: GridMeasure, target: GridMeasure) -> npt.NDArray[np.float64]:
    """Squared grid distances between support cells over their 90th percentile.

    Args:
        source (GridMeasure): ``Ns`` cells.
        target (GridMeasure): ``Nt`` cells on the same grid.

    Returns:
        np.ndarray: ``(Ns, Nt)`` float64, unitless; its 90th percentile is 1 (or the
        raw squared distances when that percentile is 0).

    Raises:
        MethodParameterError: the measures are on different grids.
    """
    _check_same_grid(source, target)
    squared = ((source.positions[:, None, :] - target.positions[None, :, :]) ** 2).sum(axis=-1)
    scale = float(np.quantile(squared, 0.9))
    return squared / scale if scale > 0 else squared


def grid_scale(source: GridMeasure, target: GridMeasure) -> float:
    """The divisor of :func:`cost_matrix` without forming the matrix (O(g^2 log g)).

    The number of support pairs at each offset ``(dr, dc)`` is the cross-correlation
    of the two support indicators; binned by ``dr^2 + dc^2`` it is the sorted list of
    all squared distances as (value, count) pairs, from which the 90th percentile
    follows with NumPy's linear interpolation (the same two order statistics and weight).

    Returns:
        float: the 90th percentile of the squared support distances, or 1 when it is 0.

    Raises:
        MethodParameterError: the measures are on different grids.
    """
    _check_same_grid(source, target)
    g = source.grid
    on_s, on_t = np.zeros(g * g), np.zeros(g * g)
    on_s[source.cells], on_t[target.cells] = 1.0, 1.0
    side = 1 << (2 * g - 2).bit_length()  # a power of two >= 2g - 1: the full correlation, no wrap-around
    spectrum = np.fft.rfft2(on_t.reshape(g, g), (side, side)) * np.fft.rfft2(on_s.reshape(g, g)[::-1, ::-1], (side, side))
    pairs = np.rint(np.fft.irfft2(spectrum, (side, side))[: 2 * g - 1, : 2 * g - 1]).astype(np.int64)
    offsets = np.arange(-(g - 1), g) ** 2
    counts = np.bincount((offsets[:, None] + offsets[None, :]).ravel(), weights=pairs.ravel())
    values = np.flatnonzero(counts)
    ends = np.cumsum(counts[values].astype(np.int64))
    total = int(source.cells.size) * int(target.cells.size)
    virtual = total * 0.9 + (1 + 0.9 * -1) - 1  # NumPy's index for method="linear": q (n - 1)
    low = min(int(math.floor(virtual)), total - 1)
    weight = virtual - math.floor(virtual)
    below = float(values[np.searchsorted(ends, low, side="right")])
    above = float(values[np.searchsorted(ends, min(low + 1, total - 1), side="right")])
    scale = below + (above - below) * weight if weight < 0.5 else above - (above - below) * (1 - weight)
    return scale if scale > 0 else 1.0


class TransportPlan(Protocol):
    """A plan ``P`` (rows: source support cells, columns: target support cells)."""

    def push(self, weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``(k, Ns)`` source weights -> ``(k, Nt)`` ``W P``."""

    def incoming(self) -> npt.NDArray[np.float64]:
        """``(Nt,)`` column sums."""

    def matrix(self) -> npt.NDArray[np.float64]:
        """``(Ns, Nt)`` the dense plan."""


@dataclass(frozen=True)
class DensePlan:
    """A plan held as its ``(Ns, Nt)`` matrix (POT's solvers)."""

    values: npt.NDArray[np.float64]

    def push(self, weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.asarray(weights, dtype=np.float64) @ self.values

    def incoming(self) -> npt.NDArray[np.float64]:
        return self.values.sum(axis=0)

    def matrix(self) -> npt.NDArray[np.float64]:
        return self.values


@dataclass(frozen=True, eq=False)
class UOTResult:
    """A solved unbalanced transport problem.

    Attributes:
        transport (TransportPlan): the plan ``P`` (mass moved from source cell i to
            target cell j); separable solves keep it factorised.
        cost (float): transport cost ``<P, C>`` (unitless, cost normalised as above).
        objective (float): full objective ``<P, C> + eps * sum(P log P - P)
            + lam * KL(P 1 | a) + lam * KL(P^T 1 | b)`` with generalised KL.
        solver (str): ``"separable"``, ``"separable_log"`` or the POT method.
        error (float): the solver's last relative change of its scalings.
        converged (bool): ``error`` below the tolerance, no overflow, finite plan.
        backend (str): ``"numpy"`` or ``"torch:<device>"``.
        mass (float): total mass of the plan.
        iterations (int): iterations run (0 when the solver does not say).
        notes (tuple[str, ...]): how the solver got there (e.g. the log-domain path
            taking over after the scaling iterations overflowed).
        tol (float): the stopping tolerance it was given.
    """

    transport: TransportPlan = field(repr=False)
    cost: float
    objective: float
    solver: str
    error: float
    converged: bool
    backend: str
    mass: float
    iterations: int = 0
    notes: tuple[str, ...] = ()
    tol: float = 1e-6

    @property
    def plan(self) -> npt.NDArray[np.float64]:
        """``(Ns, Nt)`` float64 the dense plan (formed on demand for a separable solve)."""
        return self.transport.matrix()

    def problem(self, smaller_mass: float = 1.0) -> str | None:
        """Why the plan must not be used as a normal result, or None.

        Args:
            smaller_mass (float): the smaller of the two measures' masses (1 for
                :func:`grid_measure`). Default: 1.0.
        """
        if not (math.isfinite(self.mass) and math.isfinite(self.cost)):
            return f"{self.solver} gave a non-finite plan (mass {self.mass!r})"
        if not self.converged:
            why = "; ".join(self.notes) if self.notes else (
                f"stopping-rule value {self.error:.3g} after {self.iterations} iterations (tol {self.tol:g})")
            return f"{self.solver} did not converge: {why}"
        if not self.mass > DEGENERATE_MASS * smaller_mass:
            return f"{self.solver} gave a degenerate plan: it moves {self.mass:.3g} of mass (no transport)"
        return None

    def info(self) -> dict[str, Any]:
        """The scalar facts as a JSON-safe dict."""
        facts = {"solver": self.solver, "error": _finite_or_none(self.error), "converged": self.converged,
                 "backend": self.backend, "cost": _finite_or_none(self.cost),
                 "objective": _finite_or_none(self.objective), "mass": _finite_or_none(self.mass),
                 "iterations": self.iterations}
        return facts | ({"notes": list(self.notes)} if self.notes else {})


_OVERFLOW = "the scaling iterations overflowed; kept the last finite scalings"
_TOOK_OVER = "the scaling iterations overflowed; the log-domain iterations took over"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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
    if epsilon < MIN_EPSILON:
        raise MethodParameterError(f"epsilon {epsilon!r} is below what the solver supports; the supported range "
                                   f"is [{MIN_EPSILON:g}, inf) (normalised cost units)")
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
    """Entropic UOT from ``source`` to ``target`` (POT's ``reg_type="entropy"`` problem).

    Args:
        source (GridMeasure): masses ``a`` (sum 1).
        target (GridMeasure): masses ``b`` (sum 1), same grid.
        epsilon (float): entropic regularisation, in units of the normalised cost,
            at least :data:`MIN_EPSILON`. Default: 0.05.
        marginal (float): KL penalty on both marginals (``reg_m``); ``inf`` gives
            balanced transport. Default: 0.1.
        max_iter (int): Sinkhorn iterations at most. Default: 500.
        tol (float): POT's stopping threshold on the change of the scalings. Default: 1e-6.
        solver (str): ``"auto"``: the separable solver, in the log domain when
            ``epsilon`` < 0.02 or when the scaling iterations overflow (recorded in
            ``notes``); ``"separable"`` / ``"separable_log"``: that variant only;
            ``"pot"``: POT's dense solvers (the scaling one, plus the log-domain one
            when it does not converge cleanly or ``epsilon`` < 0.02, keeping the
            lower objective); ``"sinkhorn"`` / ``"sinkhorn_stabilized"``: that POT
            method only. Default: "auto".
        device (str | torch.device | None): run on torch on this device (float64);
            None runs NumPy. Default: None.

    Returns:
        UOTResult: the plan and its cost, objective and solver facts.

    Raises:
        MethodParameterError: a setting out of range, measures on different grids, or a POT
            solver on supports larger than :data:`MAX_SUPPORT`.

    Examples::

        >>> m = grid_measure(np.eye(8), 8)
        >>> result = solve_uot(m, m)
        >>> result.plan.shape, result.solver
        ((8, 8), 'separable')
    """
    check_uot_params(epsilon, marginal, max_iter, tol, solver)
    _check_same_grid(source, target)
    where = None if device is None else torch.device(device)
    settings = (epsilon, marginal, max_iter, tol)
    if solver in ("separable", "separable_log"):
        return _separable(source, target, *settings, solver == "separable_log", where)
    if solver == "auto":
        result = _separable(source, target, *settings, epsilon < STABILISED_BELOW, where)
        if _OVERFLOW not in result.notes:
            return result
        logged = _separable(source, target, *settings, True, where)
        return replace(logged, notes=logged.notes + (_TOOK_OVER,))
    largest = max(source.cells.size, target.cells.size)
    if largest > MAX_SUPPORT:
        raise MethodParameterError(f"solver={solver!r} (POT, dense) supports at most {MAX_SUPPORT} support cells per "
                                   f"image, got {largest} (grid {source.grid}x{source.grid}); use solver='auto'")
    arrays = (source.mass, target.mass, cost_matrix(source, target))
    backend = "numpy"
    if where is not None:
        arrays = tuple(torch.as_tensor(x, dtype=torch.float64, device=where) for x in arrays)
        backend = f"torch:{arrays[0].device}"
    if solver in _POT_METHODS:
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


def _separable(source: GridMeasure, target: GridMeasure, epsilon: float, marginal: float, max_iter: int, tol: float,
               log_domain: bool, device: torch.device | None) -> UOTResult:
    """One separable solve and its facts."""
    plan, facts = solve_separable(source.grid, source.cells, source.mass, target.cells, target.mass,
                                  grid_scale(source, target), epsilon=epsilon, marginal=marginal, max_iter=max_iter,
                                  tol=tol, log_domain=log_domain, device=device)
    with np.errstate(all="ignore"):
        cost, objective = plan.objective(source.mass, target.mass, marginal)
        mass = float(plan.incoming().sum())
    finite = math.isfinite(objective) and math.isfinite(mass)
    notes = (_OVERFLOW,) if facts.numerical else ()
    return UOTResult(
        transport=plan, cost=cost, objective=objective if finite else math.nan,
        solver="separable_log" if log_domain else "separable", error=facts.error,
        converged=finite and not facts.numerical and facts.error < tol,
        backend="numpy" if device is None else f"torch:{device}", mass=mass, iterations=facts.iterations,
        notes=notes, tol=tol,
    )


def _attempt(a: Any, b: Any, cost: Any, epsilon: float, marginal: float, method: str, max_iter: int,
             tol: float, backend: str) -> UOTResult:
    """One POT solve and its facts (POT is imported here: only the reference path needs it)."""
    import ot

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
        transport=DensePlan(values),
        cost=float(log["cost"]),
        objective=objective if finite else math.nan,
        solver=method,
        error=error,
        converged=finite and not numerical and error < tol,
        backend=backend,
        mass=float(values.sum()),
        iterations=len(log["err"]),
        notes=("POT: numerical errors (overflow); kept the last finite scalings",) if numerical else (),
        tol=tol,
    )


def _kl(nx: Any, p: Any, q: Any, weight: float) -> Any:
    """``weight * KL(p | q)``, generalised (with the mass term); 0 when ``weight`` is inf."""
    return 0.0 if math.isinf(weight) else weight * nx.kl_div(p, q, mass=True)
