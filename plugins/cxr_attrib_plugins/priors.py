"""Model-free prior baselines: what a leaderboard must beat to mean anything.

``whole_image`` says "the evidence is everywhere"; ``center`` says "the evidence is
in the middle of the image". Neither looks at the model, so a method that scores
no better than them has not shown that it found what the model used.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param


def _content_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Exclusive-end box (x1, y1, x2, y2) of the True pixels of a (S, S) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


class WholeImage(Method):
    """Uniform attribution over the image content and one box around all of it."""

    name = "whole_image"
    summary = "Prior baseline: the whole image is the evidence (ignores the model)."
    reference = "Baseline used by Xiong et al. 2026 (MedFocus) when no concept matters."
    output = "boxes"
    uses_model = False

    def attribute(self, request: MethodRequest) -> MethodOutput:
        heat = request.content_mask.astype(np.float32)
        return MethodOutput(heatmap=heat, boxes=[_content_box(request.content_mask)], unit="uniform prior")


class Center(Method):
    """A centred Gaussian prior and the central box covering ``fraction`` of each side."""

    name = "center"
    summary = "Prior baseline: the evidence is in the centre of the image (ignores the model)."
    reference = "Center-bias baseline (Judd et al., ICCV 2009, 'Learning to predict where humans look')."
    output = "boxes"
    uses_model = False
    defaults = MappingProxyType({"fraction": 0.5})
    param_types = MappingProxyType({
        "fraction": Param(float, low=0.0, high=1.0, low_open=True, doc="box side as a fraction of the image side"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        fraction = request.params["fraction"]
        x1, y1, x2, y2 = _content_box(request.content_mask)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        ys, xs = np.mgrid[0 : request.size, 0 : request.size].astype(np.float32) + 0.5
        heat = np.exp(-0.5 * (((xs - cx) / (w * fraction / 2)) ** 2 + ((ys - cy) / (h * fraction / 2)) ** 2))
        box = (cx - w * fraction / 2, cy - h * fraction / 2, cx + w * fraction / 2, cy + h * fraction / 2)
        return MethodOutput(heatmap=heat * request.content_mask, boxes=[box], unit="gaussian prior")


@hookimpl
def register_methods(register) -> None:
    register(WholeImage)
    register(Center)
