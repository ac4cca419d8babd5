"""A cxr-attrib method plugin: the brightest pixels are the evidence."""

from types import MappingProxyType

import numpy as np

from cxr_attrib import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param


class Brightness(Method):
    """Scores each working-frame pixel by its grey level above a threshold."""

    name = "brightness"
    summary = "Toy baseline: pixels brighter than a threshold are the evidence."
    reference = "cxr-attrib plugin tutorial (CONTRIBUTING.md)."
    uses_model = False
    defaults = MappingProxyType({"threshold": 0.5})
    param_types = MappingProxyType({"threshold": Param(float, low=0.0, high=1.0, doc="grey level cut")})

    def attribute(self, request: MethodRequest) -> MethodOutput:
        image = request.image  # (S, S) float32 in [0, 1], working frame
        heat = np.clip(image - request.params["threshold"], 0.0, None)
        return MethodOutput(heatmap=heat.astype(np.float32), unit="grey level above threshold")


@hookimpl
def register_methods(register):
    register(Brightness)
