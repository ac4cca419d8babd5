"""The leaderboard report as ONE self-contained HTML file, from ``templates/report.html.j2``.

Inline CSS and a small vanilla script (sortable tables), overlay thumbnails as
``data:`` PNGs, the report's JSON in a ``<script type="application/json">``; no
network access. The page is a Jinja2 template with autoescaping on, so every name,
answer and error message (written by a model, a user or a plugin) is text; the
embedded JSON has ``<``, ``>`` and ``&`` as ``\\u`` escapes, so no text can close its
element. A Content-Security-Policy allows only the page's own style and script (by
hash) and ``data:`` images, as a second line of defence.

Tables with the class ``sortable`` sort on a click of a column header (numbers by
their ``data-value``, missing values last). ``report.html#sort=<table id>:<column>:
<asc|desc>`` opens the page sorted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from cxr_attrib.html_page import asset, content_policy, render_template
from cxr_attrib.scoring.aggregate import AggregateRow, MetricSummary

from .report import Report
from .thumbnails import Thumbnail

__all__ = ["render_html", "table"]

Cell = dict[str, Any]


def cell(text: object, value: object = None, *, text_cell: bool = False, title: str | None = None,
         small: str | None = None) -> Cell:
    """One table cell: ``text`` shown, ``value`` its sort key (``""`` = missing, None = sort by text)."""
    return {"text": text, "value": value, "cls": "text" if text_cell else None, "title": title, "small": small}


def table(table_id: str, header: list[tuple[str, bool]], rows: list[list[Cell]],
          classes: list[str | None] | None = None) -> Cell:
    """A sortable table: ``header`` = (name, is_text) per column (text headers wrap);
    ``classes``: one CSS class (or None) per row. Default: None (no row class)."""
    return {"id": table_id, "header": header, "rows": rows, "classes": classes}


def _metric_cell(summary: MetricSummary | None) -> Cell:
    if summary is None:
        return cell("-", "")
    return cell(f"{summary.mean:.1f}", repr(summary.mean), title=f"n = {summary.n}",
                small=f"[{summary.ci_low:.1f}, {summary.ci_high:.1f}]")


def _seconds_cell(seconds: float | None) -> Cell:
    return cell("-", "") if seconds is None else cell(f"{seconds:.3f}", repr(seconds))


def _plain(value: object) -> str:
    """A configuration value as plain text: JSON for lists and dicts, else ``str``."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _settings(report: Report) -> list[tuple[str, str]]:
    return list(dict.fromkeys((row.split, row.dataset) for row in report.rows))


def _ranking(report: Report, number: int, setting: tuple[str, str], models: bool) -> Cell:
    """The macro rows of one (split, dataset) (``models=False``) or its model rows."""
    header = [("rank", False), ("method", True), ("model" if models else "models", models)]
    header += [("n", False), ("failures", False), ("s/unit", False)]
    header += [(m, False) for m in report.metrics]
    body, classes = [], []
    for rank, failed, seconds, row in zip(report.ranks, report.failures, report.seconds, report.rows):
        if (row.split, row.dataset) != setting or row.macro == models:
            continue
        third = cell(row.model, text_cell=True) if models else cell(row.n_models, row.n_models)
        reference = row.method in report.references
        body.append([cell(rank, "" if reference else rank), cell(row.method, text_cell=True), third,
                     cell(row.n, row.n), cell(failed, failed), _seconds_cell(seconds)]
                    + [_metric_cell(row.metrics.get(m)) for m in report.metrics])
        classes.append("reference" if reference else None)  # sorts last: no rank value
    return table(f"{'per-model' if models else 'ranking'}-{number}", header, body, classes)


def _uninformative(report: Report, setting: tuple[str, str]) -> list[tuple[str, str]]:
    """(model, metric) of one (split, dataset) where ``truth`` does not beat ``random``."""
    return [(model, metric) for model, split, dataset, metric in report.uninformative
            if (split, dataset) == setting]


