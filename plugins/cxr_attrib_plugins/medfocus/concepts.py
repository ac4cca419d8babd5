"""The result of a concept transfer: the pool's concepts placed on one image.

It sits below both :mod:`.transfer` (which makes it) and :mod:`.cache` (which stores
it), so neither imports the other's module for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.pools import COMPOSITES, CONCEPTS

__all__ = ["Box", "ConceptTransfer", "members"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class ConceptTransfer:
    """The 11 concepts of a pool, transferred onto one image (working frame).

    Attributes:
        pool (str): the pool's name.
        reference (int): index of the chosen pool reference.
        reference_id (str): its id.
        boxes (Mapping[str, Box]): concept -> ``(x1, y1, x2, y2)`` in working-frame
            pixels, exclusive ends, one per name in :data:`~cxr_attrib.pools.CONCEPTS`.
        masks (Mapping[str, np.ndarray]): concept -> ``(S, S)`` bool transferred cells
            up-sampled to the working frame (``boxes`` are their tight boxes).
        cost (float): ``<P, C>`` of the transfer plan (unitless normalised cost).
        scores (tuple[float, ...]): the selection score of every reference (cost or
            objective at the selection grid), lowest = chosen.
        info (Mapping[str, Any]): JSON-safe facts: parameters, the selection and
            transfer solvers (solver, error, converged, backend, mass), support sizes,
            and ``untransferred`` concepts (no transported mass: their box is the
            reference's own mask box, resize-padded).
    """

    pool: str
    reference: int
    reference_id: str
    boxes: Mapping[str, Box]
    masks: Mapping[str, npt.NDArray[np.bool_]] = field(repr=False)
    cost: float
    scores: tuple[float, ...]
    info: Mapping[str, Any] = field(default_factory=dict)

    def member_boxes(self, name: str) -> list[Box]:
        """The box of a concept, or the boxes of a composite's members (never their union).

        Args:
            name (str): a concept or a composite (e.g. ``"bilateral_lungs"``).

        Returns:
            list[Box]: one box per member, working frame.
        """
        return [self.boxes[member] for member in members(name)]

    def member_mask(self, name: str) -> npt.NDArray[np.bool_]:
        """``(S, S)`` bool union of the transferred masks of a concept or a composite."""
        return np.logical_or.reduce([self.masks[member] for member in members(name)])


def members(name: str) -> tuple[str, ...]:
    """The concepts a name stands for: itself, or a composite's members.

    Raises:
        MethodParameterError: an unknown name (lists the valid ones).
    """
    if name in COMPOSITES:
        return COMPOSITES[name]
    if name in CONCEPTS:
        return (name,)
    raise MethodParameterError(f"unknown concept {name!r}; expected one of "
                               f"{', '.join(CONCEPTS + tuple(COMPOSITES))}")
