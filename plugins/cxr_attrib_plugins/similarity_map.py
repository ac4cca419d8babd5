"""Similarity map: cosine of each image patch with the finding's prompt, in the joint space.

The BioViL / XBench recipe for dual encoders: the patch embeddings (projected into
the joint image-text space by the model's own recipe, see docs/methods/similarity_map.md)
are compared with the positive prompt's text embedding by cosine similarity, giving a
``(ph, pw)`` grid in [-1, 1]; an optional Gaussian smoothing in patch units (sigma 1.5
by default, as BioViL) follows, and the grid is upsampled to the working frame
(``nearest``: each patch's value fills its pixels, as XBench; or ``bilinear``). One
vision forward, no backward; the text embedding is computed once per prompt.

The adapter must implement :class:`~cxr_attrib.embedding.EmbeddingSurface` (the
contrastive family does; declared in ``surfaces``): other models are refused with a
capability error before any pass.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from cxr_attrib.embedding import EmbeddingSurface
from cxr_attrib.frames import cells_to_working
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param

__all__ = ["SimilarityMap", "upsample_grid"]

UNIT = "cosine similarity of patch and prompt embeddings (joint space, in [-1, 1])"


def upsample_grid(grid: np.ndarray, size: int, mode: str) -> np.ndarray:
    """A (ph, pw) grid that tiles the working frame, upsampled to (S, S) pixels.

    Args:
        grid (np.ndarray): (ph, pw) values, one per patch.
        size (int): side S of the working frame, pixels.
        mode (str): ``"nearest"`` (each pixel takes its patch's value; a pixel shared by
            two patches when S is not a multiple of the grid takes their overlap-weighted
            mean) or ``"bilinear"`` (patch values at patch centres, half-pixel aligned,
            edges clamped).

    Returns:
        np.ndarray: (S, S) float32.

    Examples::

        >>> upsample_grid(np.array([[0.0, 1.0]]), 4, "nearest")[0].tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    values = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None]
    if mode == "nearest":
        return cells_to_working(values, size, "mean")[0].numpy()
    out = torch.nn.functional.interpolate(values[None], size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


class SimilarityMap(Method):
    """Patch-prompt cosine similarity of a dual encoder, smoothed and upsampled."""

    name = "similarity_map"
    summary = "Cosine of each patch embedding with the finding's prompt in a dual encoder's joint space (one forward)."
    reference = ("Boecking et al., 'Making the Most of Text Semantics to Improve Biomedical Vision-Language "
                 "Processing' (BioViL), ECCV 2022; XBench (arXiv 2510.19599); docs/methods/similarity_map.md.")
    surfaces = (EmbeddingSurface,)
    defaults = MappingProxyType({"sigma": 1.5, "upsample": "nearest"})
    param_types = MappingProxyType({
        "sigma": Param(float, low=0.0, high=64.0, doc="Gaussian smoothing of the patch grid, in patches (0 = none)"),
        "upsample": Param(str, choices=("nearest", "bilinear"), doc="how the patch grid reaches the working frame"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        maps = request.adapter.embedding_maps([request.image], request.query)
        grid = maps.cosine()[0].numpy().astype(np.float64)
        sigma = request.params["sigma"]
        smoothed = gaussian_filter(grid, sigma, mode="nearest") if sigma > 0 else grid
        heat = upsample_grid(smoothed.astype(np.float32), request.size, request.params["upsample"])
        return MethodOutput(
            heatmap=heat, grid=grid.astype(np.float32), unit=UNIT,
            info={"prompt": maps.prompt, "patch_embeddings": maps.recipe, "patch_grid": list(maps.grid),
                  "sigma_patches": sigma, "upsample": request.params["upsample"]},
        )


@hookimpl
def register_methods(register) -> None:
    register(SimilarityMap)
