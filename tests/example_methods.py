"""Two small methods for method authors: a perturbation method and a gradient method."""

from types import MappingProxyType

import numpy as np
import torch

from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param


class CentreOcclusion(Method):
    """Black out a centred square; its score is the drop of the answer log-prob."""

    name = "centre_occlusion"
    summary = "Drop of the answer log-prob when a centred square is filled with black."
    reference = "cxr-attrib method-author reference (CONTRIBUTING.md)."
    defaults = MappingProxyType({"side": 0.5})
    param_types = MappingProxyType({"side": Param(float, low=0.0, high=1.0, low_open=True)})

    def attribute(self, request: MethodRequest) -> MethodOutput:
        size, half = request.size, round(request.size * request.params["side"] / 2)
        lo, hi = size // 2 - half, size // 2 + half
        hidden = np.array(request.image)  # a writable copy of the (S, S) working image
        hidden[lo:hi, lo:hi] = 0.0
        # One forward call of two sequences: (2, T) float32 log-probs of the target tokens.
        logprobs = request.adapter.score([request.image, hidden], request.query)
        drop = float(logprobs[0].sum() - logprobs[1].sum())
        heat = np.zeros((size, size), np.float32)
        heat[lo:hi, lo:hi] = drop
        return MethodOutput(heatmap=heat, boxes=[(lo, lo, hi, hi)], unit="drop of target log-prob (nats)")


class GradientTimesInput(Method):
    """Gradient of the answer log-prob with respect to the working image, times the image."""

    name = "gradient_x_input"
    summary = "|gradient x input| of the answer log-prob with respect to the working-frame image."
    reference = "Shrikumar et al., 'Not Just a Black Box', arXiv:1605.01713, 2016."
    needs_gradients = True

    def attribute(self, request: MethodRequest) -> MethodOutput:
        adapter = request.adapter
        image = torch.tensor(np.array(request.image))[None].requires_grad_(True)  # (1, S, S) working frame
        result = adapter.forward(image, request.query, grad=True)  # one forward: (1, T) target log-probs
        (grad,) = torch.autograd.grad(result.total.sum(), image)  # the adapter counts this backward pass
        heat = (grad * image).detach()[0]  # (S, S) float32, already in the working frame
        return MethodOutput(heatmap=heat.abs().cpu().numpy(), unit="|gradient x input| (log-prob)")
