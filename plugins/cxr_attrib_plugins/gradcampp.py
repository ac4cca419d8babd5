"""Grad-CAM++: Grad-CAM's layer and map with higher-order channel weights.

Same single forward and backward as :mod:`cxr_attrib_plugins.gradcam`; only the channel
weights differ. With the explained score ``S`` (the target log-prob, so the output is
``Y = exp(S)``, the exponential case of the paper), the closed form uses the first
gradient ``g`` only:
``alpha = g^2 / (2 g^2 + sum_n A g^3)`` and ``w_d = sum_n alpha[n, d] * ReLU(g[n, d])``.
"""

from __future__ import annotations

import torch

from cxr_attrib.hookspecs import hookimpl

from .gradcam import CamMethod

__all__ = ["GradCAMpp", "gradcampp_weights"]


def gradcampp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights.

    Args:
        activations (torch.Tensor): (B, N, D) activations A at N positions.
        gradients (torch.Tensor): (B, N, D) first gradient g of the score S = log Y.

    Returns:
        torch.Tensor: (B, D) weights; positions where the denominator vanishes get alpha 0.

    Examples::

        >>> a = torch.tensor([[[1.0], [0.0]]])
        >>> g = torch.tensor([[[1.0], [-1.0]]])
        >>> round(gradcampp_weights(a, g).item(), 6)  # alpha = 1 / (2 + 1) at the first position
        0.333333
    """
    squared = gradients.pow(2)
    denominator = 2 * squared + (activations * gradients.pow(3)).sum(dim=1, keepdim=True)
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(squared))
    return (alpha * torch.relu(gradients)).sum(dim=1)


class GradCAMpp(CamMethod):
    """Grad-CAM++ on the same activations as Grad-CAM."""

    name = "gradcampp"
    summary = "Grad-CAM++ (higher-order channel weights) on the same image-token hidden states as gradcam."
    reference = (
        "Chattopadhay et al., 'Grad-CAM++: Generalized Gradient-Based Visual Explanations for "
        "Deep Convolutional Networks', WACV 2018. https://arxiv.org/abs/1710.11063"
    )
    weights = staticmethod(gradcampp_weights)


@hookimpl
def register_methods(register) -> None:
    register(GradCAMpp)
