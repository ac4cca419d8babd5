"""Aggregation: means, bootstrap CIs, macro averages and the writers."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from cxr_attrib.errors import DataError
from cxr_attrib.scoring import (
    AggregateRow,
    MetricSummary,
    aggregate,
    read_json,
    to_csv,
    to_json,
    to_markdown,
    to_rich_table,
)


def _rows(model: str, values, *, metric: str = "iou", method: str = "m", dataset: str = "d"):
    return [
        {"model": model, "split": "direct", "method": method, "dataset": dataset, metric: v}
        for v in values
    ]


def _by_model(out):
    return {row.model: row for row in out}


def test_mean_and_count_on_a_known_sample():
    out = aggregate(_rows("a", [0.2, 0.4, 0.9]), metrics=["iou"])
    row = _by_model(out)["a"]
    assert (row.split, row.method, row.dataset, row.n, row.macro) == ("direct", "m", "d", 3, False)
    assert row.metrics["iou"].mean == pytest.approx(50.0)
    assert row.metrics["iou"].n == 3


def test_bootstrap_ci_on_known_samples():
    # Constant sample: every resample has the same mean.
    const = _by_model(aggregate(_rows("a", [0.25] * 7), metrics=["iou"]))["a"].metrics["iou"]
    assert (const.ci_low, const.ci_high) == pytest.approx((25.0, 25.0))
    # {0, 1}: resample means are 0, 0.5, 1 with p = 1/4, 1/2, 1/4; with 1000
    # resamples the 2.5% and 97.5% percentiles are 0 and 1.
    pair = _by_model(aggregate(_rows("a", [0.0, 1.0]), metrics=["iou"]))["a"].metrics["iou"]
    assert (pair.mean, pair.ci_low, pair.ci_high) == (50.0, 0.0, 100.0)
    # 30 hits in 100: the normal approximation gives 30 +- 1.96 * sqrt(.3 * .7 / 100)
    # = [21.0, 39.0]; the percentile bootstrap agrees to about a point.
    hits = _by_model(aggregate(_rows("a", [1.0] * 30 + [0.0] * 70), metrics=["iou"], n_boot=4000))
    summary = hits["a"].metrics["iou"]
    assert summary.mean == pytest.approx(30.0)
    assert summary.ci_low == pytest.approx(21.0, abs=1.5)
    assert summary.ci_high == pytest.approx(39.0, abs=1.5)
    narrow = aggregate(_rows("a", [1.0] * 30 + [0.0] * 70), metrics=["iou"], ci=0.5)[0]
    assert summary.ci_low < narrow.metrics["iou"].ci_low < 30 < narrow.metrics["iou"].ci_high


def test_seeded_and_independent_of_row_order_and_other_groups():
    rng = np.random.default_rng(3)
    rows = _rows("a", rng.random(40)) + _rows("b", rng.random(25))
    first = aggregate(rows, metrics=["iou"], seed=7)
    assert aggregate(rows, metrics=["iou"], seed=7) == first
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled, metrics=["iou"], seed=7) == first
    only_a = aggregate(_rows("a", [r["iou"] for r in rows[:40]]), metrics=["iou"], seed=7)
    assert _by_model(only_a)["a"] == _by_model(first)["a"]
    other = _by_model(aggregate(rows, metrics=["iou"], seed=8))["a"].metrics["iou"]
    assert other.mean == _by_model(first)["a"].metrics["iou"].mean
    assert other.ci_low != _by_model(first)["a"].metrics["iou"].ci_low


def test_macro_average_is_the_mean_of_model_means_not_pooled():
    rows = _rows("big", [1.0] * 8) + _rows("small", [0.0, 0.0])
    out = aggregate(rows, metrics=["iou"])
    assert [r.model for r in out] == ["big", "small", "macro"]
    macro = out[-1]
    assert macro.macro and macro.n == 10 and macro.n_models == 2
    assert macro.metrics["iou"].mean == 50.0  # pooled would be 80
    assert (macro.metrics["iou"].ci_low, macro.metrics["iou"].ci_high) == (50.0, 50.0)
    assert macro.metrics["iou"].n == 10


def test_macro_ci_averages_each_model_bootstrap():
    rng = np.random.default_rng(0)
    rows = _rows("a", rng.random(30)) + _rows("b", rng.random(300) * 0.5)
    out = _by_model(aggregate(rows, metrics=["iou"]))
    a, b, macro = (out[k].metrics["iou"] for k in ("a", "b", "macro"))
    assert macro.mean == pytest.approx((a.mean + b.mean) / 2)
    assert macro.ci_low < macro.mean < macro.ci_high
    # Averaging two independent means narrows the interval of the noisier one.
    assert macro.ci_high - macro.ci_low < a.ci_high - a.ci_low


def test_groups_missing_values_bools_and_order():
    rows = (
        _rows("b", [True, False, None, True], metric="pointing_game", dataset="vindr")
        + _rows("a", [0.5], dataset="vindr")
        + _rows("a", [0.1, 0.3], dataset="imagenome")
    )
    out = aggregate(rows, metrics=["iou", "pointing_game"])
    assert [(r.dataset, r.model) for r in out] == [
        ("imagenome", "a"),
        ("imagenome", "macro"),
        ("vindr", "a"),
        ("vindr", "b"),
        ("vindr", "macro"),
    ]
    b = out[3]
    assert b.n == 4 and set(b.metrics) == {"pointing_game"}
    assert b.metrics["pointing_game"].n == 3
    assert b.metrics["pointing_game"].mean == pytest.approx(200 / 3)
    vindr_macro = out[4]
    assert vindr_macro.n == 5 and vindr_macro.n_models == 2
    assert vindr_macro.metrics["iou"].mean == 50.0  # only model a has IoU values
    assert aggregate(rows, metrics=["iou"], macro=False)[1].model == "a"


def test_dataclass_rows_are_accepted():
    @dataclass
    class Unit:
        model: str
        split: str
        method: str
        dataset: str
        iou: float

    out = aggregate([Unit("a", "direct", "m", "d", 0.5)], metrics=["iou"])
    assert out[0].metrics["iou"].mean == 50.0


def test_bad_rows_and_arguments():
    with pytest.raises(DataError, match="lacks split"):
        aggregate([{"model": "a", "method": "m", "dataset": "d", "iou": 1.0}])
    with pytest.raises(DataError, match="finite"):
        aggregate(_rows("a", [float("nan")]), metrics=["iou"])
    with pytest.raises(DataError, match="number"):
        aggregate(_rows("a", ["high"]), metrics=["iou"])
    with pytest.raises(DataError, match="reserved"):
        aggregate(_rows("macro", [1.0]), metrics=["iou"])
    with pytest.raises(DataError, match="mapping"):
        aggregate([("a", "direct")])
    with pytest.raises(DataError, match="ci"):
        aggregate([], ci=95)
    with pytest.raises(DataError, match="n_boot"):
        aggregate([], n_boot=0)
    with pytest.raises(DataError, match="metrics"):
        aggregate([], metrics="iou")
    assert aggregate([]) == []


# -------------------------------------------------------------------- writers


def _summary_rows():
    return [
        AggregateRow(
            "a",
            "direct",
            "gradcam",
            "vindr",
            n=2,
            metrics={
                "iou": MetricSummary(30.0, 20.0, 40.0, 2),
                "f1": MetricSummary(5.0, 1.0, 9.25, 2),
            },
        ),
        AggregateRow(
            "macro",
            "direct",
            "gradcam",
            "vindr",
            n=2,
            metrics={"iou": MetricSummary(30.0, 20.0, 40.0, 2)},
            macro=True,
            n_models=1,
        ),
    ]


def test_to_markdown_exact_table():
    assert to_markdown(_summary_rows()) == (
        "| model | split | method | dataset | n | iou | f1 |\n"
        "|---|---|---|---|---:|---:|---:|\n"
        "| a | direct | gradcam | vindr | 2 | 30.0 [20.0, 40.0] | 5.0 [1.0, 9.2] |\n"
        "| macro | direct | gradcam | vindr | 2 | 30.0 [20.0, 40.0] | - |\n"
    )
    assert to_markdown(_summary_rows(), metrics=["f1"]).splitlines()[0] == (
        "| model | split | method | dataset | n | f1 |"
    )


def test_to_csv_columns_and_values(tmp_path):
    path = tmp_path / "agg.csv"
    to_csv(_summary_rows(), path)
    with path.open(newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert list(lines[0])[:11] == [
        "model", "split", "method", "dataset", "macro", "n", "n_models",
        "iou_mean", "iou_ci_low", "iou_ci_high", "iou_n",
    ]  # fmt: skip
    assert lines[0]["f1_ci_high"] == "9.25" and lines[0]["macro"] == "False"
    assert lines[1]["model"] == "macro" and lines[1]["f1_mean"] == ""


def test_json_round_trip(tmp_path):
    rows = aggregate(_rows("a", [0.1, 0.7]) + _rows("b", [0.4]), metrics=["iou"])
    path = tmp_path / "agg.json"
    to_json(rows, path)
    assert read_json(path) == rows
    path.write_text('{"schema_version": 99, "rows": []}')
    with pytest.raises(DataError, match="schema_version"):
        read_json(path)


def test_rich_table():
    table = to_rich_table(_summary_rows(), title="leaderboard")
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == [
        "model", "split", "method", "dataset", "n", "iou", "f1",
    ]  # fmt: skip
    assert table.row_count == 2 and table.rows[1].style == "bold"
    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    assert "30.0 [20.0, 40.0]" in console.file.getvalue()


def test_writers_take_lead_columns_and_treat_names_as_text(tmp_path):
    row = AggregateRow("<b>[red]x|y\nz", "direct", "m", "d", n=1,
                       metrics={"iou": MetricSummary(30.0, 20.0, 40.0, 1)})
    markdown = to_markdown([row], lead={"rank": [3]})
    assert markdown.splitlines()[0] == "| rank | model | split | method | dataset | n | iou |"
    assert markdown.splitlines()[1] == "|---:|---|---|---|---|---:|---:|"
    assert markdown.splitlines()[2].startswith("| 3 | &lt;b&gt;\\[red\\]x\\|y z | direct |")
    console = Console(file=io.StringIO(), width=200)
    console.print(to_rich_table([row], lead={"rank": [3]}, title="[bold]t"))
    assert "[red]x|y" in console.file.getvalue() and "[bold]t" in console.file.getvalue()
    to_csv([row], tmp_path / "a.csv", lead={"rank": [3]})
    assert (tmp_path / "a.csv").read_text().splitlines()[0].startswith("rank,model,split,")
    with pytest.raises(DataError, match="lead column 'rank' has 2 values for 1 rows"):
        to_markdown([row], lead={"rank": [1, 2]})
