"""Concept transfer: map a pool's anatomical masks onto a new image by UOT.

1. **Selection** at the coarse grid (14 x 14): one UOT from every pool reference to
   the image; the reference with the lowest transport cost ``<P, C>`` wins
   (``selection="cost"``, the paper) or the lowest full UOT objective
   (``selection="objective"``; ``<P, C>`` alone rewards plans that move little mass).
2. **Transfer** at the fine grid (56 x 56): one UOT from the chosen reference to the
   image. For each concept, the target mass ``m_j = sum_i w_i P_ij`` where ``w_i`` is
   the fraction of source cell ``i`` the concept's mask covers. The smallest set of
   target cells carrying ``mass_quantile`` of ``sum_j m_j`` is the transferred mask;
   its bounding box is the concept box.

Everything is in the **working frame** of the image (square, side ``S``): pool
references are resize-padded into the same frame first. Down-sampled reference
grids are computed once per pool, frame size and grid; finished transfers are cached
by a content hash (:mod:`.cache`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.method import Param
from cxr_attrib.pools import CONCEPTS, ConceptPool, mask_box
from cxr_attrib.typing import WorkingImage

from .cache import TransferCache, default_cache
from .concepts import Box, ConceptTransfer, members
from .grids import ReferenceGrid, pool_grids
from .transport import (
    GridMeasure,
    Solver,
    TransportFailure,
    UOTResult,
    cell_edges,
    check_uot_params,
    grid_measure,
    solve_uot,
)

__all__ = [
    "TRANSFER_DEFAULTS",
    "TRANSFER_PARAM_TYPES",
    "CONCEPT_PARAM_TYPES",
    "Box",
    "ConceptTransfer",
    "Selection",
    "check_transfer_params",
    "members",
    "transfer_concepts",
    "transfer_params",
]

Selection = Literal["cost", "objective"]
TransferMode = Literal["mass", "warp"]
_SELECTIONS = ("cost", "objective")
_TRANSFERS = ("mass", "warp")


TRANSFER_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "selection": "cost", "transfer": "mass", "epsilon": 0.05, "marginal": 0.1, "mass_quantile": 0.75,
    "select_grid": 14, "transfer_grid": 56, "max_iter": 500, "tol": 1e-6, "solver": "auto",
})
"""The paper's transfer parameters (the defaults of :func:`transfer_concepts`); ``solver``
picks the UOT solver (:func:`~.transport.solve_uot`; ``"pot"`` is the dense reference)."""


TRANSFER_PARAM_TYPES: Mapping[str, Param] = MappingProxyType({
    "selection": Param(str, choices=_SELECTIONS, doc="how the reference is chosen: lowest <P, C> or the UOT objective"),
    "transfer": Param(str, choices=_TRANSFERS, doc="concept transfer by transported mass or by warping"),
    "epsilon": Param(float, low=0.0, low_open=True, doc="entropic regularisation of the UOT (the solver checks its floor)"),
    "marginal": Param(float, low=0.0, low_open=True, doc="KL marginal relaxation lambda of both marginals"),
    "mass_quantile": Param(float, low=0.0, high=1.0, low_open=True, doc="share of transported mass a concept box holds"),
    "select_grid": Param(int, low=1, high="size", doc="grid side of the reference selection"),
    "transfer_grid": Param(int, low=1, high="size", doc="grid side of the concept transfer"),
    "max_iter": Param(int, low=1, high=1_000_000, doc="most solver iterations"),
    "tol": Param(float, low=0.0, low_open=True, doc="solver tolerance"),
    "solver": Param(str, doc="UOT solver (see transport.solve_uot)"),
})
"""The declaration of every transfer parameter, for the methods that take them."""

CONCEPT_PARAM_TYPES: Mapping[str, Param] = MappingProxyType({
    "pool": Param(str, doc="a registered concept pool's name"),
    "cache_dir": Param((str, os.PathLike), optional=True, doc="folder of cached transfers (never in the data root)"),
    **TRANSFER_PARAM_TYPES,
})
"""Declarations of a concept-transfer method's ``pool``, ``cache_dir`` and transfer parameters."""


