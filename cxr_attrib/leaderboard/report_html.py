"""The leaderboard report as ONE self-contained HTML file.

Inline CSS and a small vanilla script (sortable tables), overlay thumbnails as
``data:`` PNGs, the report's JSON in a ``<script type="application/json">``; no
network access. Every name, answer and error message (written by a model, a user
or a plugin) goes through :func:`html.escape`; the embedded JSON has ``<``, ``>``
and ``&`` as ``\\u`` escapes, so no text can close its element. A
Content-Security-Policy allows only the page's own style and script (by hash) and
``data:`` images, as a second line of defence.

Tables with the class ``sortable`` sort on a click of a column header (numbers by
their ``data-value``, missing values last). ``report.html#sort=<table id>:<column>:
<asc|desc>`` opens the page sorted.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence

from cxr_attrib.scoring.aggregate import AggregateRow, MetricSummary

from .report import Report
from .thumbnails import BOX_LEGEND, Thumbnail

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1b1f24}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:15px;margin:18px 0 6px}
p.note{color:#57606a;max-width:70em}
table{border-collapse:collapse;margin:6px 0 14px}.scroll{overflow-x:auto;max-width:100%}
td small{color:#57606a;font-size:11px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}
td.text,th.text{text-align:left;white-space:normal;min-width:9em;max-width:28em;overflow-wrap:anywhere}
th button{font:inherit;font-weight:600;border:0;background:none;cursor:pointer;padding:0}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
.grid{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:8px}
figure{margin:0;width:168px;font-size:12px;overflow-wrap:anywhere}
figure img{display:block;border:1px solid #d0d7de}
figure .failed{width:160px;min-height:60px;max-height:160px;overflow:hidden;padding:4px;
  box-sizing:border-box;background:#fde7e9;color:#82071e}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #555;vertical-align:middle}
.pred{background:#00ffff}.truth{background:#28dc28}
ul.errors li{font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
"""

_JS = """
(function () {
  "use strict";
  function key(cell) {
    var value = cell.getAttribute("data-value");
    if (value === null) { return cell.textContent.trim().toLowerCase(); }
    return value === "" ? null : parseFloat(value);
  }
  function compare(x, y) {
    if (x === y) { return 0; }
    if (x === null) { return 1; }
    if (y === null) { return -1; }
    return x < y ? -1 : 1;
  }
  function sortTable(table, column, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = direction === "desc" ? -1 : 1;
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (x === null || y === null) { return compare(x, y); }
      return sign * compare(x, y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === column) {
        th.setAttribute("aria-sort", direction === "desc" ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () {
        var next = th.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
        sortTable(table, column, next);
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
  var wanted = /^#sort=([A-Za-z0-9_-]+):([0-9]+):(asc|desc)$/.exec(window.location.hash);
  if (wanted) {
    var target = document.getElementById(wanted[1]);
    if (target && target.classList.contains("sortable")) {
      sortTable(target, parseInt(wanted[2], 10), wanted[3]);
    }
  }
})();
"""


