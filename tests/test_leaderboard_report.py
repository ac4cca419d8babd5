"""The leaderboard report: ranking, macro vs pooled, failures, writers, thumbnails, HTML."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape
from PIL import Image
from rich.console import Console

from cxr_attrib.errors import DataError
from cxr_attrib.leaderboard.report import UnitResult, build_report, labeller, read_report_json, write_tables
from cxr_attrib.html_page import json_script as _json_script
from cxr_attrib.leaderboard.thumbnails import pick_units, render_thumbnail
from cxr_attrib.render import BOX_COLOR, TRUTH_COLOR, colormap
from cxr_attrib.scoring.aggregate import to_rich_table


def _unit(model, method, sample, iou=None, *, finding="mass", error=None, params=None, seconds=None,
          **metrics):
    values = {} if iou is None else {"iou": iou, **metrics}
    return UnitResult(
        sample_id=f"s/{sample}", benchmark="none", dataset="d", split="direct", finding=finding,
        model=model, method=method, params=params or {}, metrics=values, error=error,
        pred_boxes=np.array([[0.0, 0.0, 4.0, 4.0]]), gt_boxes=np.array([[2.0, 2.0, 6.0, 6.0]]),
        wall_time_s=seconds,
    )  # fmt: skip


def _units(model, method, values, **kwargs):
    return [_unit(model, method, f"{model}-{i}", v, **kwargs) for i, v in enumerate(values)]


def _table(report):
    return [(r.method, r.model, rank, round(r.metrics["iou"].mean, 9) if "iou" in r.metrics else None)
            for rank, r in zip(report.ranks, report.rows)]


def test_ranking_order_and_values_equal_a_hand_computation(tmp_path):
    units = (
        _units("a", "m1", [0.2, 0.4]) + _units("b", "m1", [0.5])   # 30, 50 -> macro 40
        + _units("a", "m2", [0.9, 0.7]) + _units("b", "m2", [0.2])  # 80, 20 -> macro 50
        + _units("a", "m3", [0.1]) + _units("b", "m3", [0.1, 0.3])  # 10, 20 -> macro 15
        + _units("a", "m4", [0.4]) + _units("b", "m4", [0.4])       # 40, 40 -> macro 40 (tie)
    )  # fmt: skip
    report = build_report(_through_store(tmp_path / "s.sqlite", units), metrics=["iou"], n_boot=200)
    assert _table(report) == [
        ("m2", "a", 1, 80.0), ("m2", "b", 1, 20.0), ("m2", "macro", 1, 50.0),
        ("m1", "a", 2, 30.0), ("m1", "b", 2, 50.0), ("m1", "macro", 2, 40.0),
        ("m4", "a", 2, 40.0), ("m4", "b", 2, 40.0), ("m4", "macro", 2, 40.0),
        ("m3", "a", 4, 10.0), ("m3", "b", 4, 20.0), ("m3", "macro", 4, 15.0),
    ]  # fmt: skip
    m2_b = report.rows[1].metrics["iou"]
    assert (m2_b.ci_low, m2_b.ci_high, m2_b.n) == (20.0, 20.0, 1)  # one value: a point CI
    assert [r.n for r in report.rows[:3]] == [2, 1, 3]


def test_lower_is_better_metric_ranks_ascending():
    units = _units("a", "good", [0.5], deletion_auc=0.1) + _units("a", "bad", [0.5], deletion_auc=0.7)
    report = build_report(units, rank_by="deletion_auc", metrics=["iou", "deletion_auc"], n_boot=50)
    assert [(r.method, rank) for r, rank in zip(report.rows, report.ranks) if r.macro] == [
        ("good", 1), ("bad", 2),
    ]  # fmt: skip
    with pytest.raises(DataError, match="rank_by='f1'"):
        build_report(units, rank_by="f1", metrics=["iou"])
    with pytest.raises(DataError, match="no units"):
        build_report([])
    with pytest.raises(DataError, match=r"no unit has a value for rank_by='f1'.*\['deletion_auc', 'iou'\]"):
        build_report(units, rank_by="f1")


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("mnop"),
                          st.floats(0, 1, allow_nan=False)), min_size=1, max_size=30))
def test_ranks_follow_the_mean_of_model_means(triples):
    units = [_unit(model, method, str(i), value) for i, (model, method, value) in enumerate(triples)]
    report = build_report(units, metrics=["iou"], n_boot=10)
    macro = [(rank, row) for rank, row in zip(report.ranks, report.rows) if row.macro]
    for rank, row in macro:
        means = [np.mean([v for mo, me, v in triples if (mo, me) == (model, row.method)])
                 for model in sorted({mo for mo, me, _ in triples if me == row.method})]
        assert row.metrics["iou"].mean == pytest.approx(100 * np.mean(means))
        better = sum(r.metrics["iou"].mean > row.metrics["iou"].mean for _, r in macro)
        assert rank == better + 1  # competition ranking: 1 + the number strictly better


def _through_store(path, units):
    """``units`` written to a store with the store API, then read back as the report does."""
    from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, UnitRecord, unit_id
    from cxr_attrib.leaderboard.store_units import read_units

    config = RunConfig("none", "direct", tuple(sorted({u.model for u in units})),
                       tuple(sorted({u.method for u in units})))
    with Store.create(path, config, "0/1") as store:
        for u in units:
            store.add_sample(SampleRecord(u.sample_id, u.dataset, 0, u.finding, "q", u.split,
                                          u.gt_boxes, (8, 8)))
            store.add_unit(UnitRecord(
                unit_id(u.sample_id, u.model, u.method, {}, "direct", 0), u.sample_id, u.model,
                u.method, {}, "direct", 0, "ok" if u.error is None else "error",
                metrics=dict(u.metrics), error=u.error))  # fmt: skip
    return read_units([path])[1]


def test_macro_average_is_not_the_pooled_average(tmp_path):
    """One model with 9x the samples: pooling would rank the methods the other way."""
    units = (
        _units("big", "p", [0.9] * 90) + _units("small", "p", [0.1] * 10)
        + _units("big", "q", [0.6] * 90) + _units("small", "q", [0.6] * 10)
    )  # fmt: skip
    units = _through_store(tmp_path / "bug9.sqlite", units)
    assert len(units) == 200
    report = build_report(units, metrics=["iou"], n_boot=100)
    rows = {(r.method, r.model): r for r in report.rows}
    pooled_p = 100 * np.mean([u.metrics["iou"] for u in units if u.method == "p"])
    assert pooled_p == pytest.approx(82.0)
    assert rows["p", "big"].metrics["iou"].mean == pytest.approx(90.0)
    assert rows["p", "small"].metrics["iou"].mean == pytest.approx(10.0)
    macro_p = rows["p", "macro"]
    assert macro_p.metrics["iou"].mean == pytest.approx(50.0) != pooled_p
    assert (macro_p.n, macro_p.n_models, macro_p.metrics["iou"].n) == (100, 2, 100)
    assert (macro_p.metrics["iou"].ci_low, macro_p.metrics["iou"].ci_high) == pytest.approx((50.0, 50.0))
    assert rows["q", "macro"].metrics["iou"].mean == pytest.approx(60.0)
    assert [(r.method, rank) for r, rank in zip(report.rows, report.ranks) if r.macro] == [
        ("q", 1), ("p", 2),
    ]  # fmt: skip


def _failing_units():
    return (
        _units("a", "ok", [0.5, 0.7]) + _units("b", "ok", [0.3])
        + _units("a", "flaky", [0.4])
        + [_unit("a", "flaky", "a-x", error="ValueError: boom"),
           _unit("a", "flaky", "a-y", error="ValueError: boom"),
           _unit("b", "flaky", "b-x", error="RuntimeError: bad image")]
        + [_unit("a", "broken", "a-z", error="ImportError: gone")]
    )  # fmt: skip


def test_failures_are_counted_per_model_and_method(tmp_path):
    units = _through_store(tmp_path / "s.sqlite", _failing_units())
    report = build_report(units, metrics=["iou"], n_boot=50)
    got = {(r.method, r.model): (rank, failed, r.n, r.metrics.get("iou"))
           for rank, failed, r in zip(report.ranks, report.failures, report.rows)}
    assert got["flaky", "a"][:3] == (2, 2, 3)           # 3 units, 2 failed
    assert got["flaky", "a"][3].n == 1                 # one value behind the mean
    assert got["flaky", "b"][:3] == (2, 1, 1) and got["flaky", "b"][3] is None
    assert got["flaky", "macro"][1:3] == (3, 4)
    assert got["flaky", "macro"][3].mean == pytest.approx(40.0)  # only model a has a value
    assert got["broken", "macro"][:3] == (3, 1, 1)      # no value at all: ranked last
    assert got["ok", "macro"][:2] == (1, 0)
    assert report.errors == {"broken": ("ImportError: gone",),
                             "flaky": ("ValueError: boom", "RuntimeError: bad image")}
    console = Console(file=io.StringIO(), width=200)
    console.print(to_rich_table(report.rows, report.metrics, lead=report.lead))
    line = next(l for l in console.file.getvalue().splitlines() if "flaky" in l and " a " in l)
    assert re.search(r"│\s*2\s*│\s*2\s*│\s*0.0\s*│\s*a\s*│", line)  # rank 2, failures 2, 0 s, model a


def test_seconds_per_unit_are_means_of_successful_units_and_macro_over_models():
    units = (
        [_unit("a", "m", "1", 0.5, seconds=1.0), _unit("a", "m", "2", 0.5, seconds=2.0),
         _unit("a", "m", "3", error="boom", seconds=100.0), _unit("b", "m", "4", 0.5, seconds=0.5)]
        + [_unit("a", "n", "5", 0.5)]
    )  # fmt: skip
    report = build_report(units, metrics=["iou"], n_boot=10)
    got = {(r.method, r.model): s for r, s in zip(report.rows, report.seconds)}
    assert got == {("m", "a"): 1.5, ("m", "b"): 0.5, ("m", "macro"): 1.0,
                   ("n", "a"): None, ("n", "macro"): None}


def test_markdown_csv_and_json_round_trip_the_values(tmp_path):
    units = _failing_units() + _units("a", "ok", [0.2], finding="nodule")
    report = build_report(units, metrics=["iou"], n_boot=100)
    paths = dict(zip(("markdown", "csv", "json"), write_tables(report, tmp_path)))
    assert read_report_json(paths["json"]) == report
    with paths["csv"].open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert [(int(l["rank"]), int(l["failures"]), l["method"], l["model"]) for l in lines] == [
        (r, f, row.method, row.model) for r, f, row in zip(report.ranks, report.failures, report.rows)
    ]
    for line, row in zip(lines, report.rows):
        summary = row.metrics.get("iou")
        assert line["iou_mean"] == ("" if summary is None else repr(summary.mean))
        assert line["iou_ci_low"] == ("" if summary is None else repr(summary.ci_low))
    markdown = paths["markdown"].read_text()
    body = [l for l in markdown.split("\n## ")[0].splitlines() if l.startswith("| ")][1:]
    assert len(body) == len(report.rows)
    for cells, rank, failed, row in zip(body, report.ranks, report.failures, report.rows):
        cells = [c.strip() for c in cells.strip("|").split("|")]
        summary = row.metrics.get("iou")
        expected = "-" if summary is None else (
            f"{summary.mean:.1f} [{summary.ci_low:.1f}, {summary.ci_high:.1f}]")
        assert cells == [str(rank), str(failed), "", row.model, "direct", row.method, "d",
                         str(row.n), expected]
    assert "## mass (macro over models)" in markdown and "## nodule (macro over models)" in markdown
    nodule = report.findings["nodule"]
    assert [(r.model, r.metrics["iou"].mean) for r in nodule] == [("a", pytest.approx(20.0)),
                                                                  ("macro", pytest.approx(20.0))]
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 7}')
    with pytest.raises(DataError, match="schema_version"):
        read_report_json(bad)


def test_a_method_run_with_several_parameter_sets_gets_one_row_per_set():
    units = (_units("a", "rise", [0.2], params={"n": 1}) + _units("a", "rise", [0.6], params={"n": 2})
             + _units("a", "occ", [0.4], params={"window": 8}))
    report = build_report(units, metrics=["iou"], n_boot=20)
    assert [r.method for r in report.rows if r.macro] == ["rise[n=2]", "occ", "rise[n=1]"]


def test_thumbnail_draws_heat_predicted_and_true_boxes():
    image = np.full((64, 64), 100, dtype=np.uint8)
    heat = np.zeros((64, 64), dtype=np.float32)
    heat[40:50, 40:50] = 1.0
    unit = UnitResult("s", "none", "d", "direct", "mass", "a", "m", heatmap=heat,
                      pred_boxes=np.array([[4.0, 4.0, 20.0, 20.0]]),
                      gt_boxes=np.array([[30.0, 4.0, 60.0, 30.0]]))
    png = np.asarray(Image.open(io.BytesIO(render_thumbnail(unit, image, side=64))).convert("RGB"))
    assert png.shape == (64, 64, 3)
    assert tuple(png[4, 10]) == BOX_COLOR and tuple(png[12, 19]) == BOX_COLOR
    assert tuple(png[4, 45]) == TRUTH_COLOR and tuple(png[29, 45]) == TRUTH_COLOR
    assert tuple(png[12, 12]) == (100, 100, 100) and tuple(png[35, 10]) == (100, 100, 100)
    hot = np.rint(100 * 0.4 + colormap(1.0).astype(float) * 0.6)  # alpha 0.6 at peak heat
    assert tuple(png[45, 45]) == tuple(hot) == (191, 193, 138)
    half = np.asarray(Image.open(io.BytesIO(render_thumbnail(unit, image, side=32))))
    assert half.shape == (32, 32, 3)
    # A store keeps shrunk copies: any resolution with the frame's aspect is scaled up.
    small = dataclasses.replace(unit, image_size=(64, 64), heatmap=heat[::2, ::2])
    png = np.asarray(Image.open(io.BytesIO(render_thumbnail(small, image[::4, ::4], side=64))))
    assert png.shape == (64, 64, 3) and tuple(png[45, 45]) == tuple(hot)
    assert tuple(png[4, 10]) == BOX_COLOR and tuple(png[4, 45]) == TRUTH_COLOR
    with pytest.raises(DataError, match="image of shape \\(32, 64\\) is not a rendering of the 64 x 64"):
        render_thumbnail(small, np.zeros((32, 64), dtype=np.uint8))


def test_thumbnail_without_image_shows_boxes_on_a_canvas_of_their_extent():
    unit = UnitResult("s", "none", "d", "direct", "mass", "a", "m",
                      pred_boxes=np.array([[0.0, 0.0, 50.0, 20.0]]),
                      gt_boxes=np.array([[10.0, 10.0, 100.0, 40.0]]))
    png = np.asarray(Image.open(io.BytesIO(render_thumbnail(unit, None, side=100))).convert("RGB"))
    assert png.shape == (40, 100, 3)
    assert tuple(png[0, 25]) == BOX_COLOR and tuple(png[39, 50]) == TRUTH_COLOR
    assert tuple(png[30, 5]) == (40, 40, 40)


def test_pick_units_shows_the_same_cases_for_every_method_across_findings():
    units = [
        _unit(model, method, f"{finding}-{i}", 0.5, finding=finding)
        for method in ("m1", "m2") for finding in ("mass", "nodule") for i in (2, 1)
        for model in ("b", "a")
    ]  # fmt: skip
    units = [u for u in units if not (u.method == "m2" and u.sample_id == "s/nodule-1")]
    picked = pick_units(units, labeller(units), per_method=3)
    cases = {m: [(u.sample_id, u.model) for u in us] for m, us in picked.items()}
    assert cases == {"m1": [("s/mass-1", "a"), ("s/nodule-1", "a"), ("s/mass-2", "a")],
                     "m2": [("s/mass-1", "a"), ("s/mass-2", "a")]}


PAYLOAD = ("<script>document.title='PWNED'</script>"
           "<img src=x onerror=\"document.body.setAttribute('data-pwned','yes')\">")
EVIL = "evil" + PAYLOAD
HOSTILE = "m-" + PAYLOAD
# (model, method) -> iou per sample: m-good 60 / 90 -> macro 75; hostile 30 / 30 -> macro 30
IOUS = {("phantom-qwen", "m-good"): [0.5, 0.7], (EVIL, "m-good"): [0.9],
        ("phantom-qwen", HOSTILE): [0.2, 0.4], (EVIL, HOSTILE): [0.3]}


def _write_store(path, shard, entries):
    """A store written through the store API; ``entries`` = (seed, finding, model, method, iou)."""
    from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, UnitRecord, unit_id
    from cxr_attrib.leaderboard.store import heatmap_thumbnail, image_thumbnail
    from cxr_attrib_phantom.benchmark import phantom_sample

    config = RunConfig("phantom", "direct", ("phantom-qwen", EVIL), ("m-good", HOSTILE))
    with Store.create(path, config, shard) as store:
        for seed, finding, model, method, iou in entries:
            sample = phantom_sample(seed, finding)
            store.add_sample(SampleRecord(
                sample.id, "phantom", seed, sample.finding + PAYLOAD, sample.question, "direct",
                sample.boxes, (224, 224), image_thumbnail(sample.load_image())))
            x1, y1, x2, y2 = sample.boxes[0]
            heat = np.zeros((224, 224), dtype=np.float32)
            heat[int(y1):int(y2), int(x1):int(x2)] = 1.0
            failed = iou is None
            store.add_unit(UnitRecord(
                unit_id(sample.id, model, method, {}, "direct", 0), sample.id, model, method, {},
                "direct", 0, "error" if failed else "ok", answer="Yes " + PAYLOAD,
                boxes=sample.boxes + 6.0, metrics={} if failed else {"iou": iou, "energy": 0.5},
                heatmap=None if failed else heatmap_thumbnail(heat),
                error="KeyError: " + PAYLOAD if failed else None))  # fmt: skip


def _hostile_stores(folder):
    """Two shard stores of one run; one unit in both; one failed unit."""
    entries = [(10_000_000 + i, ("mass", "pleural_effusion")[i], model, method, iou)
               for (model, method), ious in IOUS.items() for i, iou in enumerate(ious)]
    entries.append((10_000_002, "nodule", "phantom-qwen", "m-good", None))
    folder.mkdir()
    _write_store(folder / "shard-0.sqlite", "0/2", entries[:4])
    _write_store(folder / "shard-1.sqlite", "1/2", entries[3:])
    return folder


def _report_cli(*args):
    from click.testing import CliRunner

    from cxr_attrib.cli import cli

    return CliRunner(env={"COLUMNS": "240"}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_report_command_reads_shard_stores_and_writes_every_format(tmp_path):
    folder = _hostile_stores(tmp_path / "run")
    result = _report_cli("report", folder, "--out", tmp_path / "out", "--n-boot", 100)
    assert result.exit_code == 0, result.output
    report = read_report_json(tmp_path / "out" / "report.json")
    got = [(r.method, r.model, rank, failed, r.n, r.metrics["iou"].mean if "iou" in r.metrics else None)
           for rank, failed, r in zip(report.ranks, report.failures, report.rows)]
    assert got == [
        ("m-good", EVIL, 1, 0, 1, pytest.approx(90.0)),  # models in name order, then macro
        ("m-good", "phantom-qwen", 1, 1, 3, pytest.approx(60.0)),
        ("m-good", "macro", 1, 1, 4, pytest.approx(75.0)),
        (HOSTILE, EVIL, 2, 0, 1, pytest.approx(30.0)),
        (HOSTILE, "phantom-qwen", 2, 0, 2, pytest.approx(30.0)),  # the unit in both shards: once
        (HOSTILE, "macro", 2, 0, 3, pytest.approx(30.0)),
    ]
    assert report.errors == {"m-good": ("KeyError: " + PAYLOAD,)}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.md", "report.csv", "report.json", "report.html"}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "<script>" not in markdown and "<img" not in markdown  # names are text there too
    assert "## mass&lt;script&gt;document.title=" in markdown
    table = result.output.split("wrote ")[0]
    assert "ranked by macro iou" in table and re.search(r"┃ rank ┃ failures ┃ seconds ┃ model\s*┃", table)
    assert re.search(r"│\s+1 │\s+1 │\s+0.0 │ phantom-qwen\s*│ direct │ m-good\s*│ phantom │\s+3 │ 60\.0 \[",
                     table)
    page = (tmp_path / "out" / "report.html").read_text()
    # cases: mass (evil model), nodule, pleural effusion; the nodule unit failed and only
    # m-good ran it, so 2 + 2 overlays and one "failed" tile
    assert page.count("data:image/png;base64,") == 4 and page.count('class="failed"') == 1
    only_table = _report_cli("report", folder, "--format", "table", "--out", tmp_path / "t")
    assert only_table.exit_code == 0 and "m-good" in only_table.output
    assert not (tmp_path / "t").exists()
    run = re.search(r'<table id="run">(.*?)</table>', page).group(1)
    assert '<th class="text">benchmark</th><td class="text">phantom</td>' in run
    assert str(escape(json.dumps(["phantom-qwen", EVIL]))) in run  # the template engine's escaping


def test_report_command_refuses_mixed_runs_and_non_stores(tmp_path):
    from cxr_attrib.leaderboard import RunConfig, Store

    folder = _hostile_stores(tmp_path / "run")
    Store.create(tmp_path / "other.sqlite", RunConfig("phantom", "direct", ("a",), ("b",)), "0/1").close()
    result = _report_cli("report", folder, tmp_path / "other.sqlite", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "another leaderboard run" in result.output
    (tmp_path / "junk.sqlite").write_text("not a database")
    result = _report_cli("report", tmp_path / "junk.sqlite", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "is not a SQLite file" in result.output
    result = _report_cli("report", folder, "--rank-by", "nope", "--format", "json")
    assert result.exit_code == 1 and "rank_by='nope'" in result.output
    assert not (tmp_path / "o").exists()
    (tmp_path / "busy" / "report.html").mkdir(parents=True)  # a folder where the page goes
    result = _report_cli("report", folder, "--out", tmp_path / "busy")
    assert result.exit_code == 1 and "report.html" in result.output
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["report.html"]  # nothing written
    (tmp_path / "file").write_text("x")
    result = _report_cli("report", folder, "--out", tmp_path / "file" / "sub", "--format", "json")
    assert result.exit_code == 1
    assert f"cannot write the report into {tmp_path / 'file' / 'sub'}" in result.output


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory):
    """``cxr-attrib report`` of stores whose names, answers, findings and errors attack."""
    folder = tmp_path_factory.mktemp("report")
    result = _report_cli("report", _hostile_stores(folder / "run"), "--out", folder / "out",
                         "--format", "html", "--n-boot", 50, "--title", "Board " + PAYLOAD)
    assert result.exit_code == 0, result.output
    return folder / "out" / "report.html"


@given(st.recursive(st.text() | st.floats(allow_nan=False) | st.booleans() | st.none(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_embedded_json_never_holds_markup_characters_and_round_trips(value):
    text = _json_script(value)
    assert not set(text) & set("<>&") and json.loads(text) == value


def test_html_escapes_every_string_and_embeds_the_json_safely(hostile_page):
    page = hostile_page.read_text()
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the JSON data and the sort script, nothing else
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert "<" not in data.group(1) and ">" not in data.group(1) and "&" not in data.group(1)
    embedded = json.loads(data.group(1))
    assert embedded["errors"] == {"m-good": ["KeyError: " + PAYLOAD]}
    assert [row["model"] for row in embedded["rows"]][:2] == [EVIL, "phantom-qwen"]


chromium = pytest.importorskip("shutil").which("chromium")
needs_chromium = pytest.mark.skipif(
    chromium is None, reason="Debian's chromium is not installed (apt-get install chromium); "
    ".ci/run installs it")


def _browse(tmp_path, url, *args):
    import subprocess

    profile = tmp_path / "profile"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_chromium
def test_html_report_in_headless_chromium_has_the_ranked_table_and_runs_no_payload(hostile_page,
                                                                                   tmp_path):
    dom = _browse(tmp_path, hostile_page.as_uri(), "--dump-dom")
    assert 'data-sortable="ready"' in dom  # the page's own script ran
    assert re.search(r'<table class="sortable" id="ranking-1" data-sortable="ready">', dom)
    ranking = re.search(r'id="ranking-1".*?</table>', dom, re.S).group(0)
    methods = re.findall(r'<td class="text">(m-[^<]*)</td>', ranking)
    assert methods == ["m-good", "m-" + PAYLOAD.replace("&", "&amp;").replace("<", "&lt;")
                       .replace(">", "&gt;")]
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title == html.escape("Board " + PAYLOAD, quote=False)  # not 'PWNED': nothing ran
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert '<img src="x"' not in dom and "&lt;img src=x onerror=" in dom
    assert "Yes &lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom


@needs_chromium
def test_html_report_sorts_from_the_url_and_screenshots_readably(hostile_page, tmp_path):
    dom = _browse(tmp_path, hostile_page.as_uri() + "#sort=ranking-1:0:desc", "--dump-dom")
    ranking = re.search(r'id="ranking-1".*?</table>', dom, re.S).group(0)
    assert re.findall(r'<tr><td data-value="(\d)">', ranking) == ["2", "1"]
    assert 'aria-sort="descending"' in ranking
    shot = tmp_path / "report.png"
    _browse(tmp_path, hostile_page.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text and images, not blank


def test_benchmarks_find_a_sample_by_id():
    from cxr_attrib.benchmark import Benchmark, Sample
    from cxr_attrib.registry import get_benchmark
    from cxr_attrib_phantom.benchmark import phantom_sample

    phantom = get_benchmark("phantom")
    found = phantom.sample("phantom/reasoning/mass/10000042", split="reasoning")
    expected = phantom_sample(10_000_042, "mass", mode="reasoning")
    assert (found.id, found.finding, found.split, found.extra) == (
        expected.id, expected.finding, expected.split, expected.extra)
    assert np.array_equal(found.boxes, expected.boxes)
    assert np.array_equal(found.load_image(), expected.load_image())
    for bad in ("phantom/direct/mass/x", "phantom/direct/tumour/1", "other/direct/mass/1"):
        with pytest.raises(DataError, match="not a phantom sample id"):
            phantom.sample(bad)
    with pytest.raises(DataError, match="of split reasoning"):
        phantom.sample("phantom/direct/mass/1", split="reasoning")

    class Two(Benchmark):
        name, summary = "two", "two samples"

        def samples(self, *, split=None, model=None):
            for i in range(2):
                yield Sample(f"two/{i}", "d", i, "f", "q", "Yes", np.zeros((0, 4)),
                             load_image=lambda: np.zeros((4, 4), dtype=np.uint8))

    assert Two().sample("two/1").index == 1
    with pytest.raises(DataError, match="benchmark 'two' has no sample with id 'two/7'"):
        Two().sample("two/7")


def test_benchmark_image_reloads_phantoms_and_is_none_when_unavailable():
    from cxr_attrib.leaderboard.thumbnails import benchmark_image
    from cxr_attrib_phantom.benchmark import phantom_sample

    sample = phantom_sample(10_000_001, "nodule")
    unit = UnitResult(sample.id, "phantom", "phantom", "direct", "nodule", "a", "m")
    assert np.array_equal(benchmark_image(unit), sample.load_image())
    assert benchmark_image(UnitResult(sample.id, "no-such-bench", "d", "direct", "f", "a", "m")) is None


def test_with_arrays_attaches_the_stored_heatmap_and_thumbnail_of_chosen_units(tmp_path):
    from cxr_attrib.leaderboard.store_units import read_units, with_arrays

    folder = _hostile_stores(tmp_path / "run")
    config, units = read_units([folder])
    assert config.benchmark == "phantom" and len(units) == 7  # 8 written, one in both shards
    assert all(u.heatmap is None and u.image is None for u in units)
    chosen = [u for u in units if u.error is None][:2] + [u for u in units if u.error][:1]
    filled = with_arrays([folder], chosen)
    assert [u.unit_id for u in filled] == [u.unit_id for u in chosen]
    assert [u.heatmap.shape for u in filled[:2]] == [(64, 64)] * 2 and filled[2].heatmap is None
    assert all(u.image.shape == (128, 128) and u.image.dtype == np.uint8 for u in filled)
    x1, y1, x2, y2 = (filled[0].gt_boxes[0] * 64 / 224).round().astype(int)
    inside = filled[0].heatmap[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
    assert inside.min() == pytest.approx(1.0) and filled[0].heatmap.sum() < inside.size * 2