def check_transfer_params(params: Mapping[str, Any], size: int = 224) -> dict[str, Any]:
    """Validate transfer parameters before any work (a method calls this before its model pass).

    Args:
        params (Mapping[str, Any]): any of the keys of :data:`TRANSFER_DEFAULTS`;
            missing keys take their defaults, unknown keys are an error.
        size (int): working-frame side ``S`` (the grids may not exceed it). Default: 224.

    Returns:
        dict[str, Any]: every parameter, JSON-safe (floats as float); part of the cache key.

    Raises:
        MethodParameterError: naming the parameter, its value and the valid range.

    Examples::

        >>> check_transfer_params({"mass_quantile": 0.5})["mass_quantile"]
        0.5
    """
    unknown = sorted(set(params) - set(TRANSFER_DEFAULTS))
    if unknown:
        raise MethodParameterError(f"unknown transfer parameter(s) {unknown}; expected {sorted(TRANSFER_DEFAULTS)}")
    p = {**TRANSFER_DEFAULTS, **params}
    if p["selection"] not in _SELECTIONS:
        raise MethodParameterError(f"selection must be one of {', '.join(_SELECTIONS)}, got {p['selection']!r}")
    if p["transfer"] not in _TRANSFERS:
        raise MethodParameterError(f"transfer must be one of {', '.join(_TRANSFERS)}, got {p['transfer']!r}")
    check_uot_params(p["epsilon"], p["marginal"], p["max_iter"], p["tol"], p["solver"])
    quantile = p["mass_quantile"]
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 < quantile <= 1.0:
        raise MethodParameterError(f"mass_quantile must be in (0, 1], got {quantile!r}")
    for name in ("select_grid", "transfer_grid"):
        grid = p[name]
        if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= size:
            raise MethodParameterError(f"{name} must be an int in [1, {size}] (the working-frame side), "
                                       f"got {grid!r}")
    for name in ("epsilon", "marginal", "mass_quantile", "tol"):
        p[name] = float(p[name])
    return p


def transfer_params(*, size: int = 224, **params: Any) -> dict[str, Any]:
    """Keyword form of :func:`check_transfer_params` (the dict feeds ``transfer_concepts(**...)``).

    Examples::

        >>> transfer_params(selection="objective", size=224)["selection"]
        'objective'
    """
    return check_transfer_params(params, size)


def transfer_concepts(
    image: WorkingImage,
    pool: ConceptPool | str,
    *,
    selection: Selection = "cost",
    transfer: TransferMode = "mass",
    epsilon: float = 0.05,
    marginal: float = 0.1,
    mass_quantile: float = 0.75,
    select_grid: int = 14,
    transfer_grid: int = 56,
    max_iter: int = 500,
    tol: float = 1e-6,
    solver: Solver = "auto",
    cache: TransferCache | None = None,
    device: str | torch.device | None = None,
) -> ConceptTransfer:
    """Transfer a pool's 11 concept masks onto a working-frame image.

    Args:
        image (WorkingImage): ``(S, S)`` grey working-frame image (min-max scaled here).
        pool (ConceptPool | str): a pool, or the name of a registered one.
        selection (str): ``"cost"`` (lowest ``<P, C>``, the paper) or ``"objective"``
            (lowest full UOT objective). Default: "cost".
        epsilon (float): entropic regularisation (normalised cost units). Default: 0.05.
        marginal (float): KL marginal penalty, both sides. Default: 0.1.
        transfer (str): ``"mass"`` (the paper: the fewest target cells carrying
            ``mass_quantile`` of the concept's transported mass) or ``"warp"`` (the
            reference mask pulled back through the plan's barycentric map, at pixel
            precision; see docs/methods/medfocus.md). Default: "mass".
        mass_quantile (float): share of a concept's transported mass its cells keep,
            in (0, 1] (``transfer="mass"``). Default: 0.75.
        select_grid (int): grid side for reference selection. Default: 14.
        transfer_grid (int): grid side for the transfer. Default: 56.
        max_iter (int): Sinkhorn iterations at most. Default: 500.
        tol (float): Sinkhorn tolerance. Default: 1e-6.
        solver (str): the UOT solver (:func:`~.transport.solve_uot`): ``"auto"`` (the
            separable solver) or ``"pot"`` (POT's dense solvers, the reference), or
            one variant by name. Default: "auto".
        cache (TransferCache | None): where finished transfers are kept. Default: None
            (the process-wide in-memory cache).
        device (str | torch.device | None): run the solver on torch on this device
            (the model's GPU); None runs NumPy. The result does not depend on it
            beyond round-off, so it is not part of the cache key. Default: None.

    Returns:
        ConceptTransfer: boxes and masks of all 11 concepts in the working frame.

    Raises:
        MethodParameterError: a parameter out of range (before any work).
        UnknownPoolError: an unregistered pool name (with suggestions).
        NoSupportError: a blank image (nothing to transport).
        TransportFailure: no usable plan (every selection solve or the transfer
            solve did not converge or is degenerate); nothing is cached.
        PoolError: a malformed pool reference.

    Examples::

        >>> from cxr_attrib_phantom import generate_phantom
        >>> from cxr_attrib_phantom.pool import phantom_pool
        >>> t = transfer_concepts(generate_phantom(3).image, phantom_pool(n=2))
        >>> sorted(t.boxes) == sorted(CONCEPTS), t.masks["left_lung"].shape
        (True, (224, 224))
    """
    pixels = _check_image(image)
    size = pixels.shape[0]
    params = check_transfer_params(
        dict(selection=selection, transfer=transfer, epsilon=epsilon, marginal=marginal, mass_quantile=mass_quantile,
             select_grid=select_grid, transfer_grid=transfer_grid, max_iter=max_iter, tol=tol, solver=solver), size)
    if isinstance(pool, str):
        from cxr_attrib.registry import get_pool

        pool = get_pool(pool)
    store = default_cache() if cache is None else cache
    key = store.key(pixels, pool, params)
    found = store.get(key)
    if found is not None:
        return found
    result = _transfer(pixels, pool, params, device)
    store.put(key, result)
    return result


