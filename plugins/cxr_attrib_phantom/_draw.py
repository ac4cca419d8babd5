"""Small vectorised drawing primitives shared by the phantom's anatomy and findings.

Everything works on float32 ``(H, W)`` arrays indexed ``[row, col]``. Pixel centres
sit at integer coordinates, so the pixel ``[r, c]`` covers ``[c - 0.5, c + 0.5)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


def smoothstep(t: npt.ArrayLike) -> FloatArray:
    """Cubic ramp ``3t^2 - 2t^3`` of ``t`` clipped to [0, 1]: exactly 0 below 0, 1 above 1."""
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse_value(
    x: FloatArray, y: FloatArray, cx: float, cy: float, a: float, b: float, phi: float = 0.0
) -> FloatArray:
    """Implicit ellipse function: < 1 inside, 1 on the boundary, > 1 outside.

    Args:
        x, y (np.ndarray): coordinate grids of one shape (any unit).
        cx, cy (float): centre, same unit.
        a, b (float): semi-axes along the ellipse's own x and y axes, same unit.
        phi (float, optional): rotation of the ellipse's x axis, radians, towards +y.
            Default: ``0.0``.

    Returns:
        np.ndarray: ``(u / a)^2 + (v / b)^2`` in the ellipse's own frame.
    """
    dx, dy = x - cx, y - cy
    if phi:
        c, s = np.cos(phi), np.sin(phi)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (dx / a) ** 2 + (dy / b) ** 2


def ellipse_half_width(a: float, b: float, phi: float) -> float:
    """Half of the horizontal extent of an ellipse with semi-axes ``a, b`` rotated by ``phi``."""
    return float(np.sqrt((a * np.cos(phi)) ** 2 + (b * np.sin(phi)) ** 2))


def draw_segments(canvas: FloatArray, segments: np.ndarray) -> None:
    """Add tapered tubes (projected cylinders) to ``canvas`` in place.

    Each tube adds ``amp * sqrt(1 - (d / w)^2)`` where ``d`` is the pixel's distance to
    the segment and ``w`` its half-width; only a window around each segment is
    evaluated, all segments at once.

    Args:
        canvas (np.ndarray): ``(H, W)`` float32, modified in place.
        segments (np.ndarray): ``(K, 6)`` rows ``x0, y0, x1, y1, w, amp`` in pixel
            coordinates (x = column, y = row), half-width ``w`` in pixels, ``amp`` in
            intensity units (negative values darken).
    """
    seg = np.asarray(segments, dtype=np.float32).reshape(-1, 6)
    if seg.shape[0] == 0:
        return
    h, w_img = canvas.shape
    x0, y0, x1, y1, half, amp = (seg[:, i, None, None] for i in range(6))
    pad = seg[:, 4] + 1.0
    c0 = np.floor(np.minimum(seg[:, 0], seg[:, 2]) - pad).astype(np.int64)
    r0 = np.floor(np.minimum(seg[:, 1], seg[:, 3]) - pad).astype(np.int64)
    span_c = int(np.ceil(np.max(np.abs(seg[:, 2] - seg[:, 0]) + 2 * pad))) + 2
    span_r = int(np.ceil(np.max(np.abs(seg[:, 3] - seg[:, 1]) + 2 * pad))) + 2
    cols = (c0[:, None] + np.arange(span_c))[:, None, :]
    rows = (r0[:, None] + np.arange(span_r))[:, :, None]
    vx, vy = x1 - x0, y1 - y0
    length2 = np.maximum(vx * vx + vy * vy, np.float32(1e-12))
    px, py = cols.astype(np.float32) - x0, rows.astype(np.float32) - y0
    t = np.clip((px * vx + py * vy) / length2, 0.0, 1.0)
    d2 = (px - t * vx) ** 2 + (py - t * vy) ** 2
    value = amp * np.sqrt(np.clip(1.0 - d2 / (half * half), 0.0, None))
    keep = (value != 0) & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w_img)
    flat = np.broadcast_to(rows * w_img + cols, keep.shape)[keep]
    canvas += np.bincount(flat, weights=value[keep], minlength=h * w_img).reshape(h, w_img).astype(
        np.float32
    )


def tight_box(mask: BoolArray) -> np.ndarray:
    """Tight box of the true pixels of a mask, exclusive ends.

    Args:
        mask (np.ndarray): ``(H, W)`` bool.

    Returns:
        np.ndarray: ``(4,)`` float64 ``x1, y1, x2, y2`` in pixels (``x2 = last col + 1``);
        all zeros when the mask is empty.

    Examples::

        >>> m = np.zeros((5, 6), bool); m[1:3, 2:5] = True
        >>> tight_box(m).tolist()
        [2.0, 1.0, 5.0, 3.0]
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros(4, dtype=np.float64)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def box_mask(box: np.ndarray, shape: tuple[int, int]) -> BoolArray:
    """``(H, W)`` bool mask of the pixels inside an exclusive-end box ``x1, y1, x2, y2``."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    out = np.zeros(shape, dtype=bool)
    out[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return out
