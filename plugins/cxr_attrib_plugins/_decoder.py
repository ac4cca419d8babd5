"""Shared checks of the attention-family methods: the surface, layers and heads."""

from __future__ import annotations

from cxr_attrib.adapter import AttentionSurface
from cxr_attrib.errors import MethodParameterError, ModelCapabilityError
from cxr_attrib.method import MethodRequest

__all__ = ["attention_surface", "decoder_layer", "head_index"]


def attention_surface(request: MethodRequest, method: str) -> AttentionSurface:
    """The request's adapter as an :class:`AttentionSurface`, or a clear error."""
    adapter = request.adapter
    if not isinstance(adapter, AttentionSurface):
        raise ModelCapabilityError(
            f"method {method!r} needs the adapter surface AttentionSurface, which model "
            f"{getattr(adapter, 'name', adapter)!r} ({type(adapter).__name__}) does not implement."
        )
    return adapter


def decoder_layer(value: object, surface: AttentionSurface, method: str, parameter: str = "layer") -> int:
    """0-based decoder layer for ``value`` (negative indices count from the last layer).

    Raises:
        MethodParameterError: ``value`` is not an integer in [-L, L - 1].
    """
    count = surface.num_decoder_layers
    if isinstance(value, bool) or not isinstance(value, int) or not -count <= value < count:
        raise MethodParameterError(
            f"method {method!r}: {parameter} must be an integer in [{-count}, {count - 1}] "
            f"(the model has {count} decoder layers); got {value!r}"
        )
    return value % count


def head_index(value: object, surface: AttentionSurface, method: str) -> int | None:
    """A head in [0, heads - 1], or None for the head mean.

    Raises:
        MethodParameterError: ``value`` is neither None nor such an integer.
    """
    count = surface.num_attention_heads
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise MethodParameterError(
            f"method {method!r}: head must be None (mean over heads) or an integer in [0, {count - 1}] "
            f"(the model has {count} heads); got {value!r}"
        )
    return value