def _check_image(image: Any) -> npt.NDArray[np.float32]:
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2 or pixels.shape[0] != pixels.shape[1] or pixels.size == 0:
        raise MethodParameterError(f"image must be a square (S, S) working-frame image, got shape "
                                   f"{pixels.shape}; resize-pad it first (cxr_attrib.frames.ResizePad)")
    if not np.isfinite(pixels).all():
        raise MethodParameterError("image contains NaN or infinite values")
    return pixels


def _transfer(pixels: npt.NDArray[np.float32], pool: ConceptPool, params: dict[str, Any],
              device: str | torch.device | None) -> ConceptTransfer:
    size = pixels.shape[0]
    solve = {k: params[k] for k in ("epsilon", "marginal", "max_iter", "tol", "solver")}
    coarse = grid_measure(pixels, params["select_grid"])
    runs = [solve_uot(ref.measure, coarse, device=device, **solve)
            for ref in pool_grids(pool, size, params["select_grid"])]
    problems = [run.problem() for run in runs]
    scores = tuple(math.inf if problem else r.cost if params["selection"] == "cost" else r.objective
                   for r, problem in zip(runs, problems))
    warnings = [f"reference {pool.ids[k]!r} left out of the selection: {problem}"
                for k, problem in enumerate(problems) if problem]
    if all(problems):
        raise TransportFailure(f"no pool reference could be transported onto the image: {problems[0]}")
    chosen = int(np.argmin(scores))
    reference = pool_grids(pool, size, params["transfer_grid"])[chosen]
    target = grid_measure(pixels, params["transfer_grid"])
    run = _usable(solve_uot(reference.measure, target, device=device, **solve), "the transfer")
    info: dict[str, Any] = {"params": params, "selection_solver": runs[chosen].info(), "transfer_solver": run.info()}
    if params["transfer"] == "mass":
        found = _mass_masks(run.transport.push(reference.coverage), target, params["mass_quantile"], size)
    else:
        itself = _usable(solve_uot(target, target, device=device, **solve), "the self-transport (warp)")
        info["self_solver"] = itself.info()
        found = _warp_masks(reference, target, run, itself, size)
    boxes, masks, untransferred = {}, {}, []
    for k, concept in enumerate(CONCEPTS):
        mask = found[k]
        if mask is None or not mask.any():
            untransferred.append(concept)
            mask = reference.working_mask(k)
        mask.setflags(write=False)
        masks[concept] = mask
        boxes[concept] = mask_box(mask)
    info.update({
        "support": {"select": int(coarse.cells.size), "transfer": int(target.cells.size),
                    "reference": int(reference.measure.cells.size)},
        "untransferred": untransferred,
        "warnings": warnings,
    })
    return ConceptTransfer(pool.name, chosen, pool.ids[chosen], MappingProxyType(boxes),
                           MappingProxyType(masks), run.cost, scores, MappingProxyType(info))


