"""The input and working frames and the transforms between them (see docs/user-guide.md).

The *input* frame is the user's ``(H, W)`` image. The *working* frame is a square of
side ``S`` (default 224): the image scaled so that its long side is ``S``, aspect
kept, centred, and padded with 0. Coordinates are continuous pixels: pixel ``i``
covers ``[i, i + 1)``, so the whole input frame ``[0, W] x [0, H]`` maps exactly onto
the content box of the working frame. Points are ``(x, y)``; boxes are
``(x1, y1, x2, y2)`` with exclusive ends; arrays are indexed ``[row, column]``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from cxr_attrib.errors import ImageLoadError
from cxr_attrib.typing import BoxArray, GreyImage, Heatmap, TokenGrid, WorkingImage

__all__ = ["DEFAULT_SIZE", "ResizePad", "cells_to_working", "grid_to_working", "overlap_matrix"]

DEFAULT_SIZE = 224
"""Side of the square working frame, in pixels (the paper's 224)."""


@dataclass(frozen=True)
class ResizePad:
    """The input -> working transform of one image size.

    The long side is scaled to ``size``; each content side is
    ``round(side * size / max(height, width))`` (half up, at least 1 pixel); the
    content is centred at ``offset = (size - content) // 2`` and the rest is 0.
    Because sides are rounded to whole pixels, the two axes have their own scales
    ``scale_y = content_height / height`` and ``scale_x = content_width / width``
    (working pixels per input pixel); every transform below uses exactly these.

    Args:
        height (int): input image height ``H`` in pixels, at least 1.
        width (int): input image width ``W`` in pixels, at least 1.
        size (int): side ``S`` of the square working frame in pixels.
            Default: 224.

    Examples::

        >>> frame = ResizePad(448, 224)  # (H, W)
        >>> frame.content_height, frame.content_width, frame.offset_x
        (224, 112, 56)
        >>> frame.boxes_to_working([[0, 0, 224, 448]]).tolist()
        [[56.0, 0.0, 168.0, 224.0]]
    """

    height: int
    width: int
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        for name in ("height", "width", "size"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))

    @classmethod
    def for_image(cls, image: npt.ArrayLike, size: int = DEFAULT_SIZE) -> ResizePad:
        """The transform for an image's own size.

        Args:
            image (array-like): ``(H, W)`` grey image (or any ``(H, W)`` array).
            size (int): side ``S`` of the working frame in pixels. Default: 224.

        Returns:
            ResizePad: ``ResizePad(H, W, size)``.
        """
        shape = np.shape(image)
        if len(shape) != 2:
            raise ImageLoadError(
                f"expected a 2-D (H, W) grey image, got an array of shape {shape}; "
                "convert colour images to grey first"
            )
        return cls(shape[0], shape[1], size)

    # ------------------------------------------------------------------ geometry

    @property
    def content_height(self) -> int:
        """Height of the scaled image inside the working frame, in pixels."""
        return _scaled_side(self.height, max(self.height, self.width), self.size)

    @property
    def content_width(self) -> int:
        """Width of the scaled image inside the working frame, in pixels."""
        return _scaled_side(self.width, max(self.height, self.width), self.size)

    @property
    def offset_y(self) -> int:
        """Rows of padding above the content, in working pixels."""
        return (self.size - self.content_height) // 2

    @property
    def offset_x(self) -> int:
        """Columns of padding left of the content, in working pixels."""
        return (self.size - self.content_width) // 2

    @property
    def scale_y(self) -> float:
        """Working pixels per input pixel along y (rows)."""
        return self.content_height / self.height

    @property
    def scale_x(self) -> float:
        """Working pixels per input pixel along x (columns)."""
        return self.content_width / self.width

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """The content as an ``(x1, y1, x2, y2)`` box in the working frame (exclusive ends)."""
        return (
            self.offset_x,
            self.offset_y,
            self.offset_x + self.content_width,
            self.offset_y + self.content_height,
        )

    def content_mask(self) -> npt.NDArray[np.bool_]:
        """Where the working frame shows the image.

        Returns:
            np.ndarray: ``(S, S)`` bool, True on the content, False on the padding.
        """
        x1, y1, x2, y2 = self.content_box
        mask = np.zeros((self.size, self.size), dtype=bool)
        mask[y1:y2, x1:x2] = True
        return mask

    # ------------------------------------------------------------------- images

    def image_to_working(self, image: GreyImage | npt.NDArray[np.floating]) -> WorkingImage:
        """Resize-pad a grey image into the working frame.

        The image is resized to the content size with PIL's bilinear filter
        (antialiased when shrinking) in float precision and pasted at the offset on
        zeros.

        Args:
            image (GreyImage | np.ndarray): ``(H, W)`` uint8 (0 = black) or float in
                ``[0, 1]``; ``(H, W)`` must equal ``(height, width)``.

        Returns:
            WorkingImage: ``(S, S)`` float32 in ``[0, 1]``, 0 in the padding.
        """
        grey = _grey_float(image)
        if grey.shape != (self.height, self.width):
            raise ImageLoadError(
                f"expected an image of shape (H, W) = {(self.height, self.width)} for this "
                f"ResizePad, got {grey.shape}; build the transform with "
                "ResizePad.for_image(image)"
            )
        return self._paste(np.clip(self._resize_to_content(grey), 0.0, 1.0))

    def heatmap_to_working(self, heatmap: npt.ArrayLike) -> Heatmap:
        """Map an input-frame heatmap into the working frame.

        Args:
            heatmap (Heatmap): ``(H, W)`` finite scores in the input frame (any unit).

        Returns:
            Heatmap: ``(S, S)`` float32, bilinearly resized scores on the content and
            exactly 0 in the padding.
        """
        scores = _finite_map(heatmap, (self.height, self.width), "input-frame heatmap")
        return self._paste(self._resize_to_content(scores))

    def heatmap_to_input(self, heatmap: npt.ArrayLike) -> Heatmap:
        """Map a working-frame heatmap back to the input frame.

        The content box is cropped (the padding never contributes) and resized with
        PIL's bilinear filter in float precision to ``(H, W)``.

        Args:
            heatmap (Heatmap): ``(S, S)`` finite scores in the working frame.

        Returns:
            Heatmap: ``(H, W)`` float32 scores in the input frame (same unit).
        """
        scores = _finite_map(heatmap, (self.size, self.size), "working-frame heatmap")
        x1, y1, x2, y2 = self.content_box
        return _resize(scores[y1:y2, x1:x2], self.height, self.width)

    # ------------------------------------------------------------ points, boxes

    def points_to_working(self, xy: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map input-frame points to the working frame (no clipping).

        Args:
            xy (array-like): ``(N, 2)`` finite ``(x, y)`` in input pixels.

        Returns:
            np.ndarray: ``(N, 2)`` float64 ``(x, y)`` in working pixels.
        """
        points = _coordinates(xy, 2, "points")
        return points * self._scale_xy + self._offset_xy

    def points_to_input(self, xy: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map working-frame points to the input frame (no clipping).

        Args:
            xy (array-like): ``(N, 2)`` finite ``(x, y)`` in working pixels.

        Returns:
            np.ndarray: ``(N, 2)`` float64 ``(x, y)`` in input pixels.
        """
        points = _coordinates(xy, 2, "points")
        return (points - self._offset_xy) / self._scale_xy

    def boxes_to_working(self, boxes: npt.ArrayLike) -> BoxArray:
        """Map input-frame boxes to the working frame, clipped to the content box.

        A box that lies outside the image keeps zero area after clipping
        (``x2 == x1`` or ``y2 == y1``); no box ever gets a negative size.

        Args:
            boxes (array-like): ``(N, 4)`` finite ``(x1, y1, x2, y2)`` in input
                pixels, exclusive ends, ``x1 <= x2`` and ``y1 <= y2``.

        Returns:
            BoxArray: ``(N, 4)`` float64 boxes in working pixels inside
            :attr:`content_box`.
        """
        mapped = _boxes(boxes) * np.tile(self._scale_xy, 2) + np.tile(self._offset_xy, 2)
        x1, y1, x2, y2 = self.content_box
        return _clip_boxes(mapped, x1, y1, x2, y2)

    def boxes_to_input(self, boxes: npt.ArrayLike) -> BoxArray:
        """Map working-frame boxes to the input frame, clipped to ``[0, W] x [0, H]``.

        Boxes (or parts of boxes) in the padding are clipped away; a box entirely in
        the padding keeps zero area.

        Args:
            boxes (array-like): ``(N, 4)`` finite ``(x1, y1, x2, y2)`` in working
                pixels, exclusive ends, ``x1 <= x2`` and ``y1 <= y2``.

        Returns:
            BoxArray: ``(N, 4)`` float64 boxes in input pixels.
        """
        mapped = (_boxes(boxes) - np.tile(self._offset_xy, 2)) / np.tile(self._scale_xy, 2)
        return _clip_boxes(mapped, 0.0, 0.0, float(self.width), float(self.height))

    # ------------------------------------------------------------------ helpers

    @property
    def _scale_xy(self) -> npt.NDArray[np.float64]:
        return np.array([self.scale_x, self.scale_y])

    @property
    def _offset_xy(self) -> npt.NDArray[np.float64]:
        return np.array([self.offset_x, self.offset_y], dtype=np.float64)

    def _resize_to_content(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return _resize(values, self.content_height, self.content_width)

    def _paste(self, content: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x1, y1, x2, y2 = self.content_box
        out = np.zeros((self.size, self.size), dtype=np.float32)
        out[y1:y2, x1:x2] = content
        return out


def grid_to_working(grid: npt.ArrayLike, size: int = DEFAULT_SIZE) -> Heatmap:
    """Expand a token-grid map to the square working frame by blocks.

    Token ``(i, j)`` of a ``(gh, gw)`` grid covers rows
    ``floor(i * S / gh) <= r < floor((i + 1) * S / gh)`` and the matching columns,
    so the blocks tile the frame exactly even when ``S`` is not a multiple of the grid.

    Args:
        grid (TokenGrid): ``(gh, gw)`` finite scores on the model's image-token grid,
            ``1 <= gh, gw <= S``.
        size (int): side ``S`` of the working frame in pixels. Default: 224.

    Returns:
        Heatmap: ``(S, S)`` float32, each pixel holding its token's score.

    Examples::

        >>> grid_to_working(np.array([[1.0, 2.0]]), size=3).tolist()
        [[1.0, 2.0, 2.0], [1.0, 2.0, 2.0], [1.0, 2.0, 2.0]]
    """
    side = _positive_int("size", size)
    scores: TokenGrid = np.asarray(grid, dtype=np.float32)
    if scores.ndim != 2 or not (1 <= scores.shape[0] <= side and 1 <= scores.shape[1] <= side):
        raise ValueError(
            f"expected a 2-D (gh, gw) token grid with 1 <= gh, gw <= {side}, got shape "
            f"{scores.shape}; pass the grid reshaped to its (rows, columns) layout"
        )
    if not np.isfinite(scores).all():
        raise ValueError("token grid contains NaN or infinite values; scores must be finite")
    rows = _block_index(scores.shape[0], side)
    cols = _block_index(scores.shape[1], side)
    return scores[rows[:, None], cols[None, :]]


def overlap_matrix(cells: int, size: int, reduce: str) -> torch.Tensor:
    """Exact 1-D resampling weights from ``cells`` equal cells onto ``size`` pixels.

    Cells and pixels tile the same segment. ``O[i, j]`` is the overlap of pixel ``i``
    with cell ``j`` as a fraction of the segment; ``"sum"`` scales it so every cell's
    value is shared out in proportion (each column sums to 1: totals preserved),
    ``"mean"`` so every pixel is the overlap-weighted mean of its cells (each row
    sums to 1: levels preserved).

    Args:
        cells (int): number of input cells (>= 1).
        size (int): number of output pixels (>= 1).
        reduce (str): ``"sum"`` or ``"mean"``.

    Returns:
        torch.Tensor: (size, cells) float64 weights.

    Examples::

        >>> overlap_matrix(2, 4, "sum").tolist()
        [[0.5, 0.0], [0.5, 0.0], [0.0, 0.5], [0.0, 0.5]]
        >>> overlap_matrix(4, 2, "mean").tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    cells, size = _positive_int("cells", cells), _positive_int("size", size)
    # exact rational edges on a common grid of cells * size units
    pixel = torch.arange(size + 1, dtype=torch.float64) * cells
    cell = torch.arange(cells + 1, dtype=torch.float64) * size
    low = torch.maximum(pixel[:-1, None], cell[None, :-1])
    high = torch.minimum(pixel[1:, None], cell[None, 1:])
    overlap = (high - low).clamp(min=0) / (cells * size)
    return overlap * (cells if reduce == "sum" else size)


def cells_to_working(values: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    """Resample (B, h, w) cell maps that tile the frame onto (B, S, S) pixels, exactly.

    Args:
        values (torch.Tensor): (B, h, w) one value per cell (model pixels, patches or
            tokens); the cells tile the whole working frame.
        size (int): side S of the working frame.
        reduce (str): ``"sum"``: a cell's value is shared among the pixels it covers
            (the map's total is preserved: gradients, relevance); ``"mean"``: a pixel
            takes the overlap-weighted mean of its cells (activations).

    Returns:
        torch.Tensor: (B, S, S) float32 (differentiable).

    Examples::

        >>> cells_to_working(torch.tensor([[[4.0]]]), 2, "sum").tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
        >>> cells_to_working(torch.tensor([[[4.0]]]), 2, "mean").tolist()
        [[[4.0, 4.0], [4.0, 4.0]]]
    """
    if values.ndim != 3:
        raise ValueError(f"expected (B, h, w) cell maps, got shape {tuple(values.shape)}")
    rows = overlap_matrix(values.shape[1], size, reduce).to(values.device)
    cols = overlap_matrix(values.shape[2], size, reduce).to(values.device)
    out = rows @ values.to(torch.float64) @ cols.T
    return out.float()


def _block_index(cells: int, side: int) -> npt.NDArray[np.intp]:
    """Cell index of each of ``side`` pixels when ``cells`` blocks tile them."""
    edges = (np.arange(cells + 1) * side) // cells
    return np.searchsorted(edges, np.arange(side), side="right") - 1


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"{name} must be a positive integer number of pixels, got {value!r} "
            f"({type(value).__name__}); pass an int"
        ) from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer number of pixels, got {number}")
    return number


def _scaled_side(side: int, long_side: int, size: int) -> int:
    """``round(side * size / long_side)``, half up, in exact integer arithmetic, >= 1."""
    return max(1, (2 * side * size + long_side) // (2 * long_side))


def _resize(values: npt.NDArray[np.float32], height: int, width: int) -> npt.NDArray[np.float32]:
    """Bilinear (antialiased) resize of a float map with PIL mode ``"F"``."""
    picture = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))
    resized = picture.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _grey_float(image: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(image)
    if array.ndim != 2 or array.size == 0:
        raise ImageLoadError(
            f"expected a non-empty 2-D (H, W) grey image, got an array of shape {array.shape}; "
            "convert colour images to grey first"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageLoadError(
            f"expected a uint8 or float grey image, got dtype {array.dtype}; "
            "convert it with np.asarray(image, dtype=np.uint8) or scale to float in [0, 1]"
        )
    grey = array.astype(np.float32)
    if not np.isfinite(grey).all():
        raise ImageLoadError("grey image contains NaN or infinite values; pass finite pixels")
    if grey.min() < 0.0 or grey.max() > 1.0:
        raise ImageLoadError(
            f"expected a float grey image in [0, 1], got values in [{grey.min()}, {grey.max()}]; "
            "min-max scale it or pass uint8"
        )
    return grey


def _finite_map(
    values: npt.ArrayLike, shape: tuple[int, int], what: str
) -> npt.NDArray[np.float32]:
    array = np.asarray(values, dtype=np.float32)
    if array.shape != shape:
        raise ValueError(
            f"expected a {what} of shape (H, W) = {shape}, got {array.shape}; "
            "check which frame the map is in"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values; scores must be finite")
    return array


def _coordinates(values: npt.ArrayLike, columns: int, what: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, columns)
    if array.ndim != 2 or array.shape[1] != columns:
        layout = "(x, y)" if columns == 2 else "(x1, y1, x2, y2)"
        raise ValueError(
            f"expected {what} as an (N, {columns}) array of {layout}, got shape {array.shape}; "
            f"wrap a single one as [[...]]"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite coordinates; they must be finite")
    return array


def _boxes(values: npt.ArrayLike) -> BoxArray:
    boxes = _coordinates(values, 4, "boxes")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        first = int(np.flatnonzero(inverted)[0])
        raise ValueError(
            f"expected boxes (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, got "
            f"{boxes[first].tolist()} at row {first}; boxes use exclusive ends, not (x, y, w, h)"
        )
    return boxes


def _clip_boxes(boxes: BoxArray, x1: float, y1: float, x2: float, y2: float) -> BoxArray:
    """Clip to a rectangle; monotone maps keep ``x1 <= x2``, so no box turns negative."""
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], x1, x2)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], y1, y2)
    return clipped
