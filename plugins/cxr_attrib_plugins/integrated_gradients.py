"""Integrated gradients on the working image, through the adapter's differentiable pixel path.

Captum's :class:`~captum.attr.IntegratedGradients` integrates the gradient of the
explained scalar (the summed teacher-forced target log-prob, float32) along the
straight path from a baseline image to the working image. The forward function is the
adapter's :meth:`~cxr_attrib.adapter.GradientSurface.forward`, which builds the model's
pixel values from the working image in torch, so the attribution lands on working-frame
pixels directly (Qwen's merge-window packing is inside the differentiated function,
never reshaped by hand). Completeness: the attributions sum to F(image) - F(baseline)
up to the integration error, which is recorded as ``convergence_delta`` in ``meta.info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from cxr_attrib.adapter import Scorer
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param, gradient_surface
from cxr_attrib.perturb import baseline_image

from ._checks import check_choice, check_positive_int

__all__ = ["IntegratedGradients"]

BASELINES: Mapping[str, str] = MappingProxyType({"black": "zero", "blur": "blur", "mean": "mean"})
"""Baseline name -> :func:`cxr_attrib.perturb.baseline_image` fill."""


class IntegratedGradients(Method):
    """Integrated gradients of the target log-prob (nats per working-frame pixel)."""

    name = "integrated_gradients"
    summary = "Integrated gradients of the answer log-prob w.r.t. the working image, from a black baseline."
    reference = (
        "Sundararajan, Taly & Yan, 'Axiomatic Attribution for Deep Networks', ICML 2017. "
        "https://arxiv.org/abs/1703.01365"
    )
    needs_gradients = True
    defaults = MappingProxyType({"baseline": "black", "steps": 24, "internal_batch_size": 4})
    param_types = MappingProxyType({
        "baseline": Param(str, choices=tuple(BASELINES), doc="the image the path starts from"),
        "steps": Param(int, low=1, memory=8.0, doc="points on the straight path (Riemann sum)"),
        "internal_batch_size": Param(int, low=1, memory=256.0, doc="path points per forward and backward pass"),
    })

    @classmethod
    def validate(cls, params: Mapping[str, Any], adapter: Scorer | None) -> None:
        """``steps`` and ``internal_batch_size`` >= 1; ``baseline`` one of black, blur, mean."""
        check_positive_int(cls.name, "steps", params["steps"])
        check_positive_int(cls.name, "internal_batch_size", params["internal_batch_size"])
        check_choice(cls.name, "baseline", params["baseline"], tuple(BASELINES))

    def attribute(self, request: MethodRequest) -> MethodOutput:
        adapter = gradient_surface(request.adapter, self.name)
        params, query = request.params, request.query
        image = torch.from_numpy(np.array(request.image, dtype=np.float32))[None]
        fill = BASELINES[params["baseline"]]
        baseline = torch.from_numpy(baseline_image(np.asarray(request.image, dtype=np.float32), fill))[None]

        def target(images: torch.Tensor) -> torch.Tensor:
            return adapter.forward(images, query).total

        from captum.attr import IntegratedGradients as CaptumIntegratedGradients  # on first use (start-up)

        attributions = CaptumIntegratedGradients(target).attribute(
            image, baselines=baseline, n_steps=params["steps"],
            internal_batch_size=params["internal_batch_size"],
        )
        with torch.no_grad():  # both ends of the path in one call of 2 sequences
            ends = adapter.forward(torch.cat([image, baseline]), query).total
        total = float(attributions.sum())
        change = float(ends[0] - ends[1])
        delta = total - change
        return MethodOutput(
            heatmap=attributions[0].detach().cpu().numpy().astype(np.float32),
            unit="target log-prob (nats) per working-frame pixel; sums to F(image) - F(baseline)",
            info={
                "baseline": params["baseline"],
                "target_image": float(ends[0]),
                "target_baseline": float(ends[1]),
                "attribution_sum": total,
                "convergence_delta": delta,
                "relative_delta": abs(delta) / max(abs(change), 1e-12),
            },
        )


@hookimpl
def register_methods(register) -> None:
    register(IntegratedGradients)
