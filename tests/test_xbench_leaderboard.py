"""The leaderboard's XBench parts: the recognition pass and its store table, pixel metrics per
unit, and the report section (tau calibrated on the calibration split only, correlation)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import spearmanr

from cxr_attrib.adapter import Query
from cxr_attrib.cli import cli
from cxr_attrib.frames import ResizePad
from cxr_attrib.leaderboard import open_store
from cxr_attrib.leaderboard.config import RunConfig
from cxr_attrib.leaderboard.merge import merge_stores
from cxr_attrib.leaderboard.records import RecognitionRecord
from cxr_attrib.leaderboard.report import UnitResult
from cxr_attrib.leaderboard.store import Store
from cxr_attrib.leaderboard.xbench_report import build_xbench, xbench_files, xbench_markdown
from cxr_attrib.models import load_adapter
from cxr_attrib.registry import get_benchmark
from cxr_attrib.scoring.pixel_grounding import TAU_GRID, calibration_split, metric_key
from cxr_attrib.targets import build_prompt

RUN = ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "center", "--limit", "3",
       "--steps", "2", "--n-random", "2", "--fill", "zero", "--recognition", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny run with a recognition pass: 3 samples (2 calibration, 1 test) x 3 priors, 6 findings x
    (1 positive + 1 negative)."""
    out = tmp_path_factory.mktemp("xbench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(cli, [*RUN, "--out", str(out / "lb")], catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_recognition_rows_hold_the_teacher_forced_yes(run):
    with open_store(run / "lb/leaderboard.sqlite") as store:
        rows = store.recognition()
        units = list(store.units())
    assert len(rows) == 12 and all(r.error is None for r in rows)
    assert sorted({r.label for r in rows}) == [0, 1] and len({r.finding for r in rows}) == 6
    # an independent reading of one negative: the removed counterfactual, teacher-forced "Yes"
    negative = next(r for r in rows if r.label == 0)
    sample = next(s for s in get_benchmark("phantom").negatives(split="direct") if s.id == negative.sample_id)
    adapter = load_adapter("phantom-gemma")
    image = sample.load_image()
    working = ResizePad.for_image(image, adapter.working_size).image_to_working(image)
    query = Query(sample.question, "direct", build_prompt(sample.question, "direct"), "Yes", "answer")
    want = float(torch.exp(adapter.score([working], query)[0].double().sum()))
    assert negative.p_positive == pytest.approx(want, rel=1e-5)
    # every ok unit carries both pointing games and the tau sweep
    for unit in units:
        assert {"pointing_any", "pointing_share", metric_key("pixel_dice", 0.05), metric_key("pixel_iou", 0.95)} \
            <= set(unit.metrics)


@pytest.mark.slow
def test_report_appends_the_xbench_section(run):
    out = run / "report"
    result = CliRunner().invoke(cli, ["report", str(run / "lb"), "--out", str(out), "--format", "markdown",
                                      "--format", "json", "--format", "html", "--thumbnails", "0", "--n-boot", "50"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "## XBench-style grounding and recognition" in text and "| phantom-gemma | center |" in text
    data = json.loads((out / "xbench.json").read_text())
    assert len(data["recognition"]) == 6 and (out / "xbench_tau_curves.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert '<table class="sortable" id="xbench-recognition">' in page and 'src="data:image/png;base64,' in page


def _unit(sample_id: str, finding: str, dice_peak: float, *, method: str = "m", model: str = "a",
          pointing: float = 1.0) -> UnitResult:
    """A unit whose Dice is 1 at ``dice_peak`` and 0 elsewhere (IoU the same), pointing games given."""
    metrics = {"pointing_any": pointing, "pointing_share": pointing / 2}
    for tau in TAU_GRID:
        metrics[metric_key("pixel_dice", tau)] = float(tau == dice_peak)
        metrics[metric_key("pixel_iou", tau)] = float(tau == dice_peak) / 2
    return UnitResult(sample_id=sample_id, benchmark="b", dataset="d", split="s", finding=finding, model=model,
                      method=method, metrics=metrics)


def test_tau_is_calibrated_on_the_calibration_split_and_reported_on_the_test_split():
    ids = [f"x/{k}" for k in range(60)]
    calib = [i for i in ids if calibration_split(i)]
    test = [i for i in ids if not calibration_split(i)]
    units = [_unit(i, "f", 0.8) for i in calib] + [_unit(i, "f", 0.2, pointing=0.0) for i in test]
    (row,) = build_xbench(units, [], n_boot=50).grounding
    assert row.tau == 0.8 and (row.n_calibration, row.n_test) == (len(calib), len(test))
    assert row.dice.value == 0.0 and row.iou.value == 0.0  # the test split peaks elsewhere: no peeking
    assert row.pointing_any.value == 0.0 and row.curve_dice[TAU_GRID.index(0.2)] == 1.0
    # swapped: calibration peaks where the test split does
    units = [_unit(i, "f", 0.2) for i in ids]
    (row,) = build_xbench(units, [], n_boot=50).grounding
    assert row.tau == 0.2 and row.dice.value == 1.0 and row.iou.value == 0.5
    assert row.pointing_any.value == 1.0 and row.pointing_share.value == 0.5


def test_recognition_and_correlation_rows_match_independent_values():
    ids = [f"y/{k}" for k in range(40)]
    peaks = {"f1": 0.3, "f2": 0.5, "f3": 0.7}
    units = [_unit(i, f, 0.5 if calibration_split(i) else peaks[f]) for i in ids for f in peaks]
    probs = {"f1": ([0.9, 0.8], [0.1, 0.2]), "f2": ([0.6, 0.3], [0.4, 0.5]), "f3": ([0.2, 0.3], [0.7, 0.9])}
    recognition = [RecognitionRecord("a", f"{f}/{label}/{k}", f, label, p, None)
                   for f, (pos, neg) in probs.items() for label, ps in ((1, pos), (0, neg)) for k, p in enumerate(ps)]
    recognition.append(RecognitionRecord("a", "f1/broken", "f1", 1, None, "RuntimeError: boom"))
    section = build_xbench(units, recognition, n_boot=50)
    aucs = {r.finding: r.scores.auc.value for r in section.recognition}
    assert aucs == {"f1": 1.0, "f2": 0.5, "f3": 0.0}
    assert [r.failed for r in section.recognition] == [1, 0, 0]
    (row,) = section.grounding
    assert row.tau == 0.5 and row.findings == {"f1": 0.0, "f2": 1.0, "f3": 0.0}
    (corr,) = section.correlation
    want = spearmanr([1.0, 0.5, 0.0], [0.0, 1.0, 0.0]).statistic
    assert corr.rho.value == pytest.approx(want) and len(corr.points) == 3
    text = xbench_markdown(section)
    assert "| a | f2 | 2 | 2 | 0.500" in text and "| m | 3 |" in text
    files = xbench_files(section, Path("out"))
    assert sorted(p.name for p in files) == ["xbench.json", "xbench_correlation.png", "xbench_tau_curves.png"]


def test_store_keeps_recognition_rows_and_merge_copies_them(tmp_path):
    config = RunConfig(benchmark="phantom", split="direct", models=("m",), methods=("center",), recognition=2)
    rows = [RecognitionRecord("m", "s1", "f", 1, 0.75, None, "w", 1.0), RecognitionRecord("m", "s2", "f", 0, None,
                                                                                            "OSError: gone", "w", 2.0)]
    with Store.create(tmp_path / "a.sqlite", config, "0/2") as store:
        store.add_recognition(rows[:1])
    with Store.create(tmp_path / "b.sqlite", config, "1/2") as store:
        store.add_recognition(rows[1:])
        store.add_recognition(rows[1:])  # a second write of one (model, sample) keeps the first
    merge_stores(tmp_path / "merged.sqlite", [tmp_path / "a.sqlite", tmp_path / "b.sqlite"])
    with open_store(tmp_path / "merged.sqlite") as store:
        assert store.recognition() == rows
    with closing(sqlite3.connect(tmp_path / "a.sqlite")) as db:  # a store written before the table existed
        db.execute("DROP TABLE recognition")
        db.commit()
    with open_store(tmp_path / "a.sqlite") as store:
        assert store.recognition() == []
    with Store.open(tmp_path / "a.sqlite", writable=True) as store:  # a resumed run adds the table
        store.add_recognition(rows[:1])
        assert store.recognition() == rows[:1]


def test_recognition_option_is_checked_before_any_work(tmp_path):
    result = CliRunner().invoke(cli, [*RUN[:-2], "--recognition", "-1", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--recognition must be >= 0" in result.output
