"""Forward hooks through which :meth:`HFAdapter.forward` captures layers.

* :func:`capture_output` keeps a module's output as a (B, n, D) tensor that the model's
  own computation continues from (so its ``.grad`` is filled by a backward pass); the
  first captured module of a graph without gradients becomes its leaf;
* :func:`check_indices` rejects layer indices outside the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["capture_output", "check_indices"]


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
