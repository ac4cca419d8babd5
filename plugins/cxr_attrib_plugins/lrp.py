"""Layer-wise relevance propagation for transformers, read at the image tokens.

Conservative propagation (Ali et al., ICML 2022; AttnLRP, Achtibat et al., ICML 2024)
computed as input x gradient of a modified backward pass: attention weights and
normalisation scales are constants, element-wise activations pass relevance on
unchanged and gated products split it uniformly between their factors. The explained
quantity is the sum of the target tokens' logits; the relevance of each image token is
its input embedding times that modified gradient, summed over the embedding. The rules
live in the adapter (hooks on the loaded model); this method reads the image tokens and
records how well relevance was conserved. It is not attention rollout.
"""

from __future__ import annotations

from cxr_attrib.adapter import AttentionSurface
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest

from ._decoder import attention_surface


class LRP(Method):
    """Conservative LRP of the target logits through the decoder, at the image-token embeddings."""

    name = "lrp"
    summary = "Layer-wise relevance propagation (AttnLRP rules) of the answer logits to the image-token embeddings."
    reference = ("Achtibat et al., 'AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers', "
                 "ICML 2024; Ali et al., 'XAI for Transformers: Better Explanations through Conservative "
                 "Propagation', ICML 2022.")
    needs_gradients = True
    needs_attentions = True
    surfaces = (AttentionSurface,)

    def attribute(self, request: MethodRequest) -> MethodOutput:
        surface = attention_surface(request, self.name)
        relevance = surface.relevance(request.image, request.query)
        image_total = float(relevance.image_grid.sum())
        return MethodOutput(
            grid=relevance.image_grid.numpy(), unit="relevance (logit units)",
            info={"explained_logit": relevance.explained, "relevance_total": float(relevance.positions.sum()),
                  "image_relevance": image_total, "conservation_error": relevance.conservation_error},
        )


@hookimpl
def register_methods(register) -> None:
    register(LRP)
