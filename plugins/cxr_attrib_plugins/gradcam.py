"""Grad-CAM on the image-token hidden states of a decoder layer (or the vision encoder).

One forward captures the layer's output with its gradient, one backward takes the
gradient of the explained scalar (the summed teacher-forced target log-prob) at it.
The image tokens play the role of a CNN's spatial positions and the hidden dimension
that of its channels: channel weights come from the gradients (:func:`gradcam_weights`
here, :func:`~cxr_attrib_plugins.gradcampp.gradcampp_weights` for Grad-CAM++), the map
is ``ReLU(sum_d w_d A[n, d])`` per token, mapped back to the working frame as an
activation (averaged, never summed).

The default layer is the adapter's ``default_layer``: the last decoder layer is useless,
because its outputs at image positions feed no later layer and only the predictor rows
reach the answer, so their gradient is exactly zero and the map is blank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from cxr_attrib.adapter import GradientSurface, Scorer
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param, gradient_surface

__all__ = ["CamMethod", "GradCAM", "gradcam_weights", "resolve_layer"]

VISION = "vision"
"""``layer`` value naming the vision encoder's last block."""


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: the gradient averaged over positions.

    Args:
        activations (torch.Tensor): (B, N, D) activations at N positions (unused; kept
            so every weighting rule has one signature).
        gradients (torch.Tensor): (B, N, D) gradient of the target at them.

    Returns:
        torch.Tensor: (B, D) weights.
    """
    return gradients.mean(dim=1)


def resolve_layer(method: str, layer: Any, adapter: GradientSurface) -> int | str:
    """The decoder layer index (>= 0) or ``"vision"`` that ``layer`` names.

    Raises:
        MethodParameterError: ``layer`` is neither None, ``"vision"`` nor an int in
            [-L, L - 1] for the adapter's L decoder layers.
    """
    if layer is None:
        layer = adapter.default_layer
    if layer == VISION:
        return VISION
    count = len(adapter.decoder_layers())
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise MethodParameterError(
            f"{method}: parameter 'layer' must be None (the model's default, {adapter.default_layer}), "
            f"'vision' or a decoder layer index in [{-count}, {count - 1}], got {layer!r}."
        )
    return layer % count


class CamMethod(Method):
    """Class-activation mapping on one layer; subclasses choose the channel weights."""

    needs_gradients = True
    defaults = MappingProxyType({"layer": None})
    param_types = MappingProxyType({
        "layer": Param(int, optional=True, also=("vision",),
                       doc="decoder layer, 'vision' (the vision tower) or None (the model's default layer)"),
    })
    weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(B, N, D) activations and gradients -> (B, D) channel weights."""

    @classmethod
    def validate(cls, params: Mapping[str, Any], adapter: Scorer | None) -> None:
        """``layer`` is None, ``"vision"`` or a decoder layer index in range."""
        resolve_layer(cls.name, params["layer"], gradient_surface(adapter, cls.name))

    def attribute(self, request: MethodRequest) -> MethodOutput:
        adapter = gradient_surface(request.adapter, self.name)
        layer = resolve_layer(self.name, request.params["layer"], adapter)
        image = torch.from_numpy(np.array(request.image, dtype=np.float32))[None]
        # Captum's LayerGradCam expects (B, C, *spatial) layer outputs and pools the
        # gradient over every spatial position; a decoder layer gives (B, L, D) over the
        # whole sequence, of which only the N image tokens are the "spatial" positions,
        # so the layer is captured by the adapter and the weights are computed here.
        if layer == VISION:
            result = self._forward(adapter, image, request, vision=(-1,))
            activations = result.vision[-1]
        else:
            result = self._forward(adapter, image, request, hidden=(layer,))
            activations = result.hidden[layer][:, result.image_positions]
        gradients = activations.grad if layer == VISION else result.hidden[layer].grad[:, result.image_positions]
        with torch.no_grad():
            weights = type(self).weights(activations.float(), gradients.float())
            cam = torch.relu((activations.float() * weights[:, None, :]).sum(-1))
            space = "patch" if layer == VISION else "token"
            heat = adapter.to_working(cam, space, "mean")[0]
        grid = None if layer == VISION else cam[0].reshape(adapter.geometry.token_grid).cpu().numpy()
        return MethodOutput(
            heatmap=heat.cpu().numpy().astype(np.float32),
            grid=grid,
            unit="class activation (ReLU of gradient-weighted hidden states; relative scale)",
            info={"layer": layer, "decoder_layers": len(adapter.decoder_layers())},
        )

    @staticmethod
    def _forward(adapter: GradientSurface, image: torch.Tensor, request: MethodRequest, **capture: Any) -> Any:
        """One forward capturing the layer, one backward of the target: (B, N, D) grads kept."""
        result = adapter.forward(image, request.query, grad=True, **capture)
        result.backward()
        return result


class GradCAM(CamMethod):
    """Grad-CAM: channel weights = mean gradient over the image tokens."""

    name = "gradcam"
    summary = "Grad-CAM on the image-token hidden states of a decoder layer that has a gradient to the answer."
    reference = (
        "Selvaraju et al., 'Grad-CAM: Visual Explanations from Deep Networks via Gradient-based "
        "Localization', ICCV 2017. https://arxiv.org/abs/1610.02391"
    )
    weights = staticmethod(gradcam_weights)


@hookimpl
def register_methods(register) -> None:
    register(GradCAM)