def _per_finding(report: Report, number: int, setting: tuple[str, str]) -> Cell:
    macro: dict[tuple[str, str], AggregateRow] = {
        (finding, row.method): row
        for finding, rows in report.findings.items()
        for row in rows
        if row.macro and (row.split, row.dataset) == setting
    }
    methods = [r.method for r in report.rows if r.macro and (r.split, r.dataset) == setting]
    header = [("method", True)] + [(finding, True) for finding in report.findings]  # names: wrap
    body = [[cell(method, text_cell=True)]
            + [_metric_cell(None if (row := macro.get((f, method))) is None else row.metrics.get(report.rank_by))
               for f in report.findings]
            for method in methods]
    return table(f"findings-{number}", header, body,
                 ["reference" if method in report.references else None for method in methods])


def _failures(report: Report) -> Cell:
    header = [("method", True), ("model", True), ("split", True), ("dataset", True), ("failures", False)]
    rows = [[cell(r.method, text_cell=True), cell(r.model, text_cell=True), cell(r.split, text_cell=True),
             cell(r.dataset, text_cell=True), cell(failed, failed)]
            for failed, r in zip(report.failures, report.rows) if failed and not r.macro]
    return table("failures", header, rows)


def _figure(thumb: Thumbnail, rank_by: str) -> dict[str, Any]:
    unit = thumb.unit
    value = unit.metrics.get(rank_by)
    score = "" if value is None or unit.error else f"{rank_by} {100 * float(value):.1f}"
    lines = [unit.sample_id, f"model: {unit.model}", f"finding: {unit.finding}",
             f"answer: {unit.answer if unit.answer is not None else '-'}", score]
    background = "" if thumb.has_image else " (image not available: boxes only)"
    return {"uri": thumb.data_uri, "alt": f"{unit.method} on {unit.sample_id}{background}", "error": unit.error,
            "lines": [line for line in lines if line]}


def _overlays(report: Report, thumbs: Mapping[str, list[Thumbnail]]) -> list[tuple[str, list[dict[str, Any]]]]:
    order = list(dict.fromkeys(row.method for row in report.rows))
    return [(method, [_figure(t, report.rank_by) for t in thumbs[method]])
            for method in order + [m for m in thumbs if m not in order] if thumbs.get(method)]


def render_html(
    report: Report,
    thumbs: Mapping[str, list[Thumbnail]] | None = None,
    *,
    title: str = "cxr-attrib leaderboard",
    run: Mapping[str, object] | None = None,
    xbench: Mapping[str, Any] | None = None,
) -> str:
    """The whole report as one HTML document (UTF-8 text).

    Args:
        report (Report): output of :func:`~cxr_attrib.leaderboard.report.build_report`.
        thumbs (Mapping[str, list[Thumbnail]] | None): overlays per method label, from
            :func:`~cxr_attrib.leaderboard.thumbnails.thumbnails`. Default: None (no
            overlay section).
        title (str): page title and heading (text). Default: ``"cxr-attrib leaderboard"``.
        run (Mapping[str, object] | None): the run configuration, shown as a table of
            fields. Default: None (not shown).
        xbench (Mapping | None): the XBench section from
            :func:`~cxr_attrib.leaderboard.xbench_report.xbench_html`. Default: None (not shown).

    Returns:
        str: the document; tables ``ranking-<k>`` (one macro row per method, ranked),
        ``per-model-<k>``, ``findings-<k>`` for the k-th (split, dataset), and
        ``failures``.
    """
    css, script = asset("report.css"), asset("sortable.js")
    settings = [{"name": f"{s[0]} · {s[1]}", "ranking": _ranking(report, k, s, models=False),
                 "per_model": _ranking(report, k, s, models=True), "findings": _per_finding(report, k, s),
                 "uninformative": _uninformative(report, s)}
                for k, s in enumerate(_settings(report), 1)]
    return render_template(
        "report.html.j2", title=title, policy=content_policy(css, script), css=Markup(css), script=Markup(script),
        n_units=report.n_units, failed=sum(f for f, r in zip(report.failures, report.rows) if not r.macro),
        rank_by=report.rank_by, run=[(key, _plain(value)) for key, value in (run or {}).items()],
        settings=settings, references=report.references, failures=_failures(report), errors=list(report.errors.items()),
        overlays=_overlays(report, thumbs) if thumbs else [], data=report.to_dict(), xbench=xbench,
    )
