"""Entropic unbalanced OT on a grid with a separable kernel (NumPy or torch).

Two measures on the same ``g x g`` grid with the cost ``C = D / s`` between cells,
``D`` their squared distance in cells and ``s`` a scalar, have the Gibbs kernel
``K = exp(-C / eps) = k (x) k`` with the ``g x g`` factor
``k[i, i'] = exp(-(i - i')^2 / (s * eps))`` (one per axis, the same for both).
On the full grid, a vector is a ``g x g`` array ``X`` and ``K X = k X k`` (k is
symmetric): two ``g x g`` matrix products, O(g^3) time and O(g^2) memory instead of
the dense O(g^4).

The iterations are the scaling iterations of POT's ``sinkhorn_unbalanced`` with
``reg_type="entropy"`` (``u = (a / K v)^f``, ``v = (b / K^T u)^f``,
``f = lambda / (lambda + eps)``, 1 for balanced transport) started from ``u = v = 1``
on the supports, with POT's stopping rule on the same quantities (the mean of the
relative sup-norm changes of ``u`` and ``v``) and POT's overflow rule (keep the
previous scalings and stop). Off the supports ``a = b = 0``, so ``u = v = 0`` there
at every step: the grid problem has the same iterates as POT's problem on the
support cells. The log-domain variant runs the same iterations on ``log u`` and
``log v`` with a separable log-sum-exp (one axis at a time), so it never
overflows; its stopping rule is evaluated on the same ``u``, ``v`` (shifted by a
common factor, which leaves the ratio unchanged).

The plan ``P = diag(u) K diag(v)`` is never formed unless asked for
(:meth:`GridPlan.matrix`); pushing weights through it, its marginals, ``<P, C>`` and
the objective are separable too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["GridPlan", "SolveFacts", "solve_separable"]


class _Ops:
    """The few array operations the solver needs, for NumPy or torch arrays."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device

    def array(self, values: npt.ArrayLike) -> Any:
        values = np.asarray(values, dtype=np.float64)
        return values if self.device is None else torch.as_tensor(values, dtype=torch.float64, device=self.device)

    def numpy(self, values: Any) -> npt.NDArray[np.float64]:
        return values if self.device is None else values.detach().cpu().numpy()

    def exp(self, x: Any) -> Any:
        return np.exp(x) if self.device is None else torch.exp(x)

    def log(self, x: Any) -> Any:
        with np.errstate(divide="ignore"):
            return np.log(x) if self.device is None else torch.log(x)

    def where(self, cond: Any, x: Any, y: float) -> Any:
        return np.where(cond, x, y) if self.device is None else torch.where(cond, x, y)

    def amax(self, x: Any, axis: int) -> Any:
        return np.max(x, axis=axis) if self.device is None else torch.amax(x, dim=axis)

    def swap(self, x: Any) -> Any:
        """``x`` with its last two axes swapped."""
        return x.swapaxes(-1, -2) if self.device is None else x.transpose(-1, -2)

    def nonzero(self, x: Any) -> tuple[Any, ...]:
        """Index arrays of the true entries, one per axis."""
        return np.nonzero(x) if self.device is None else torch.nonzero(x, as_tuple=True)

    def max(self, x: Any) -> float:
        return float(x.max())

    def bounded(self, x: Any) -> bool:
        """No NaN and no ``+inf`` in ``x`` (``-inf``, a log-domain zero, is allowed)."""
        return float(x.max()) < math.inf

    def lse(self, x: Any, axis: int) -> Any:
        """``log(sum(exp(x), axis))`` with ``-inf`` for an all ``-inf`` slice (never NaN)."""
        top = self.amax(x, axis)
        top = self.where(top > -math.inf, top, 0.0)
        expand = np.expand_dims(top, axis) if self.device is None else top.unsqueeze(axis)
        summed = self.exp(x - expand).sum(axis) if self.device is None else self.exp(x - expand).sum(dim=axis)
        return top + self.log(summed)