def _e(value: object) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _plain(value: object) -> str:
    """A configuration value as plain text: JSON for lists and dicts, else ``str``."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _json_script(data: object) -> str:
    """JSON that cannot end its <script> element or open a comment."""
    text = json.dumps(data, ensure_ascii=True, sort_keys=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _metric_cell(summary: MetricSummary | None) -> str:
    if summary is None:
        return '<td data-value="">-</td>'
    tip = f"n = {summary.n}"
    interval = f"[{summary.ci_low:.1f}, {summary.ci_high:.1f}]"
    return (f'<td data-value="{summary.mean!r}" title="{_e(tip)}">{summary.mean:.1f} '
            f"<small>{_e(interval)}</small></td>")


def _seconds_cell(seconds: float | None) -> str:
    if seconds is None:
        return '<td data-value="">-</td>'
    return f'<td data-value="{seconds!r}">{seconds:.3f}</td>'


def _table(table_id: str, header: Sequence[tuple[str, bool]], rows: Iterable[str]) -> str:
    """A sortable table; ``header`` = (name, is_text) per column (text headers wrap),
    ``rows`` = <tr>s."""
    cells = "".join(f'<th class="text">{_e(n)}</th>' if text else f"<th>{_e(n)}</th>"
                    for n, text in header)
    return (f'<div class="scroll"><table class="sortable" id="{_e(table_id)}"><thead><tr>{cells}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _settings(report: Report) -> list[tuple[str, str]]:
    return list(dict.fromkeys((row.split, row.dataset) for row in report.rows))


def _ranking(report: Report, number: int, setting: tuple[str, str], models: bool) -> str:
    """The macro rows of one (split, dataset) (``models=False``) or its model rows."""
    header = [("rank", False), ("method", True), ("model" if models else "models", models)]
    header += [("n", False), ("failures", False), ("s/unit", False)]
    header += [(m, False) for m in report.metrics]
    body = []
    for rank, failed, seconds, row in zip(report.ranks, report.failures, report.seconds,
                                          report.rows):
        if (row.split, row.dataset) != setting or row.macro == models:
            continue
        third = (f'<td class="text">{_e(row.model)}</td>' if models
                 else f'<td data-value="{row.n_models}">{row.n_models}</td>')
        cells = [f'<td data-value="{rank}">{rank}</td>', f'<td class="text">{_e(row.method)}</td>',
                 third, f'<td data-value="{row.n}">{row.n}</td>',
                 f'<td data-value="{failed}">{failed}</td>', _seconds_cell(seconds)]
        cells += [_metric_cell(row.metrics.get(m)) for m in report.metrics]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _table(f"{'per-model' if models else 'ranking'}-{number}", header, body)


def _per_finding(report: Report, number: int, setting: tuple[str, str]) -> str:
    findings = list(report.findings)
    macro: dict[tuple[str, str], AggregateRow] = {
        (finding, row.method): row
        for finding, rows in report.findings.items()
        for row in rows
        if row.macro and (row.split, row.dataset) == setting
    }
    methods = [r.method for r in report.rows if r.macro and (r.split, r.dataset) == setting]
    header = [("method", True)] + [(finding, True) for finding in findings]  # names: wrap
    body = []
    for method in methods:
        cells = [f'<td class="text">{_e(method)}</td>']
        for finding in findings:
            row = macro.get((finding, method))
            cells.append(_metric_cell(None if row is None else row.metrics.get(report.rank_by)))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _table(f"findings-{number}", header, body)


def _failures(report: Report) -> str:
    rows = [
        f'<tr><td class="text">{_e(r.method)}</td><td class="text">{_e(r.model)}</td>'
        f'<td class="text">{_e(r.split)}</td><td class="text">{_e(r.dataset)}</td>'
        f'<td data-value="{failed}">{failed}</td></tr>'
        for failed, r in zip(report.failures, report.rows) if failed and not r.macro
    ]  # fmt: skip
    if not rows:
        return "<p>No unit failed.</p>"
    header = [("method", True), ("model", True), ("split", True), ("dataset", True), ("failures", False)]
    messages = "".join(
        f"<h3>{_e(method)}</h3><ul class=\"errors\">"
        + "".join(f"<li>{_e(message)}</li>" for message in errors) + "</ul>"
        for method, errors in report.errors.items()
    )
    return _table("failures", header, rows) + messages


def _figure(thumb: Thumbnail, rank_by: str) -> str:
    unit = thumb.unit
    value = unit.metrics.get(rank_by)
    score = "" if value is None or unit.error else f"{rank_by} {100 * float(value):.1f}"
    lines = [unit.sample_id, f"model: {unit.model}", f"finding: {unit.finding}",
             f"answer: {unit.answer if unit.answer is not None else '-'}", score]
    caption = "<br>".join(_e(line) for line in lines if line)
    if thumb.data_uri is None:
        picture = f'<div class="failed">failed: {_e(unit.error)}</div>'
    else:
        background = "" if thumb.has_image else " (image not available: boxes only)"
        alt = f"{unit.method} on {unit.sample_id}{background}"
        picture = f'<img src="{thumb.data_uri}" alt="{_e(alt)}">'
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def _overlays(report: Report, thumbs: Mapping[str, list[Thumbnail]]) -> str:
    legend = " ".join(
        f'<span class="swatch {"pred" if name == "predicted" else "truth"}"></span> {_e(name)}'
        for name in BOX_LEGEND
    )
    order = list(dict.fromkeys(row.method for row in report.rows))
    parts = [f'<p class="note">Boxes: {legend}; heat: dark to bright yellow.</p>']
    for method in order + [m for m in thumbs if m not in order]:
        if thumbs.get(method):
            figures = "".join(_figure(t, report.rank_by) for t in thumbs[method])
            parts.append(f'<h3>{_e(method)}</h3><div class="grid">{figures}</div>')
    return "".join(parts)


def render_html(
    report: Report,
    thumbs: Mapping[str, list[Thumbnail]] | None = None,
    *,
    title: str = "cxr-attrib leaderboard",
    run: Mapping[str, object] | None = None,
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

    Returns:
        str: the document; tables ``ranking-<k>`` (one macro row per method, ranked),
        ``per-model-<k>``, ``findings-<k>`` for the k-th (split, dataset), and
        ``failures``.
    """
    failed = sum(f for f, r in zip(report.failures, report.rows) if not r.macro)
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{report.n_units} units, {failed} failed. Methods are ranked by the '
        f"<b>macro</b> mean of <b>{_e(report.rank_by)}</b> over models (the mean of the model "
        "means, never pooled over samples). Cells: mean [bootstrap 95% CI] in percent; n counts "
        "units, failed ones included.</p>",
    ]
    if run:
        fields = "".join(f'<tr><th class="text">{_e(key)}</th><td class="text">{_e(_plain(value))}</td>'
                         "</tr>" for key, value in run.items())
        sections.append("<details><summary>Run configuration</summary>"
                        f'<table id="run">{fields}</table></details>')
    for number, setting in enumerate(_settings(report), 1):
        name = f"{setting[0]} · {setting[1]}"
        sections += [
            f"<h2>Ranking: {_e(name)}</h2>", _ranking(report, number, setting, models=False),
            f"<h3>Per model: {_e(name)}</h3>", _ranking(report, number, setting, models=True),
            f"<h3>Per finding ({_e(report.rank_by)}, macro over models): {_e(name)}</h3>",
            _per_finding(report, number, setting),
        ]
    sections += ["<h2>Failures</h2>", _failures(report)]
    if thumbs:
        sections += ["<h2>Overlays</h2>", _overlays(report, thumbs)]
    data = _json_script(report.to_dict())
    policy = (f"default-src 'none'; img-src data:; style-src {_sha256(_CSS)}; "
              f"script-src {_sha256(_JS)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + f'\n<script type="application/json" id="report-data">{data}</script>'
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )
