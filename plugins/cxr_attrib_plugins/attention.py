"""Raw attention: how much the rows that predict the answer attend to each image token.

The logits at position t - 1 predict token t, so the rows read are the **predictor
rows** of the target tokens, not the rows of the target tokens themselves (those
look at what comes after the answer has been emitted). Weights of one decoder layer,
averaged over heads (or one head), averaged over the target tokens.
"""

from __future__ import annotations

from types import MappingProxyType

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param

from ._decoder import attention_surface, decoder_layer, head_index


class Attention(Method):
    """Attention weights of one decoder layer from the predictor rows to the image tokens."""

    name = "attention"
    summary = "Decoder attention (last layer, head mean) from the rows predicting the answer to the image tokens."
    reference = "Bahdanau et al., 'Neural Machine Translation by Jointly Learning to Align and Translate', ICLR 2015."
    needs_attentions = True
    defaults = MappingProxyType({"layer": -1, "head": None})
    param_types = MappingProxyType({
        "layer": Param(int, doc="decoder layer (negative counts from the last); checked against the model"),
        "head": Param(int, low=0, optional=True, doc="one attention head; None = the mean of the heads"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        surface = attention_surface(request, self.name)
        layer = decoder_layer(request.params["layer"], surface, self.name)
        head = head_index(request.params["head"], surface, self.name)
        captured = surface.attention(request.image, request.query, layers=[layer], head=head)
        grid = captured.image_columns(captured.maps[layer]).mean(0)
        return MethodOutput(grid=grid.numpy(), unit="attention weight",
                            info={"layer": layer, "head": "mean" if head is None else head})


@hookimpl
def register_methods(register) -> None:
    register(Attention)
