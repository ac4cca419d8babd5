"""Overlay thumbnails of a few units per method, for the HTML report.

Each thumbnail is the unit's image, its heatmap when one was kept, its predicted
boxes (dashed cyan, :data:`~cxr_attrib.render.BOX_COLOR`) and the ground-truth boxes
(solid green, :data:`~cxr_attrib.render.TRUTH_COLOR`), drawn by the one overlay renderer
(:func:`~cxr_attrib.render.render_overlay`) and scaled to a small PNG. The image is re-loaded through the
unit's registered benchmark (full resolution; the phantom benchmark rebuilds it from
the sample id), else taken from the unit (a store's thumbnail); without either the
boxes and heatmap are drawn on a dark canvas of the input frame's size. Image and
heatmap may have any resolution with the input frame's aspect ratio.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr_attrib.errors import CxrAttribError, DataError
from cxr_attrib.render import TRUTH_COLOR, render_overlay
from cxr_attrib.typing import GreyImage

from .report import UnitResult

__all__ = ["TRUTH_COLOR", "Thumbnail", "benchmark_image", "pick_units", "render_thumbnail",
           "thumbnails"]

_CANVAS_GREY = 40


@dataclass(frozen=True)
class Thumbnail:
    """One overlay of one unit.

    Attributes:
        method (str): the method's label in the report tables.
        unit (UnitResult): the unit shown.
        png (bytes | None): the overlay PNG; None for a failed unit.
        has_image (bool): the real image is underneath (else a dark canvas).
    """

    method: str
    unit: UnitResult
    png: bytes | None
    has_image: bool

    @property
    def data_uri(self) -> str | None:
        """``data:image/png;base64,...`` of :attr:`png` (None without one)."""
        if self.png is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def pick_units(
    units: Sequence[UnitResult], label: Callable[[UnitResult], str], per_method: int
) -> dict[str, list[UnitResult]]:
    """Up to ``per_method`` units per method, the same (sample, model) for every method.

    Samples are chosen round-robin over findings (sorted), smallest sample id first,
    each with the first model (name order) that ran it, so the thumbnails of all
    methods show the same cases side by side.

    Returns:
        dict[str, list[UnitResult]]: method label -> units (a method that did not run a
        chosen case has fewer).
    """
    by_finding: dict[str, list[tuple[str, str, str]]] = {}
    for key in sorted({(u.finding, u.sample_id, u.model) for u in units}):
        cases = by_finding.setdefault(key[0], [])
        if not cases or cases[-1][1] != key[1]:
            cases.append(key)
    chosen: list[tuple[str, str, str]] = []
    queues = list(by_finding.values())
    while len(chosen) < per_method and any(queues):
        for queue in queues:
            if queue and len(chosen) < per_method:
                chosen.append(queue.pop(0))
    index = {(u.finding, u.sample_id, u.model, label(u)): u for u in units}
    picked: dict[str, list[UnitResult]] = {}
    for name in dict.fromkeys(label(u) for u in units):
        picked[name] = [index[case + (name,)] for case in chosen if case + (name,) in index]
    return picked


def benchmark_image(unit: UnitResult) -> GreyImage | None:
    """The unit's (H, W) uint8 image from its registered benchmark, or None when the
    benchmark, the sample or its image file is not available here, or when the image
    is not the size the unit was run on (``unit.image_size``)."""
    from cxr_attrib.registry import get_benchmark

    try:
        sample = get_benchmark(unit.benchmark).sample(unit.sample_id, split=unit.split)
        image = np.asarray(sample.load_image())
    except (CxrAttribError, OSError):
        return None
    if unit.image_size is not None and tuple(image.shape) != tuple(unit.image_size):
        return None
    return image


def _frame_shape(unit: UnitResult, image: GreyImage | None) -> tuple[int, int]:
    """(H, W) of the input frame: the unit's image size, else the image's or heatmap's
    shape, else the extent of the boxes."""
    for known in (unit.image_size, None if image is None else image.shape,
                  None if unit.heatmap is None else unit.heatmap.shape):
        if known is not None:
            return int(known[0]), int(known[1])
    boxes = np.concatenate([np.reshape(unit.pred_boxes, (-1, 4)), np.reshape(unit.gt_boxes, (-1, 4))])
    if boxes.size == 0:
        return (1, 1)
    return (max(1, int(np.ceil(boxes[:, 3].max()))), max(1, int(np.ceil(boxes[:, 2].max()))))


def _fit(array: np.ndarray, frame: tuple[int, int], size: tuple[int, int], what: str,
         unit: UnitResult) -> np.ndarray:
    """``array`` (h, w), a rendering of the (H, W) ``frame``, bilinearly resized to
    ``size`` = (W', H'); a different aspect ratio (beyond rounding) is an error."""
    (h, w), (height, width) = array.shape[:2], frame
    if array.ndim != 2 or abs(h * width / height - w) > 1.0:
        raise DataError(
            f"unit {unit.sample_id!r} ({unit.model}, {unit.method}): {what} of shape "
            f"{tuple(array.shape)} is not a rendering of the {height} x {width} input frame"
        )
    mode = "L" if array.dtype == np.uint8 else "F"
    array = np.ascontiguousarray(array, dtype=np.uint8 if mode == "L" else np.float32)
    return np.asarray(Image.fromarray(array, mode=mode).resize(size, Image.Resampling.BILINEAR))


def render_thumbnail(unit: UnitResult, image: GreyImage | None, *, side: int = 160) -> bytes:
    """A PNG overlay of ``unit`` whose longer side is ``side`` pixels.

    Args:
        unit (UnitResult): boxes in the input frame; its heatmap (h, w), if any, at any
            resolution with the frame's aspect.
        image (GreyImage | None): (h, w) uint8 input image at any resolution with the
            frame's aspect, or None for a dark canvas.
        side (int): longer side of the thumbnail in pixels. Default: 160.

    Returns:
        bytes: the PNG.

    Raises:
        DataError: the image or heatmap is not a rendering of the input frame.
    """
    frame = _frame_shape(unit, image)
    scale = side / max(frame)
    size = (max(1, round(frame[1] * scale)), max(1, round(frame[0] * scale)))
    if image is None:
        grey = np.full(size[::-1], _CANVAS_GREY, dtype=np.uint8)
    else:
        grey = _fit(np.asarray(image, dtype=np.uint8), frame, size, "image", unit)
    heat = None if unit.heatmap is None else _fit(
        np.asarray(unit.heatmap, dtype=np.float32), frame, size, "heatmap", unit)
    pred = np.reshape(np.asarray(unit.pred_boxes, dtype=np.float64), (-1, 4)) * scale
    truth = np.reshape(np.asarray(unit.gt_boxes, dtype=np.float64), (-1, 4)) * scale
    canvas = render_overlay(grey, heat, pred, truth=truth)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnails(
    picked: Mapping[str, Sequence[UnitResult]],
    *,
    side: int = 160,
    load_image: Callable[[UnitResult], GreyImage | None] = benchmark_image,
) -> Mapping[str, list[Thumbnail]]:
    """Thumbnails of the units :func:`pick_units` chose; each image loaded once.

    Args:
        picked (Mapping[str, Sequence[UnitResult]]): method label -> units.
        side (int): longer side of each thumbnail in pixels. Default: 160.
        load_image (Callable): unit -> (H, W) uint8 image or None; when None, the
            unit's own ``image`` is used. Default: :func:`benchmark_image`.

    Returns:
        Mapping[str, list[Thumbnail]]: method label -> its thumbnails (failed units
        have ``png=None``).
    """
    cache: dict[tuple[str, str, str], GreyImage | None] = {}
    out: dict[str, list[Thumbnail]] = {}
    for method, chosen in picked.items():
        out[method] = []
        for unit in chosen:
            key = (unit.benchmark, unit.split, unit.sample_id)
            if key not in cache:
                cache[key] = load_image(unit)
            image = cache[key] if cache[key] is not None else unit.image
            png = None if unit.error is not None else render_thumbnail(unit, image, side=side)
            out[method].append(Thumbnail(method, unit, png, image is not None))
    return out
