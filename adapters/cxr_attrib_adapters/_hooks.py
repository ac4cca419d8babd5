"""Forward hooks through which :meth:`HFAdapter.forward` captures layers.

* :func:`capture_output` keeps a module's output as a (B, n, D) tensor that the model's
  own computation continues from (so its ``.grad`` is filled by a backward pass); the
  first captured module of a graph without gradients becomes its leaf;
* :func:`capture_weights` keeps an attention module's (B, heads, L, L) weights;
* :func:`embeds_leaf` starts the graph at the language model's input embeddings (for
  attention weights, which no module output precedes);
* :func:`check_indices` rejects layer indices outside the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from cxr_attrib.errors import ModelCapabilityError

__all__ = ["NO_ATTENTIONS", "capture_output", "capture_weights", "check_indices", "embeds_leaf"]

NO_ATTENTIONS = (
    "model {name!r} returns no attention weights; load it with "
    "LoadOptions(attn_implementation='eager') (cxr_attrib.models.with_attentions)."
)
"""Message of the ModelCapabilityError for attention weights asked of a non-eager model."""


def check_indices(what: str, indices: Sequence[int], count: int, kind: str) -> None:
    """Raise IndexError naming ``what`` when an index lies outside [-count, count - 1]."""
    for index in indices:
        if not -count <= int(index) < count:
            raise IndexError(
                f"{what} layer {index} is out of range: the model has {count} {kind}; "
                f"expected an index in [{-count}, {count - 1}]."
            )


def capture_output(
    store: dict[int, torch.Tensor], key: int, batch: int, grad: bool
) -> Callable[[torch.nn.Module, Any, Any], Any]:
    """Forward hook keeping a module's output as (B, n, D); with ``grad``, its ``.grad`` too."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        tensor = output[0] if isinstance(output, tuple) else output
        if grad and not tensor.requires_grad:
            tensor = tensor.detach().requires_grad_(True)
        shaped = tensor.reshape(batch, -1, tensor.shape[-1])
        if grad:
            shaped.retain_grad()
        store[key] = shaped
        passed = shaped.reshape(tensor.shape)
        return (passed, *output[1:]) if isinstance(output, tuple) else passed

    return hook


def embeds_leaf(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Forward pre-hook: the input embeddings start the graph when nothing before them does."""
    embeds = kwargs.get("inputs_embeds")
    if embeds is not None and not embeds.requires_grad:
        kwargs = {**kwargs, "inputs_embeds": embeds.detach().requires_grad_(True)}
    return args, kwargs


def capture_weights(
    store: dict[int, torch.Tensor], key: int, grad: bool, name: str
) -> Callable[[torch.nn.Module, Any, Any], None]:
    """Forward hook keeping an attention module's (B, heads, L, L) weights."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ModelCapabilityError(NO_ATTENTIONS.format(name=name))
        if grad and weights.requires_grad:
            weights.retain_grad()
        store[key] = weights

    return hook
