"""The contract between the core and an attribution method.

A method is a subclass of :class:`Method` that declares what it is (``name``,
``summary``, ``reference``), what it needs (``needs_gradients``,
``needs_attentions``, ``uses_model``), what it returns (``output``) and its
hyper-parameters (``defaults``). The core calls :meth:`Method.attribute` with a
:class:`MethodRequest` whose image is already in the **working frame** and gets a
:class:`MethodOutput` back, still in the working frame. Frames, normalisation,
validation and the public result are the core's job, never the method's.

Example::

    >>> import numpy as np
    >>> from cxr_attrib.method import Method, MethodOutput
    >>> class Brightness(Method):
    ...     name = "brightness"
    ...     summary = "Bright pixels matter (a toy that ignores the model)."
    ...     reference = "none"
    ...     uses_model = False
    ...     def attribute(self, request):
    ...         return MethodOutput(heatmap=request.image.copy(), unit="grey level")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from .adapter import GradientSurface, Query, Scorer
from .errors import ModelCapabilityError
from .typing import Heatmap, TokenGrid, WorkingImage

__all__ = ["Method", "MethodRequest", "MethodOutput", "ConceptScore", "OutputKind", "gradient_surface"]

OutputKind = Literal["heatmap", "boxes", "concepts"]


@dataclass(frozen=True)
class MethodRequest:
    """Everything a method gets for one attribution.

    Attributes:
        adapter (Scorer | None): the loaded model (an :class:`~cxr_attrib.adapter.Adapter`
            for the built-in families); None when the method declares ``uses_model = False``.
        image (np.ndarray): (S, S) float32 working-frame grey image in [0, 1]
            (read-only; copy before changing it).
        content_mask (np.ndarray): (S, S) bool, True on the image, False on padding.
        query (Query): prompt, answer and span policy being explained.
        params (Mapping[str, Any]): the method's ``defaults`` updated with the
            caller's values.
        seed (int): seed for every random choice the method makes.
    """

    adapter: Scorer | None
    image: WorkingImage
    content_mask: np.ndarray
    query: Query
    params: Mapping[str, Any]
    seed: int = 0

    @property
    def size(self) -> int:
        """Side S of the working frame in pixels."""
        return int(self.image.shape[0])

    def rng(self) -> np.random.Generator:
        """A fresh numpy generator seeded with :attr:`seed`."""
        return np.random.default_rng(self.seed)

    def torch_generator(self) -> torch.Generator:
        """A fresh CPU torch generator seeded with :attr:`seed`."""
        return torch.Generator().manual_seed(self.seed)


@dataclass(frozen=True)
class ConceptScore:
    """A concept's effect and where it is.

    Attributes:
        score (float): the concept's attribution (MedFocus: the log-prob drop, nats).
        boxes (Sequence[tuple[float, float, float, float]]): its region(s) in the
            working frame, exclusive ends.
    """

    score: float
    boxes: Sequence[tuple[float, float, float, float]] = ()


@dataclass(frozen=True)
class MethodOutput:
    """Raw method scores, all in the working frame.

    At least one of ``heatmap``, ``grid`` or ``boxes`` must be given.

    Attributes:
        heatmap (np.ndarray | None): (S, S) scores per working-frame pixel.
        grid (np.ndarray | None): (gh, gw) scores per image token; the core expands
            it to the working frame when ``heatmap`` is None.
        boxes (Sequence | None): evidence boxes ``(x1, y1, x2, y2)`` in the working
            frame, exclusive ends, most important first.
        concepts (Mapping[str, ConceptScore] | None): per-concept scores.
        token_scores (np.ndarray | None): (T,) one score per target token.
        unit (str): what the scores measure, e.g. "log-prob drop (nats)".
        info (Mapping[str, Any]): small JSON-safe facts for ``meta`` (e.g. the layer used).
    """

    heatmap: Heatmap | None = None
    grid: TokenGrid | None = None
    boxes: Sequence[tuple[float, float, float, float]] | None = None
    concepts: Mapping[str, ConceptScore] | None = None
    token_scores: np.ndarray | None = None
    unit: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)


class Method(ABC):
    """Base class of every attribution method.

    Class attributes (the capability flags the registry checks):
        name (str): registry name, lower case, e.g. ``"occlusion"``.
        summary (str): one line shown by ``cxr-attrib methods``.
        reference (str): the paper (authors, title, year, and a link).
        output (str): ``"heatmap"``, ``"boxes"`` or ``"concepts"``. Default: heatmap.
        needs_gradients (bool): runs backward passes. Default: False.
        needs_attentions (bool): needs attention weights (eager attention). Default: False.
        uses_model (bool): False for priors that never look at the model. Default: True.
        defaults (Mapping[str, Any]): hyper-parameters and their default values; the
            only keys a caller may pass.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str]
    output: ClassVar[OutputKind] = "heatmap"
    needs_gradients: ClassVar[bool] = False
    needs_attentions: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    @classmethod
    def validate(cls, params: Mapping[str, Any], adapter: Scorer | None) -> None:
        """Reject parameter values the method cannot use; the core calls it before any model pass.

        Args:
            params: the method's ``defaults`` updated with the caller's values.
            adapter: the loaded model (no pass has run yet), or None for priors.

        Raises:
            MethodParameterError: naming the parameter, the value and the valid range.
        """

    @abstractmethod
    def attribute(self, request: MethodRequest) -> MethodOutput:
        """Explain ``request.query`` for ``request.image``.

        Args:
            request: the working-frame image, the adapter, the query and parameters.

        Returns:
            Scores in the working frame (see :class:`MethodOutput`).
        """


def gradient_surface(adapter: Scorer | None, method: str) -> GradientSurface:
    """``adapter`` as a :class:`~cxr_attrib.adapter.GradientSurface` that supports gradients.

    Args:
        adapter: the loaded model.
        method (str): the method's name, for the message.

    Raises:
        ModelCapabilityError: the model has no differentiable surface or its weights
            carry no gradient (e.g. quantised).
    """
    if not isinstance(adapter, GradientSurface) or not adapter.supports_gradients:
        name = getattr(adapter, "name", repr(adapter))
        raise ModelCapabilityError(
            f"method {method!r} needs gradients, but model {name!r} was loaded without gradient support "
            "(no differentiable adapter surface, or non-float weights); load it with a float dtype "
            "(LoadOptions(dtype='float32' or 'bfloat16')) through an adapter family that supports gradients."
        )
    return adapter
