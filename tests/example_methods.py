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
    """Gradient of the answer log-prob with respect to the processed pixels, times the pixels."""

    name = "gradient_x_input"
    summary = "|gradient x input| of the answer log-prob, channels summed, in the working frame."
    reference = "Shrikumar et al., 'Not Just a Black Box', arXiv:1605.01713, 2016."
    needs_gradients = True

    def attribute(self, request: MethodRequest) -> MethodOutput:
        adapter = request.adapter
        encoding = adapter.encode([request.image], request.query)
        pixels = adapter.pixel_inputs([request.image]).requires_grad_(True)  # (1, ...) float32
        total = adapter.score_pixels(pixels, encoding)  # (1,) summed target log-prob, differentiable
        (grad,) = torch.autograd.grad(total.sum(), pixels)
        adapter.counter.backward_calls += 1  # methods count their own backward passes
        adapter.counter.backward_sequences += pixels.shape[0]
        heat = adapter.pixels_to_working((grad * pixels).detach())[0]  # (S, S) float32
        return MethodOutput(heatmap=heat.abs().cpu().numpy(), unit="|gradient x input| (log-prob)")
