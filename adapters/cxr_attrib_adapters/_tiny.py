"""Shared by the families' tiny-model recipes."""

from __future__ import annotations

import torch

__all__ = ["zero_output_projections"]


def zero_output_projections(tower: torch.nn.Module, suffix: str) -> None:
    """Zero the weight and bias of every sub-module of ``tower`` whose name ends with ``suffix``.

    Applied to a vision tower's attention output projections, it leaves each patch
    with only its own pixels (the residual path), so image tokens do not mix.
    """
    with torch.no_grad():
        for name, module in tower.named_modules():
            if name.endswith(suffix):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
