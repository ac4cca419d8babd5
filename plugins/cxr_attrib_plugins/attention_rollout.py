"""Attention rollout (Abnar & Zuidema, ACL 2020), multiplied in the right order.

Each layer's head-mean attention gets the residual connection and is renormalised,
``A_hat_l = 0.5 (mean_h A_l + I)`` with rows summing to 1, and the layers are chained
with the latest layer on the left, ``J = A_hat_{L-1} ... A_hat_{s}``, in float32.
The predictor rows of ``J`` (the positions whose outputs predict the target tokens)
are read at the image tokens and averaged over the target tokens. Only those rows
are propagated: ``e_p^T A_hat_{L-1}`` first, then each earlier layer, so the cost is
``L x T x N^2`` rather than ``L x N^3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param

from ._decoder import attention_surface, decoder_layer


def rollout_rows(maps: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """Rows of ``A_hat_{last} ... A_hat_{first}`` for head-mean maps given first to last.

    Args:
        maps (Sequence[torch.Tensor]): per layer, first to last, (L, L) head-mean
            attention (rows = queries, each row sums to 1).
        rows (torch.Tensor): (R,) long row indices to read.

    Returns:
        torch.Tensor: (R, L) float32 rows of the rollout matrix.

    Examples::

        >>> a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> rollout_rows([a], torch.tensor([1]))  # 0.5 * (a + I), row 1
        tensor([[0.2500, 0.7500]])
    """
    size = maps[0].shape[-1]
    eye = torch.eye(size, dtype=torch.float32)
    out = eye[rows]
    for weights in reversed(maps):
        mixed = 0.5 * (weights.float() + eye)
        out = out @ (mixed / mixed.sum(-1, keepdim=True))
    return out


class AttentionRollout(Method):
    """Attention rollout read at the predictor rows of the target tokens."""

    name = "attention_rollout"
    summary = "Attention rollout: residual-mixed head-mean attention chained over layers (latest on the left)."
    reference = "Abnar & Zuidema, 'Quantifying Attention Flow in Transformers', ACL 2020."
    needs_attentions = True
    defaults = MappingProxyType({"start_layer": 0})
    param_types = MappingProxyType({
        "start_layer": Param(int, doc="first decoder layer of the rollout (negative counts from the last)"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        surface = attention_surface(request, self.name)
        start = decoder_layer(request.params["start_layer"], surface, self.name, "start_layer")
        layers = list(range(start, surface.num_decoder_layers))
        captured = surface.attention(request.image, request.query, layers=layers, rows="all")
        joint = rollout_rows([captured.maps[layer] for layer in layers], captured.predictor_positions)
        grid = captured.image_columns(joint).mean(0)
        return MethodOutput(grid=grid.numpy(), unit="rollout attention weight",
                            info={"start_layer": start, "layers": len(layers)})


@hookimpl
def register_methods(register) -> None:
    register(AttentionRollout)
