"""Reference rows: the ceiling (``truth``) and the floor (``random``) of every table.

Neither is an attribution method. ``truth`` answers with the sample's own
ground-truth boxes: what a perfect localisation scores, and what deleting exactly the
finding does to the answer. ``random`` answers with a seeded random map: what a map
that knows nothing scores on the same samples. Both are marked ``is_reference``, so
reports show them apart and never call them the best method; a faithfulness metric
that does not rank ``truth`` above ``random`` on a model is flagged as uninformative
for that model (:func:`cxr_attrib.leaderboard.report.build_report`).
"""

from __future__ import annotations

import zlib
from types import MappingProxyType

import numpy as np

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param


class Truth(Method):
    """The sample's ground-truth boxes as a box attribution (the ceiling of localisation).

    It has no heatmap: localisation judges its boxes exactly (IoU 1 against the truth),
    and the faithfulness scorer ranks the boxes' pixels first (box ``i`` of ``K``
    scores ``K - i``), so its deletion curve removes exactly the finding first.
    """

    name = "truth"
    summary = "Reference row: the sample's own ground-truth boxes (a ceiling; needs a benchmark with boxes)."
    reference = "Reference row of the cxr-attrib leaderboard (docs/benchmark-protocol.md, 'Reference rows')."
    output = "boxes"
    uses_model = False
    is_reference = True
    needs_truth = True

    def attribute(self, request: MethodRequest) -> MethodOutput:
        assert request.truth is not None, "the core passes the ground truth to a needs_truth method"
        return MethodOutput(boxes=[tuple(map(float, box)) for box in request.truth], unit="ground truth")


class RandomMap(Method):
    """A seeded random map: uniform values on a ``cells`` x ``cells`` grid over the working frame.

    The seed mixes the run's seed with a checksum of the image, so every sample gets
    its own map and the same sample always the same one. Blocks (not single pixels)
    give the map the patch structure of a token-grid method, so its boxes and its
    deletion curve are what a worthless map of that kind scores.
    """

    name = "random"
    summary = "Reference row: a seeded random block map (the floor; ignores the model)."
    reference = "Reference row of the cxr-attrib leaderboard (docs/benchmark-protocol.md, 'Reference rows')."
    output = "heatmap"
    uses_model = False
    is_reference = True
    defaults = MappingProxyType({"cells": 8})
    param_types = MappingProxyType({
        "cells": Param(int, low=1, high="size", doc="grid cells per side of the random map"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        cells = request.params["cells"]
        checksum = zlib.crc32(np.ascontiguousarray(request.image).tobytes())
        values = np.random.default_rng([request.seed, checksum]).random((cells, cells))
        edges = (np.arange(request.size) * cells) // request.size
        heat = values[edges[:, None], edges[None, :]].astype(np.float32)
        return MethodOutput(heatmap=heat * request.content_mask, unit="uniform random")


@hookimpl
def register_methods(register) -> None:
    register(Truth)
    register(RandomMap)