@dataclass(frozen=True)
class SolveFacts:
    """How a separable solve ended.

    Attributes:
        error (float): the last stopping-rule value (NaN before one iteration ran).
        iterations (int): iterations run.
        numerical (bool): the scalings overflowed (or a target cell received
            nothing) and the previous ones were kept, as POT does.
    """

    error: float
    iterations: int
    numerical: bool


class GridPlan:
    """``P = diag(u) K diag(v)`` on a ``g x g`` grid, kept as its scalings.

    Rows of ``P`` are the source support cells, columns the target support cells (in
    the order of ``source_cells`` / ``target_cells``). With ``log_domain`` the
    scalings are stored as logarithms.
    """

    def __init__(self, ops: _Ops, grid: int, scale: float, epsilon: float, u: Any, v: Any,
                 source_cells: npt.NDArray[np.intp], target_cells: npt.NDArray[np.intp], log_domain: bool) -> None:
        self._ops, self.grid, self.scale, self.epsilon = ops, grid, scale, epsilon
        self._u, self._v, self.log_domain = u, v, log_domain
        self.source_cells, self.target_cells = source_cells, target_cells
        offsets = np.subtract.outer(np.arange(grid), np.arange(grid)).astype(np.float64) ** 2 / scale
        # per axis: the kernel factor k and k * c with c[i, i'] = (i - i')^2 / s, and their logs
        with np.errstate(divide="ignore"):
            logs = (-offsets / epsilon, -offsets / epsilon + np.log(offsets))
        self._kernel, self._kernel_cost = (ops.array(np.exp(f)) for f in logs)
        self._log_kernel, self._log_kernel_cost = (ops.array(f) for f in logs)

    # ------------------------------------------------------------------ kernel products

    def _apply(self, x: Any, left_cost: bool = False, right_cost: bool = False) -> Any:
        """``(k_r (x) k_c) X`` for ``X`` of shape ``(..., g, g)`` (log-domain: of ``log X``).

        ``k_r`` is the row factor, ``k_c`` the column factor; a factor flagged
        ``*_cost`` is ``k * c`` (the kernel times the per-axis cost), used for ``<P, C>``.
        """
        rows = self._kernel_cost if left_cost else self._kernel
        cols = self._kernel_cost if right_cost else self._kernel
        if not self.log_domain:
            return rows @ x @ cols
        log_rows = self._log_kernel_cost if left_cost else self._log_kernel
        log_cols = self._log_kernel_cost if right_cost else self._log_kernel
        ops = self._ops
        inner = self._log_product(x, cols, log_cols)  # along the columns, then along the rows:
        return ops.swap(self._log_product(ops.swap(inner), rows, log_rows))

    def _log_product(self, x: Any, factor: Any, log_factor: Any) -> Any:
        """``log(exp(X) @ factor)`` along the last axis of ``X`` (``(..., n, g)``), never under- or overflowing.

        Each row is shifted by its maximum and multiplied by the factor; an entry
        whose sum falls below 1e-200 (the factor's entries that matter underflowed) is
        recomputed exactly as a log-sum-exp over that row.
        """
        ops = self._ops
        top = ops.amax(x, -1)[..., None]
        live = top > -math.inf  # rows with some mass (an all -inf row stays -inf)
        shift = ops.where(live, top, 0.0)
        summed = ops.exp(x - shift) @ factor
        out = shift + ops.log(summed)
        redo = ops.nonzero((summed < 1e-200) & live)
        if len(redo[0]):
            out[redo] = ops.lse(x[redo[:-1]] + log_factor[:, redo[-1]].T, axis=1)
        return out

    def _grid(self, values: npt.NDArray[np.float64], cells: npt.NDArray[np.intp]) -> Any:
        """``(..., N)`` support values scattered onto ``(..., g, g)`` (zeros, or -inf in log domain)."""
        values = np.asarray(values, dtype=np.float64)
        flat = np.zeros(values.shape[:-1] + (self.grid * self.grid,))
        flat[..., cells] = values
        if self.log_domain:
            with np.errstate(divide="ignore"):
                flat = np.log(flat)
        return self._ops.array(flat.reshape(values.shape[:-1] + (self.grid, self.grid)))

    def _support(self, x: Any, cells: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """``(..., g, g)`` grid values (log-domain: exponentiated) gathered at the support cells."""
        values = self._ops.numpy(x).reshape(x.shape[:-2] + (self.grid * self.grid,))[..., cells]
        return np.exp(values) if self.log_domain else values

    def _log_support(self, x: Any, cells: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """``log`` of a scaling gathered at the support cells."""
        values = self._ops.numpy(x).ravel()[cells]
        return values if self.log_domain else np.log(values)

    def push(self, weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``W P``: source-cell weights carried to the target cells.

        Args:
            weights (array-like): ``(k, Ns)`` non-negative weights per source cell.

        Returns:
            np.ndarray: ``(k, Nt)`` float64, ``sum_i W[., i] P[i, j]``.
        """
        w = self._grid(weights, self.source_cells)
        if self.log_domain:
            return self._support(self._v + self._apply(self._u + w), self.target_cells)
        return self._support(self._v * self._apply(self._u * w), self.target_cells)

    def incoming(self) -> npt.NDArray[np.float64]:
        """``(Nt,)`` mass each target cell receives (column sums of ``P``)."""
        return self.push(np.ones((1, self.source_cells.size)))[0]

    def outgoing(self) -> npt.NDArray[np.float64]:
        """``(Ns,)`` mass each source cell sends (row sums of ``P``; K is symmetric)."""
        if self.log_domain:
            return self._support(self._u + self._apply(self._v), self.source_cells)
        return self._support(self._u * self._apply(self._v), self.source_cells)

    def matrix(self) -> npt.NDArray[np.float64]:
        """``(Ns, Nt)`` float64 the dense plan (O(Ns Nt) memory; for checks and small grids)."""
        rows_s, cols_s = np.divmod(self.source_cells, self.grid)
        rows_t, cols_t = np.divmod(self.target_cells, self.grid)
        cost = ((rows_s[:, None] - rows_t[None, :]) ** 2 + (cols_s[:, None] - cols_t[None, :]) ** 2) / self.scale
        if self.log_domain:
            log_u, log_v = self._log_support(self._u, self.source_cells), self._log_support(self._v, self.target_cells)
            return np.exp(log_u[:, None] + log_v[None, :] - cost / self.epsilon)
        u = self._ops.numpy(self._u).ravel()[self.source_cells]
        v = self._ops.numpy(self._v).ravel()[self.target_cells]
        return u[:, None] * np.exp(-cost / self.epsilon) * v[None, :]

    def cost(self) -> float:
        """``<P, C>`` (the cost splits into its row and column parts, each separable)."""
        ops = self._ops
        parts = (self._apply(self._u, left_cost=True), self._apply(self._u, right_cost=True))
        if self.log_domain:
            return float(sum(float(np.exp(ops.numpy(ops.lse((self._v + p).reshape(-1), 0)))) for p in parts))
        return float(sum(float((self._v * p).sum()) for p in parts))

    def objective(self, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], marginal: float) -> tuple[float, float]:
        """``(<P, C>, <P, C> + eps sum(P log P - P) + lam KL(P1|a) + lam KL(P^T 1|b))``.

        ``log P_ij = log u_i + log v_j - C_ij / eps``, so the entropy term is
        ``sum_i r_i log u_i + sum_j c_j log v_j - <P, C> / eps - sum P`` with the row
        and column sums ``r``, ``c``. KL is POT's generalised one (``mass=True``).
        """
        linear = self.cost()
        rows, cols = self.outgoing(), self.incoming()
        with np.errstate(divide="ignore"):
            log_u, log_v = (self._log_support(x, cells) for x, cells in ((self._u, self.source_cells),
                                                                          (self._v, self.target_cells)))
        entropy = (float(np.where(rows > 0, rows * log_u, 0.0).sum()) + float(np.where(cols > 0, cols * log_v, 0.0).sum())
                   - linear / self.epsilon - float(rows.sum()))
        total = linear + self.epsilon * entropy
        if not math.isinf(marginal):
            total += marginal * (_kl(rows, a) + _kl(cols, b))
        return linear, total


def _kl(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> float:
    """POT's generalised KL ``sum p log(p / q + 1e-16) + q - p``."""
    return float((p * np.log(p / q + 1e-16)).sum() + (q - p).sum())


def solve_separable(
    grid: int,
    source_cells: npt.NDArray[np.intp],
    a: npt.NDArray[np.float64],
    target_cells: npt.NDArray[np.intp],
    b: npt.NDArray[np.float64],
    scale: float,
    *,
    epsilon: float,
    marginal: float,
    max_iter: int,
    tol: float,
    log_domain: bool = False,
    device: torch.device | None = None,
) -> tuple[GridPlan, SolveFacts]:
    """Entropic UOT between two measures on one ``g x g`` grid, cost squared distance / ``scale``.

    Args:
        grid (int): cells per side ``g``.
        source_cells (np.ndarray): ``(Ns,)`` flat cell indices of the source support.
        a (np.ndarray): ``(Ns,)`` positive source masses.
        target_cells (np.ndarray): ``(Nt,)`` flat cell indices of the target support.
        b (np.ndarray): ``(Nt,)`` positive target masses.
        scale (float): positive divisor of the squared cell distances.
        epsilon (float): entropic regularisation (cost units).
        marginal (float): KL marginal penalty ``lambda`` (``inf``: balanced).
        max_iter (int): iterations at most.
        tol (float): POT's stopping threshold.
        log_domain (bool): iterate on log-scalings (no overflow). Default: False.
        device (torch.device | None): torch on this device; None: NumPy. Default: None.

    Returns:
        tuple[GridPlan, SolveFacts]: the plan and how the iterations ended.
    """
    ops = _Ops(device)
    plan = GridPlan(ops, grid, scale, epsilon, None, None, source_cells, target_cells, log_domain)
    fi = 1.0 if math.isinf(marginal) else marginal / (marginal + epsilon)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        facts = _iterate(plan, plan._grid(a, source_cells), plan._grid(b, target_cells), fi, max_iter, tol)
    return plan, facts


def _iterate(plan: GridPlan, mass_a: Any, mass_b: Any, fi: float, max_iter: int, tol: float) -> SolveFacts:
    """POT's scaling iterations on the grid; leaves the scalings in ``plan``."""
    ops, log_domain = plan._ops, plan.log_domain
    empty = -math.inf if log_domain else 0.0
    has_a, has_b = mass_a > empty, mass_b > empty
    # start from ones on the supports (their logs: zeros)
    u, v = (ops.array(np.where(ops.numpy(has), 0.0 if log_domain else 1.0, empty)) for has in (has_a, has_b))
    error, numerical, done = math.nan, False, 0
    for done in range(1, max_iter + 1):
        u_prev, v_prev = u, v
        if log_domain:
            u = ops.where(has_a, fi * (mass_a - plan._apply(v)), empty)
            v = ops.where(has_b, fi * (mass_b - plan._apply(u)), empty)
        else:
            u = ops.where(has_a, (mass_a / ops.where(has_a, plan._apply(v), 1.0)) ** fi, empty)
            into = plan._apply(u)
            if bool(((into == 0) & has_b).any()):  # a target cell out of reach: POT's numerical stop
                u, v, numerical = u_prev, v_prev, True
                break
            v = ops.where(has_b, (mass_b / ops.where(has_b, into, 1.0)) ** fi, empty)
        if not (ops.bounded(u) and ops.bounded(v)):
            u, v, numerical = u_prev, v_prev, True
            break
        error = 0.5 * (_change(ops, u, u_prev, log_domain) + _change(ops, v, v_prev, log_domain))
        if error < tol:
            break
    plan._u, plan._v = u, v
    return SolveFacts(error, done, numerical)


def _change(ops: _Ops, new: Any, old: Any, log_domain: bool) -> float:
    """POT's ``max|x - x_prev| / max(max|x|, max|x_prev|, 1)`` (log domain: from the logs)."""
    if not log_domain:  # scalings are >= 0
        return ops.max(abs(new - old)) / max(ops.max(new), ops.max(old), 1.0)
    shift = max(ops.max(new), ops.max(old), 0.0)
    return ops.max(abs(ops.exp(new - shift) - ops.exp(old - shift)))
