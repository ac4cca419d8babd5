"""Occlusion: hide one tile of the working frame at a time and watch the answer.

Built on Captum's :class:`~captum.attr.FeatureAblation` with an ``tiles x tiles``
feature mask over the working frame. The explained scalar is the teacher-forced
target log-prob; a tile's score is how much that log-prob drops when the tile is
filled with the baseline. The unperturbed image is scored inside every batch of
perturbed images (never in a separate pass of another batch size), so with the
default ``batch_size=64`` an 8x8 occlusion is exactly one forward call of 65 sequences.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import BATCH_SIZE, Method, MethodOutput, MethodRequest, Param
from cxr_attrib.perturb import FILL, baseline_image


def tile_mask(size: int, tiles: int) -> np.ndarray:
    """(S, S) int64 mask numbering ``tiles x tiles`` row-major tiles 0 .. tiles**2 - 1.

    Tile edges are at ``floor(i * S / tiles)`` so every pixel belongs to one tile.
    """
    edges = (np.arange(size) * tiles) // size
    return (edges[:, None] * tiles + edges[None, :]).astype(np.int64)


class Occlusion(Method):
    """Tile occlusion scored as the drop of the target log-prob (nats)."""

    name = "occlusion"
    summary = "Fill each tile of an 8x8 grid with a baseline; score = drop of the answer log-prob."
    reference = "Zeiler & Fergus, 'Visualizing and Understanding Convolutional Networks', ECCV 2014."
    defaults = MappingProxyType({"tiles": 8, "fill": "zero", "batch_size": 64})
    param_types = MappingProxyType({
        "tiles": Param(int, low=1, high="size", doc="tiles per side of the occlusion grid"),
        "fill": FILL,
        "batch_size": BATCH_SIZE,
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        adapter, query = request.adapter, request.query
        tiles, batch_size = request.params["tiles"], request.params["batch_size"]
        original = np.asarray(request.image, dtype=np.float32)
        original_t = torch.from_numpy(original.copy())[None]

        def relative_logprob(batch: torch.Tensor) -> torch.Tensor:
            """Target log-prob of each image minus that of the original in the same batch."""
            if batch.shape[0] == 1 and torch.equal(batch, original_t):
                return torch.zeros(1)  # by definition; Captum's reference evaluation
            images = [original] + [img.numpy() for img in batch]
            totals = adapter.score(images, query).sum(-1)
            return totals[1:] - totals[0]

        baseline = torch.from_numpy(baseline_image(original, request.params["fill"]))[None]
        mask = torch.from_numpy(tile_mask(request.size, tiles))[None]
        with torch.no_grad():
            from captum.attr import FeatureAblation  # on first use: captum costs seconds at start-up

            drop = FeatureAblation(relative_logprob).attribute(  # a batch never exceeds the work
                original_t, baselines=baseline, feature_mask=mask, perturbations_per_eval=min(batch_size, tiles**2)
            )
        heat = drop[0].numpy().astype(np.float32)
        return MethodOutput(heatmap=heat, unit="drop of target log-prob (nats)", info={"tiles": tiles})


@hookimpl
def register_methods(register) -> None:
    register(Occlusion)
