"""How a result shows itself in a notebook: PNG and HTML reprs, and a matplotlib axis.

:class:`~cxr_attrib.result.Attribution` calls these for ``_repr_png_``,
``_repr_html_`` and ``plot``; the picture is always the one overlay renderer's
(:func:`~cxr_attrib.render.render_overlay`), so a notebook shows what
``result.save("x.png")`` writes. matplotlib is imported only when :func:`plot_overlay`
runs.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from .html_page import render_template
from .render import BOX_COLOR, DASH, TRUTH_COLOR, render_overlay
from .typing import GreyImage, Heatmap

__all__ = ["attribution_html", "plot_overlay"]


def attribution_html(png: bytes | None, title: str, facts: Sequence[tuple[str, str]]) -> str:
    """An HTML fragment: the overlay PNG (inline) over a table of facts, every text escaped.

    Args:
        png (bytes | None): the overlay; None shows no picture (a result without its image).
        title (str): the heading (e.g. method and model).
        facts (Sequence[tuple[str, str]]): (label, value) rows, e.g. answer, boxes, passes.

    Returns:
        str: a ``<div>`` fragment for Jupyter's HTML output.
    """
    uri = "" if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return render_template("attribution.html.j2", png_uri=uri, title=title, rows=list(facts))


def plot_overlay(
    image: GreyImage,
    heatmap: Heatmap | None,
    boxes: Any,
    *,
    truth: Any = (),
    title: str = "",
    ax: Any = None,
) -> Any:
    """Draw the overlay on a matplotlib axis in input-frame pixel coordinates, with a legend.

    Args:
        image (GreyImage): (H, W) uint8 grey input image.
        heatmap (Heatmap | None): (H, W) scores in the input frame, or None.
        boxes (array-like): (N, 4) evidence boxes, input pixels, exclusive ends.
        truth (array-like): (M, 4) ground-truth boxes. Default: none.
        title (str): the axis title. Default: "".
        ax (matplotlib.axes.Axes | None): where to draw. Default: None (the current axis).

    Returns:
        matplotlib.axes.Axes: the axis drawn on.
    """
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        ax = plt.gca()
    picture = np.asarray(render_overlay(image, heatmap, boxes, truth=truth))
    height, width = picture.shape[:2]
    ax.imshow(picture, extent=(0, width, height, 0), interpolation="nearest")
    handles = []
    if len(boxes):
        handles.append(Line2D([], [], color=np.array(BOX_COLOR) / 255, linestyle=(0, DASH), lw=2,
                              label="evidence boxes"))
    if len(truth):
        handles.append(Line2D([], [], color=np.array(TRUTH_COLOR) / 255, lw=2, label="ground truth"))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize="small", framealpha=0.8)
    ax.set_title(title, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
