"""Pool references prepared for transport: working-frame masks, grid measures, coverage.

A pool's references are resize-padded into the working frame once per (pool content,
frame size), and measured on each grid once per (pool content, frame size, grid); the
results are kept (for the last :data:`KEEP_POOLS` pools), so every image after the
first pays only for its own transport.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cxr_attrib.frames import ResizePad
from cxr_attrib.pools import CONCEPTS, ConceptPool, PoolError

from .transport import GridMeasure, NoSupportError, downsample, grid_measure

__all__ = ["KEEP_POOLS", "ReferenceGrid", "pool_grids"]


@dataclass(frozen=True, eq=False)
class ReferenceGrid:
    """One pool reference prepared for transport on one grid (working frame of side S).

    Attributes:
        measure (GridMeasure): the reference image's measure.
        coverage (np.ndarray): ``(11, N)`` float64, fraction of each support cell that
            each concept's mask covers (rows in :data:`CONCEPTS` order).
        working (np.ndarray): ``(11, S, S)`` float32, each concept's mask resize-padded
            into the working frame (bilinear, so edge pixels hold partial coverage).
    """

    measure: GridMeasure
    coverage: npt.NDArray[np.float64]
    working: npt.NDArray[np.float32]

    def working_mask(self, k: int) -> npt.NDArray[np.bool_]:
        """``(S, S)`` bool mask of concept ``k`` in the working frame (half covered or more)."""
        return _binary(self.working[k])


KEEP_POOLS = 8
"""Prepared (pool, frame size) pairs kept; the oldest is dropped first."""

_GRIDS: dict[tuple[str, str, int, int], tuple[ReferenceGrid, ...]] = {}
_WORKING: dict[tuple[str, str, int], tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]], ...]] = {}


def pool_grids(pool: ConceptPool, size: int, grid: int) -> tuple[ReferenceGrid, ...]:
    """Every reference of ``pool`` on a grid, computed once per (pool content, S, grid).

    Args:
        pool (ConceptPool): the pool.
        size (int): working-frame side ``S``.
        grid (int): cells per side, ``1 <= grid <= S``.

    Returns:
        tuple[ReferenceGrid, ...]: one per reference, in pool order; the working-frame
        masks are shared by every grid of the same pool and size.

    Raises:
        PoolError: a reference with nothing to transport (blank image).
    """
    key = (pool.name, pool.fingerprint, size, grid)
    if key not in _GRIDS:
        grids = []
        for ref, (image, working) in zip(pool, _working_references(pool, size)):
            try:
                measure = grid_measure(image, grid)
            except NoSupportError as exc:
                raise PoolError(f"pool {pool.name!r} ({pool.source}): reference {ref.id!r} cannot be "
                                f"used: {exc}") from None
            coverage = np.stack([downsample(plane, grid).ravel()[measure.cells] for plane in working])
            grids.append(ReferenceGrid(measure, coverage, working))
        _GRIDS[key] = tuple(grids)
        _forget_oldest(_GRIDS, 2 * KEEP_POOLS)
    return _GRIDS[key]


def _working_references(pool: ConceptPool, size: int) -> tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]], ...]:
    """Each reference's image ``(S, S)`` and masks ``(11, S, S)`` resize-padded into the working frame."""
    key = (pool.name, pool.fingerprint, size)
    if key not in _WORKING:
        prepared = []
        for ref in pool:
            frame = ResizePad.for_image(ref.image, size)
            working = np.stack([frame.image_to_working(ref.masks[c].astype(np.float32)) for c in CONCEPTS])
            working.setflags(write=False)
            prepared.append((frame.image_to_working(ref.image), working))
        _WORKING[key] = tuple(prepared)
        _forget_oldest(_WORKING, KEEP_POOLS)
    return _WORKING[key]


def _forget_oldest(store: dict, keep: int) -> None:
    """Drop the oldest entries (dicts keep insertion order) beyond ``keep``."""
    while len(store) > keep:
        store.pop(next(iter(store)))


def _binary(coverage: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """A resize-padded mask back to bool (>= half covered; its strongest pixel if none is)."""
    mask = coverage >= 0.5
    if not mask.any():
        mask = coverage >= coverage.max()
    return mask
