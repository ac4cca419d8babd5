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

__all__ = ["Method", "MethodRequest", "MethodOutput", "ConceptScore", "OutputKind", "Param", "gradient_surface"]

OutputKind = Literal["heatmap", "boxes", "concepts"]


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    """The declared type and range of one method hyper-parameter.

    ``bool`` is never accepted as a number, and ``int`` only takes integers (``2.9``
    is refused, never truncated); ``float`` takes integers and floats and returns a
    float.

    Attributes:
        kind (type): ``int``, ``float``, ``str`` or ``bool``.
        low (float | None): smallest allowed value (inclusive). Default: no bound.
        high (float | str | None): largest allowed value (inclusive); the string
            ``"size"`` means the working-frame side S. Default: no bound.
        low_open (bool): ``low`` itself is excluded. Default: False.
        choices (tuple | None): the only allowed values. Default: any.
        doc (str): one line on what the parameter does.

    Example::

        >>> Param(int, low=1, high="size").check("occlusion", "tiles", 4, size=224)
        4
    """

    kind: type
    low: float | None = None
    high: float | str | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def describe(self, size: int | None = None) -> str:
        """The valid values in words, e.g. ``"an integer in [1, 224]"``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        high = size if self.high == "size" else self.high
        text = _KIND_NAMES.get(self.kind, self.kind.__name__)
        if self.low is None and high is None:
            return text
        low = "-inf" if self.low is None else f"{self.low:g}"
        upper = "inf" if high is None else (f"{high:g}" if isinstance(high, Real) else f"{high}")
        return f"{text} in {'(' if self.low_open else '['}{low}, {upper}]"

    def check(self, method: str, name: str, value: Any, *, size: int | None = None) -> Any:
        """``value`` converted to the declared kind, or a clear error.

        Args:
            method (str): the method name (for the message).
            name (str): the parameter name.
            value: the caller's value.
            size (int | None): working-frame side S for ``high="size"``; None skips
                that bound.

        Returns:
            The value (an int accepted for a ``float`` parameter becomes a float).

        Raises:
            MethodParameterError: wrong type or out of range; names the method, the
                parameter, the value and the valid values.
        """
        given = value

        def fail() -> MethodParameterError:
            return MethodParameterError(
                f"method {method!r} parameter {name!r} = {given!r} is invalid; expected "
                f"{self.describe(size)}"
            )

        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, Real) and not isinstance(value, bool) and bool(np.isfinite(value))
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            raise fail()
        if self.kind in (int, float):
            value = self.kind(value)
        if self.choices is not None and value not in self.choices:
            raise fail()
        if self.kind in (int, float):
            high = size if self.high == "size" else self.high
            below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            if below or (isinstance(high, Real) and value > high):
                raise fail()
        return value


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
                f"method {cls.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; valid: {valid}"
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
