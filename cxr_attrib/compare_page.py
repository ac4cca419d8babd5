"""The comparison sheet (``compare.png``) and page (``index.html``) of a :class:`~cxr_attrib.comparison.Comparison`.

Every panel is the one overlay renderer's picture (:func:`~cxr_attrib.render.render_overlay`):
the method's heatmap and dashed evidence boxes, the ground truth solid, and a title
with the answer, IoU, pointing game and deletion gain; a failed method shows the
image with its error. The page is a Jinja2 template with autoescaping on, with the
leaderboard report's style, sortable table and Content-Security-Policy.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup
from PIL import Image

from .html_page import asset, content_policy, render_template
from .outputs import check_outputs, write_files
from .render import add_caption, add_legend, render_overlay

# The functions take a :class:`~cxr_attrib.comparison.Comparison` and its panels; this module
# sits below :mod:`cxr_attrib.comparison` (which saves through it), so they are typed ``Any``.
Comparison = Panel = Any

__all__ = ["METRICS", "Sheet", "render_page", "render_sheet", "result_file", "save_comparison"]

METRICS: tuple[tuple[str, str], ...] = (("iou", "IoU"), ("pointing_game", "pointing game"),
                                        ("deletion_gain", "deletion gain"))
"""The (Scores field, label) pairs each panel's title and the page's table show."""

_COLUMNS = 3
_GAP = 8
_BACKGROUND = (24, 24, 24)


@dataclass(frozen=True)
class Sheet:
    """The comparison sheet and where each panel's picture lies on it.

    Attributes:
        image (PIL.Image.Image): the RGB sheet.
        origins (tuple[tuple[int, int], ...]): per panel, the (x, y) sheet pixel of
            the image's top-left corner.
        scale (int): sheet pixels per input pixel (the same for every panel).
    """

    image: Image.Image
    origins: tuple[tuple[int, int], ...]
    scale: int


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def panel_title(panel: Panel) -> str:
    """``method: answer`` and the three scores on a second line (``-`` where not computed)."""
    if panel.result is None:
        return f"{panel.method}: failed\n{panel.error}"
    scores = " | ".join(f"{label} {_number(panel.metric(name))}" for name, label in METRICS)
    note = "" if panel.error is None else f"\n{panel.error}"
    return f"{panel.method}: answer {panel.result.answer.strip()[:40]}\n{scores}{note}"


def _panel(comparison: Comparison, panel: Panel) -> Image.Image:
    truth = () if comparison.truth is None else comparison.truth
    if panel.result is None:  # the image, dimmed, under the error
        dimmed = (comparison.image.astype(np.float64) * 0.4).astype(np.uint8)
        return render_overlay(dimmed, caption=panel_title(panel), truth=truth)
    result = panel.result
    return render_overlay(comparison.image, result.heatmap, result.boxes, panel_title(panel), truth=truth)


def render_sheet(comparison: Comparison) -> Sheet:
    """All panels in a grid (3 columns), a header naming model, question and answer, and a legend.

    Returns:
        Sheet: the picture and each panel image's origin on it.
    """
    height, width = comparison.image.shape
    pictures = [_panel(comparison, p) for p in comparison.panels]
    scale = pictures[0].width // width
    cell_w, cell_h = pictures[0].width, max(p.height for p in pictures)
    columns = min(_COLUMNS, len(pictures))
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * _GAP, rows * cell_h + (rows + 1) * _GAP),
                      _BACKGROUND)
    origins = []
    for k, picture in enumerate(pictures):
        x, y = _GAP + (k % columns) * (cell_w + _GAP), _GAP + (k // columns) * (cell_h + _GAP)
        sheet.paste(picture, (x, y))
        origins.append((x, y + picture.height - scale * height))
    heat = any(p.result is not None and p.result.heatmap is not None for p in comparison.panels)
    sheet = add_legend(sheet, heat=heat, evidence=True, truth=comparison.truth is not None)
    header = f"{comparison.model} | {comparison.question} | answer: {comparison.answer.strip()[:80]}"
    with_header = add_caption(sheet, header)
    top = with_header.height - sheet.height
    return Sheet(with_header, tuple((x, y + top) for x, y in origins), scale)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def result_file(method: str) -> str:
    """``result-<method>.json`` with any character outside ``[A-Za-z0-9_.=-]`` as ``_``."""
    return "result-" + re.sub(r"[^A-Za-z0-9_.=-]", "_", method) + ".json"


def _box_text(boxes: object) -> str:
    rows = np.reshape(np.asarray(boxes, dtype=np.float64), (-1, 4))
    return ", ".join("(" + ", ".join(f"{v:g}" for v in box) + ")" for box in rows) or "-"


def render_page(comparison: Comparison) -> str:
    """``index.html``: the panels, a table ranked by IoU, the said-vs-used line; self-contained."""
    css, script = asset("report.css") + asset("compare.css"), asset("sortable.js")
    rows, figures = [], []
    for rank, panel in enumerate(comparison.ranked(), 1):
        result = panel.result
        rows.append({
            "rank": rank, "method": panel.method, "answer": "-" if result is None else result.answer.strip(),
            "metrics": [(panel.metric(name), _number(panel.metric(name))) for name, _ in METRICS],
            "boxes": "-" if result is None else _box_text(result.boxes),
            "seconds": None if result is None else result.meta.wall_time_s, "error": panel.error or "",
        })
    truth = comparison.truth
    for panel in comparison.panels:
        picture = _panel(comparison, panel)
        figures.append({"method": panel.method, "lines": panel_title(panel).splitlines(),
                        "uri": "data:image/png;base64," + base64.b64encode(_png(picture)).decode("ascii")})
    data = {"model": comparison.model, "question": comparison.question, "answer": comparison.answer,
            "truth": None if truth is None else truth.tolist(),
            "methods": [{"method": p.method, "error": p.error,
                         **{name: p.metric(name) for name, _ in METRICS}} for p in comparison.panels],
            "said_vs_used": [s.line() for s in comparison.said_vs_used]}
    return render_template(
        "compare.html.j2", title=f"cxr-attrib compare: {comparison.model}", policy=content_policy(css, script),
        css=Markup(css), script=Markup(script), question=comparison.question, answer=comparison.answer.strip(),
        model=comparison.model, truth="-" if truth is None else _box_text(truth),
        labels=[label for _, label in METRICS], rows=rows, figures=figures,
        said=[s.line() for s in comparison.said_vs_used], data=data,
    )


def save_comparison(comparison: Comparison, out: Path) -> list[Path]:
    """Write ``compare.png``, ``index.html`` and each ``result-<method>.json`` into ``out`` (together).

    Returns:
        list[Path]: the files written.
    """
    files = {out / "compare.png": _png(render_sheet(comparison).image),
             out / "index.html": render_page(comparison).encode("utf-8")}
    for panel in comparison.panels:
        if panel.result is not None:
            files[out / result_file(panel.method)] = panel.result.to_json().encode("utf-8")
    check_outputs(list(files))
    write_files(files)
    return list(files)
