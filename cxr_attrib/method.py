"""The contract between the core and an attribution method.

A method is a subclass of :class:`Method` that declares what it is (``name``,
``summary``, ``reference``), what it needs (``needs_gradients``,
``needs_attentions``, ``uses_model``), what it returns (``output``) and its
hyper-parameters (``defaults``, with their declared types and ranges in
``param_types``). The core validates the caller's parameters with
:meth:`Method.check_params` before any model is loaded, then calls :meth:`Method.attribute` with a
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

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from .adapter import AttentionSurface, GradientSurface, Query, Scorer
from .errors import MethodParameterError, ModelCapabilityError
from .typing import Heatmap, TokenGrid, WorkingImage

__all__ = ["BATCH_SIZE", "MEMORY_BUDGET_ENV", "Method", "MethodRequest", "MethodOutput", "ConceptScore", "OutputKind", "Param",
           "gradient_surface", "memory_budget", "shown"]

OutputKind = Literal["heatmap", "boxes", "concepts"]


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}

MEMORY_BUDGET_ENV = "CXR_ATTRIB_MEMORY_BUDGET"
"""Environment variable: the memory (GiB) a method's parameters may make it use; default 8."""

_DEFAULT_MEMORY_GIB = 8.0
_DEFAULT_SIZE = 224


def memory_budget() -> float:
    """The memory budget in bytes: ``$CXR_ATTRIB_MEMORY_BUDGET`` GiB, else 8 GiB.

    Raises:
        MethodParameterError: the variable is set but not a positive finite number.
    """
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not raw:
        return _DEFAULT_MEMORY_GIB * 2**30
    try:
        gib = float(raw)
    except ValueError:
        gib = float("nan")
    if not (np.isfinite(gib) and gib > 0):
        raise MethodParameterError(f"{MEMORY_BUDGET_ENV} must be a positive number of GiB, got {shown(raw)}")
    return gib * 2**30


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, abbreviated to its first ``limit`` characters and its length when longer.

    Examples::

        >>> shown("x" * 100)
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (102 characters)"
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Param:
    """The declared type and range of one method hyper-parameter.

    ``bool`` is never accepted as a number, and ``int`` only takes integers (``2.9``
    is refused, never truncated); ``float`` takes integers and finite floats (NaN and
    infinity are refused by name) and returns a float.

    Attributes:
        kind (type | tuple[type, ...]): ``int``, ``float``, ``str`` or ``bool`` (or
            several, tried in order).
        low (float | None): smallest allowed value (inclusive). Default: no bound.
        high (float | str | None): largest allowed value (inclusive); the string
            ``"size"`` means the working-frame side S. Default: no bound.
        low_open (bool): ``low`` itself is excluded. Default: False.
        choices (tuple | None): the only allowed values. Default: any.
        doc (str): one line on what the parameter does.
        high_open (bool): ``high`` itself is excluded. Default: False.
        optional (bool): None is accepted too (meaning "off" or "the default").
            Default: False.
        also (tuple): further literal values accepted as they are (e.g. the names
            ``"zero"``, ``"mean"`` of a fill that is otherwise a number). Default: ().
        path (bool): the value is a filesystem path (str or PathLike) that must
            exist; a null byte is refused. Returned as a str. Default: False.
        memory (float | None): bytes the method holds per unit of this parameter and
            per working-frame pixel; the upper bound is then the memory budget
            (:func:`memory_budget`) divided by ``memory * S * S``. Default: None.

    Example::

        >>> Param(int, low=1, high="size").check("occlusion", "tiles", 4, size=224)
        4
    """

    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | str | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    high_open: bool = False
    optional: bool = False
    also: tuple[Any, ...] = ()
    path: bool = False
    memory: float | None = None

    def _kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    def upper(self, size: int | None = None) -> float | None:
        """The largest allowed value: ``high`` (``"size"`` = S) and the memory bound, whichever is lower."""
        high = size if self.high == "size" else self.high
        if self.memory is not None:
            side = size or _DEFAULT_SIZE
            bound = max(1, int(memory_budget() // (self.memory * side * side)))
            high = bound if not isinstance(high, Real) else min(high, bound)
        return high if isinstance(high, Real) else None

    def describe(self, size: int | None = None) -> str:
        """The valid values in words, e.g. ``"an integer in [1, 224]"``."""
        note = ""
        if self.path:
            text = "the path of an existing file or folder"
        elif self.choices is not None:
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in self._kinds())
            high = self.upper(size)
            if self.low is not None or high is not None:
                low = "-inf" if self.low is None else f"{self.low:g}"
                upper = "inf" if high is None else f"{high:g}"
                text += f" in {'(' if self.low_open else '['}{low}, {upper}{')' if self.high_open else ']'}"
            if self.memory is not None:
                note = (f" (the upper bound keeps memory within {memory_budget() / 2**30:g} GiB; "
                        f"set {MEMORY_BUDGET_ENV} to change it)")
        if self.also:
            text = "one of " + ", ".join(map(repr, self.also)) + " or " + text
        return text + (" or None" if self.optional else "") + note

    def check(self, method: str, name: str, value: Any, *, size: int | None = None) -> Any:
        """``value`` converted to the declared kind, or a clear error.

        Args:
            method (str): the method name (for the message).
            name (str): the parameter name.
            value: the caller's value.
            size (int | None): working-frame side S for ``high="size"`` and the memory
                bound; None skips the ``"size"`` bound (the memory bound assumes 224).

        Returns:
            The value (an int accepted for a ``float`` parameter becomes a float; a
            path becomes a str).

        Raises:
            MethodParameterError: wrong type, NaN / infinity, out of range, or a
                missing path; names the method, the parameter, the value (abbreviated
                when long) and the valid values. It is a TypeError and a ValueError.
        """
        given = value

        def fail(why: str = "is invalid") -> MethodParameterError:
            return MethodParameterError(
                f"method {method!r} parameter {name!r} = {shown(given)} {why}; expected {self.describe(size)}"
            )

        if value is None and self.optional:
            return None
        if isinstance(value, str) and value in self.also:
            return value
        if self.path:
            return self._check_path(value, fail)
        if isinstance(value, (float, np.floating)) and not np.isfinite(value):
            raise fail("is not a finite number (NaN and infinity are never usable)")
        for kind in self._kinds():
            if _is_kind(value, kind):
                value = kind(value) if kind in (int, float) else value
                break
        else:
            raise fail()
        if self.choices is not None and value not in self.choices:
            raise fail()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            high = self.upper(size)
            below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            above = high is not None and (value >= high if self.high_open else value > high)
            if below or above:
                raise fail()
        return value

    @staticmethod
    def _check_path(value: Any, fail: Any) -> str:
        from .safeio import checked_path

        if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
            raise fail()
        try:
            path = checked_path(value)
        except (TypeError, ValueError):
            raise fail("is not a usable path") from None
        if not os.path.exists(path):
            raise fail("does not exist")
        return os.fspath(path)


BATCH_SIZE = Param(int, low=1, memory=64.0, doc="perturbed images per forward call")
"""The declaration of a ``batch_size`` parameter: at least 1, bounded by the memory budget
(64 bytes per working-frame pixel per image: the image, its embeddings and activations)."""


def _is_kind(value: Any, kind: type) -> bool:
    """Whether ``value`` is acceptable as ``kind`` (bool is never a number; int never a float's fraction)."""
    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if kind is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if kind is float:
        return isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))
    return isinstance(value, kind)


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
        truth (np.ndarray | None): (K, 4) float64 ground-truth boxes in the working
            frame (``x1, y1, x2, y2``, exclusive ends), given only to methods that
            declare ``needs_truth`` (the ``truth`` reference row); None otherwise.
    """

    adapter: Scorer | None
    image: WorkingImage
    content_mask: np.ndarray
    query: Query
    params: Mapping[str, Any]
    seed: int = 0
    truth: np.ndarray | None = None

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
        warnings (tuple[str, ...]): what may make this output misleading (e.g. a
            recorded fallback); appended to ``meta.warnings``.
    """

    heatmap: Heatmap | None = None
    grid: TokenGrid | None = None
    boxes: Sequence[tuple[float, float, float, float]] | None = None
    concepts: Mapping[str, ConceptScore] | None = None
    token_scores: np.ndarray | None = None
    unit: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


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
        is_reference (bool): a reference row (a floor or a ceiling such as ``random``
            and ``truth``), shown apart in reports and never called the best method.
            Default: False.
        needs_truth (bool): receives the sample's ground-truth boxes
            (:attr:`MethodRequest.truth`); only a reference may. Default: False.
        defaults (Mapping[str, Any]): hyper-parameters and their default values; the
            only keys a caller may pass.
        param_types (Mapping[str, Param]): the declared type and range of each key
            of ``defaults`` (the registry refuses a method whose defaults do not
            pass their own declaration). A key without a declaration accepts any
            value. Default: none.
        surfaces (tuple[type, ...] | None): the adapter surfaces the method calls
            beyond :class:`~cxr_attrib.adapter.Scorer` (e.g. ``(AttentionSurface,)``);
            the core refuses a model that lacks one before any pass. None derives them
            from the flags (see :meth:`required_surfaces`). Default: None.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    reference: ClassVar[str]
    output: ClassVar[OutputKind] = "heatmap"
    needs_gradients: ClassVar[bool] = False
    needs_attentions: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    is_reference: ClassVar[bool] = False
    needs_truth: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    param_types: ClassVar[Mapping[str, Param]] = MappingProxyType({})
    surfaces: ClassVar[tuple[type, ...] | None] = None

    @classmethod
    def required_surfaces(cls) -> tuple[type, ...]:
        """The adapter surfaces this method calls: ``surfaces`` when declared, else
        :class:`~cxr_attrib.adapter.GradientSurface` if ``needs_gradients`` and
        :class:`~cxr_attrib.adapter.AttentionSurface` if ``needs_attentions``."""
        if cls.surfaces is not None:
            return tuple(cls.surfaces)
        return tuple(s for s, on in ((GradientSurface, cls.needs_gradients), (AttentionSurface, cls.needs_attentions))
                     if on)

    @classmethod
    def check_params(cls, params: Mapping[str, Any], *, size: int | None = None) -> dict[str, Any]:
        """The caller's parameters merged over ``defaults``, each checked.

        Called by the core before any model is loaded. Override it (calling
        ``super().check_params``) to add checks across parameters.

        Args:
            params: the caller's hyper-parameters.
            size (int | None): the working-frame side S (for ``Param(high="size")``).

        Returns:
            dict: every hyper-parameter, defaults included, converted to its kind.

        Raises:
            MethodParameterError: an undeclared key, a wrong type or a value out of range.
        """
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            valid = ", ".join(sorted(cls.defaults)) or "(none)"
            raise MethodParameterError(
                f"method {cls.name!r} has no parameter(s) {', '.join(map(shown, unknown))}; valid: {valid}"
            )
        merged = {**cls.defaults, **params}
        for key, spec in cls.param_types.items():
            merged[key] = spec.check(cls.name, key, merged[key], size=size)
        return merged

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
    name = getattr(adapter, "name", repr(adapter))
    if not isinstance(adapter, GradientSurface):
        raise ModelCapabilityError(
            f"method {method!r} needs the adapter surface GradientSurface, which model {name!r} "
            f"({type(adapter).__name__}) does not implement; `cxr-attrib methods` shows what each method needs."
        )
    if not adapter.supports_gradients:
        raise ModelCapabilityError(
            f"method {method!r} needs gradients, but the weights of model {name!r} carry none (non-float, e.g. "
            "quantised); load it with a float dtype (LoadOptions(dtype='float32' or 'bfloat16'))."
        )
    return adapter
