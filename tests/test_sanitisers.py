"""One hostile string through every writer: each medium shows it as text, never as code.

The string is a model name, a method name, a finding, an answer and an error at once,
as a store written by a hostile plugin or model would hold them. Each writer's output
is checked for its medium: terminal (no escape sequence reaches the terminal, rich
markup shown literally), markdown (no HTML, link, image or emphasis), CSV (OWASP:
no cell starts a formula), HTML (autoescaped), JSON (the exact string, round-tripped).
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from cxr_attrib.cli import _error_line, cli
from cxr_attrib.errors import DataError
from cxr_attrib.sanitise import for_csv, for_markdown, for_terminal, terminal_text

HOSTILE = ("=HYPERLINK(1)[bold red]R[/] \x1b[31mA\x1b]8;;http://e.vil\x07L <script>x</script> "
           "[l](http://e.vil) ![i](x.png) **b** _e_ |p www.e.vil\r\nN")


def assert_terminal_safe(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output  # no escape sequence reaches the terminal
    assert "\\x1b[31mA" in output and "[bold red]R[/]" in output  # shown, not interpreted


def assert_markdown_safe(text: str) -> None:
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "](" not in text and "![" not in text  # no link, no image
    assert "**b**" not in text and " _e_ " not in text  # no emphasis
    assert "http://" not in text and "www.e" not in text  # no autolink
    assert "\x1b" not in text and "\\|p" in text  # no escape, no extra table cell


def _cells(csv_text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(csv_text)) for cell in row]


def assert_csv_safe(text: str) -> None:
    cells = [c for c in _cells(text) if "HYPERLINK" in c]
    assert cells and all(c.startswith("'=") for c in cells)
    assert not [c for c in _cells(text) if c[:1] in ("=", "+", "@", "\t", "\r")]


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    """A store whose model, method, finding, answer and error are all the hostile string."""
    from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, UnitRecord, unit_id
    from cxr_attrib.leaderboard.store import image_thumbnail

    path = tmp_path_factory.mktemp("hostile") / "leaderboard.sqlite"
    config = RunConfig("phantom", "direct", (HOSTILE,), (HOSTILE,))
    boxes = np.array([[10.0, 10.0, 40.0, 40.0]])
    with Store.create(path, config, "0/1") as store:
        for i, status in enumerate(("ok", "ok", "error")):
            sid = f"s{i}"
            store.add_sample(SampleRecord(sid, "phantom", i, HOSTILE, "q?", "direct", boxes, (64, 64),
                                          image_thumbnail(np.full((64, 64), 100, np.uint8))))
            store.add_unit(UnitRecord(
                unit_id(sid, HOSTILE, HOSTILE, {}, "direct", 0), sid, HOSTILE, HOSTILE, {}, "direct", 0, status,
                answer="Yes " + HOSTILE, boxes=boxes, metrics={"iou": 0.5 + i / 10} if status == "ok" else {},
                error=HOSTILE if status == "error" else None))
    return path


@pytest.fixture(scope="module")
def report_run(hostile_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, ["report", str(hostile_store), "--out", str(out), "--n-boot", "20", "--title", HOSTILE],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_report_terminal_table(report_run):
    assert_terminal_safe(report_run[1])


def test_report_markdown(report_run):
    text = (report_run[0] / "report.md").read_text()
    assert_markdown_safe(text)
    assert "## " in text and "\n## \\=HYPERLINK" in text  # the finding heading, escaped


def test_report_csv(report_run):
    assert_csv_safe((report_run[0] / "report.csv").read_text())


def test_report_json_keeps_the_exact_string(report_run):
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    found = set(strings(json.loads((report_run[0] / "report.json").read_text())))
    assert HOSTILE in found  # JSON is data: the exact string, encoded by json, not altered


def test_report_html_is_autoescaped(report_run):
    page = (report_run[0] / "report.html").read_text()
    assert "<script>x" not in page and "&lt;script&gt;x" in page


def test_said_vs_used_markdown_and_terminal(tmp_path):
    from cxr_attrib.leaderboard.agreement import AgreementRow, agreement_markdown
    from cxr_attrib.scoring import MetricSummary

    summary = MetricSummary(50.0, 40.0, 60.0, 3)
    row = AgreementRow(HOSTILE, HOSTILE, "direct", 3, {HOSTILE: summary}, summary, {HOSTILE: summary},
                       {HOSTILE: summary})
    text = agreement_markdown([row])
    assert_markdown_safe(text)
    console = Console(file=io.StringIO(), width=400)
    console.print(text, highlight=False, markup=False, soft_wrap=True)  # as said-vs-used prints it
    assert "\x1b" not in console.file.getvalue()


def test_leaderboard_summary_and_conflict_tables(hostile_store, tmp_path):
    """`leaderboard` prints a per-(model, method) table; `merge` a conflict table: both escape."""
    from cxr_attrib.leaderboard.cli import _print_summary
    from cxr_attrib.leaderboard.runner import RunStats

    console = Console(file=io.StringIO(), width=400, force_terminal=True, color_system=None)
    import cxr_attrib.leaderboard.cli as lb_cli

    real = lb_cli.console
    lb_cli.console = console
    try:
        _print_summary(hostile_store, RunStats())
    finally:
        lb_cli.console = real
    assert_terminal_safe(console.file.getvalue())


def test_error_lines(tmp_path):
    console = Console(file=io.StringIO(), width=400, force_terminal=True, color_system=None)
    console.print(_error_line(DataError(f"bad file {HOSTILE}")), highlight=False, soft_wrap=True)
    assert_terminal_safe(console.file.getvalue())


def test_each_sanitiser_on_its_own():
    assert_markdown_safe(for_markdown(HOSTILE))
    assert for_csv(HOSTILE).startswith("'=") and for_csv(-2.0) == -2.0 and for_csv("@x") == "'@x"
    assert for_csv("\tx") == "'\tx" and for_csv("\rx") == "'\rx" and for_csv("+1") == "'+1"
    console = Console(file=io.StringIO(), width=400)
    console.print(for_terminal(HOSTILE))
    console.print(terminal_text(HOSTILE))
    assert_terminal_safe(console.file.getvalue())
