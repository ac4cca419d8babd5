"""Named array shapes used in signatures and docstrings.

Conventions everywhere in cxr-attrib:
- images and heatmaps are indexed ``[row, column]`` = ``(H, W)``;
- boxes are ``(x1, y1, x2, y2)`` in pixels with **exclusive** ends (``x2 = x1 + width``);
- the *input* frame is the user's image, the *working* frame is the square
  resize-pad of side ``S`` (default 224), the *model* frame is what the processor makes.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

GreyImage: TypeAlias = npt.NDArray[np.uint8]
"""(H, W) uint8 grey image, 0 = black."""

WorkingImage: TypeAlias = npt.NDArray[np.float32]
"""(S, S) float32 grey image in [0, 1], the working frame."""

Heatmap: TypeAlias = npt.NDArray[np.float32]
"""(H, W) float32 attribution scores (unit depends on the method, stated in meta)."""

TokenGrid: TypeAlias = npt.NDArray[np.float32]
"""(gh, gw) float32 scores on the model's image-token grid."""

BoxArray: TypeAlias = npt.NDArray[np.float64]
"""(N, 4) float64 boxes ``x1, y1, x2, y2`` with exclusive ends."""