def _usable(run: UOTResult, what: str) -> UOTResult:
    """``run`` itself, or :class:`TransportFailure` naming why its plan cannot be used."""
    problem = run.problem()
    if problem:
        raise TransportFailure(f"{what} failed: {problem}")
    return run


def _mass_masks(masses: npt.NDArray[np.float64], target: GridMeasure, quantile: float,
                size: int) -> list[npt.NDArray[np.bool_] | None]:
    """Per concept: the fewest target cells carrying ``quantile`` of its mass ``m`` (None if no mass)."""
    found: list[npt.NDArray[np.bool_] | None] = []
    for mass in masses:
        cells = _quantile_cells(mass, quantile)
        found.append(_cells_to_mask(target.cells[cells], target.grid, size) if cells.size else None)
    return found


def _warp_masks(reference: ReferenceGrid, target: GridMeasure, run: UOTResult, itself: UOTResult,
                size: int) -> list[npt.NDArray[np.bool_]]:
    """Every concept's reference mask pulled back through the plan's barycentric map.

    Target cell ``j`` receives mass from source cells around the barycentre
    ``sum_i P_ij y_i / sum_i P_ij``. The entropic blur biases that barycentre towards
    where the mass is; the same bias appears in the target's transport onto itself,
    so the displacement of ``j`` is the difference of the two barycentres (zero when
    the reference is the image). The displacement field, extended to cells outside
    the support by their nearest support cell, is interpolated to every
    working-frame pixel, and a pixel belongs to a concept when the reference mask,
    sampled at the displaced position, is at least half covered.
    """
    grid = target.grid
    offsets = _barycentres(run, reference.measure) - _barycentres(itself, target)
    known = np.isfinite(offsets).all(axis=1)
    field = np.zeros((grid * grid, 2))
    field[target.cells[known]] = offsets[known]
    has = np.zeros(grid * grid, dtype=bool)
    has[target.cells[known]] = True
    nearest = ndimage.distance_transform_edt(~has.reshape(grid, grid), return_distances=False,
                                             return_indices=True)
    field = field.reshape(grid, grid, 2)[nearest[0], nearest[1]]  # (g, g, 2) in cells
    centres = (np.arange(size) + 0.5) * grid / size - 0.5  # pixel centres in cell units
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    step = size / grid
    dy = ndimage.map_coordinates(field[..., 0], [rows, cols], order=1, mode="nearest") * step
    dx = ndimage.map_coordinates(field[..., 1], [rows, cols], order=1, mode="nearest") * step
    pixels = np.arange(size, dtype=np.float64)
    where = [pixels[:, None] + dy, pixels[None, :] + dx]
    return [ndimage.map_coordinates(plane, where, order=1, mode="constant", cval=0.0) >= 0.5
            for plane in reference.working]


def _barycentres(run: UOTResult, source: GridMeasure) -> npt.NDArray[np.float64]:
    """``(Nt, 2)`` source barycentre (row, col in cells) of each target cell; NaN where no mass arrives."""
    incoming = run.transport.incoming()
    with np.errstate(invalid="ignore", divide="ignore"):
        return run.transport.push(source.positions.T).T / incoming[:, None]


def _quantile_cells(mass: npt.NDArray[np.float64], quantile: float) -> npt.NDArray[np.intp]:
    """Indices of the fewest entries whose sum reaches ``quantile`` of the total (largest first)."""
    total = float(mass.sum())
    if not total > 0 or not math.isfinite(total):
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(-mass, kind="stable")
    running = np.cumsum(mass[order])
    count = int(np.searchsorted(running, quantile * total * (1 - 1e-12), side="left")) + 1
    return order[: min(count, int(np.count_nonzero(mass)))]


def _cells_to_mask(cells: npt.NDArray[np.intp], grid: int, size: int) -> npt.NDArray[np.bool_]:
    """``(S, S)`` bool: the pixels of the given flat grid cells (cell edges of :func:`cell_edges`)."""
    on = np.zeros(grid * grid, dtype=bool)
    on[cells] = True
    index = np.searchsorted(cell_edges(size, grid), np.arange(size), side="right") - 1
    return on.reshape(grid, grid)[index[:, None], index[None, :]]
