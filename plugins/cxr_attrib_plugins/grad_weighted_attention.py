"""Gradient-weighted attention: ``ReLU(dF/dA) * A`` from the predictor rows to the image.

F is the summed teacher-forced target log-prob. One forward and one backward pass
give, for a decoder layer, ``mean_h ReLU(dF/dA_h) * A_h`` (attention that both is
paid and pushes the answer up), read at the predictor rows of the target tokens and
the image-token columns, averaged over target tokens.

``layers="all"`` chains every layer in the rollout form of Chefer et al. (ICCV 2021,
"Generic Attention-model Explainability"): ``R = (I + A_bar_{L-1}) ... (I + A_bar_0)``
with ``A_bar_l = mean_h ReLU(dF/dA_l) * A_l``, again read at the predictor rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch

from cxr_attrib.adapter import AttentionSurface
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param

from ._decoder import attention_surface, decoder_layer

_SPANS = ("one", "all")


def relevance_rollout_rows(maps: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """Rows of ``(I + A_last) ... (I + A_first)`` for per-layer maps given first to last.

    Args:
        maps (Sequence[torch.Tensor]): per layer, first to last, (L, L) gradient-weighted
            head-mean attention.
        rows (torch.Tensor): (R,) long row indices to read.

    Returns:
        torch.Tensor: (R, L) float32 rows of the chained relevance matrix.

    Examples::

        >>> a = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
        >>> relevance_rollout_rows([a, a], torch.tensor([0]))  # (I + a)(I + a), row 0
        tensor([[1., 2.]])
    """
    out = torch.eye(maps[0].shape[-1], dtype=torch.float32)[rows]
    for weights in reversed(maps):
        out = out + out @ weights.float()
    return out


class GradWeightedAttention(Method):
    """ReLU(dF/dA) * A at a decoder layer (or chained over all layers), predictor rows to image tokens."""

    name = "grad_weighted_attention"
    summary = "Attention weighted by its positive gradient, ReLU(dF/dA) * A, predictor rows to image tokens."
    reference = ("Chefer, Gur & Wolf, 'Generic Attention-model Explainability for Interpreting Bi-Modal and "
                 "Encoder-Decoder Transformers', ICCV 2021.")
    needs_gradients = True
    needs_attentions = True
    surfaces = (AttentionSurface,)
    defaults = MappingProxyType({"layer": -1, "layers": "one"})
    param_types = MappingProxyType({
        "layer": Param(int, doc="decoder layer (negative counts from the last); checked against the model"),
        "layers": Param(str, choices=_SPANS, doc="one layer, or the relevance rollout over all layers"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        surface = attention_surface(request, self.name)
        span = request.params["layers"]
        if span not in _SPANS:
            raise MethodParameterError(
                f"method {self.name!r}: layers must be one of {', '.join(map(repr, _SPANS))}; got {span!r}"
            )
        layer = decoder_layer(request.params["layer"], surface, self.name)
        if span == "one":
            captured = surface.attention(request.image, request.query, layers=[layer], gradient=True)
            joint = captured.maps[layer]
        else:
            layers = list(range(surface.num_decoder_layers))
            captured = surface.attention(request.image, request.query, layers=layers, rows="all", gradient=True)
            joint = relevance_rollout_rows([captured.maps[i] for i in layers], captured.predictor_positions)
        grid = captured.image_columns(joint).mean(0)
        info = {"layers": "all"} if span == "all" else {"layer": layer}
        return MethodOutput(grid=grid.numpy(), unit="gradient-weighted attention", info=info)


@hookimpl
def register_methods(register) -> None:
    register(GradWeightedAttention)
