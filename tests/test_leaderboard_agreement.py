"""Said vs used from leaderboard units: which boxes are paired, and the exact IoUs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxr_attrib.errors import DataError
from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, UnitRecord, unit_id
from cxr_attrib.leaderboard.agreement import agreement_from_store, agreement_markdown, box_agreement, sample_agreement

USED = ("medfocus", "occlusion")
TRUTH = [[0.0, 0.0, 10.0, 10.0]]  # 100 px^2
CONFIG = RunConfig("phantom", "direct", ("m|1",), ("prompting", *USED, "rise"))


def _sample(sample: str, finding: str = "mass") -> SampleRecord:
    return SampleRecord(sample, "phantom", 0, finding, f"Is there evidence of {finding} in the image?", "direct",
                        np.array(TRUTH), (100, 100))


def _unit(sample: str, method: str, boxes, *, answer: str = "Yes", status: str = "ok", seed: int = 0,
          finding: str = "mass") -> UnitRecord:
    return UnitRecord(unit_id(sample, "m|1", method, {}, "direct", seed), sample, "m|1", method, {}, "direct", seed,
                      status, answer=answer, method_boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                      sample=_sample(sample, finding))


def _units() -> list[UnitRecord]:
    return [
        # a: says the truth (second box ignored); medfocus shifted by half (IoU 50 / 150);
        # occlusion's two halves make the truth together (union)
        _unit("a", "prompting", [[0, 0, 10, 10], [50, 50, 60, 60]]),
        _unit("a", "medfocus", [[5, 0, 15, 10]]),
        _unit("a", "occlusion", [[0, 0, 10, 5], [0, 5, 10, 10]]),
        _unit("a", "rise", [[90, 90, 100, 100]]),  # not asked for: ignored
        # b: says twice the truth (IoU 100 / 200); medfocus the same box; occlusion elsewhere
        _unit("b", "prompting", [[0, 0, 20, 10]]),
        _unit("b", "medfocus", [[0, 0, 20, 10]]),
        _unit("b", "occlusion", [[30, 30, 40, 40]]),
        # c: answered no -> not counted; d: a used method failed -> not counted
        _unit("c", "prompting", TRUTH, answer="No"), _unit("c", "medfocus", TRUTH), _unit("c", "occlusion", TRUTH),
        _unit("d", "prompting", TRUTH), _unit("d", "medfocus", TRUTH), _unit("d", "occlusion", [], status="error"),
        # e (nodule): stated no box -> IoU 0 with everything; the used methods found the truth
        _unit("e", "prompting", [], finding="nodule"), _unit("e", "medfocus", TRUTH, finding="nodule"),
        _unit("e", "occlusion", TRUTH, finding="nodule"),
    ]


def _store(tmp_path) -> Path:
    """A leaderboard store holding :func:`_units`."""
    path = tmp_path / "s.sqlite"
    with Store.create(path, CONFIG, "0/1") as store:
        for unit in _units():
            store.add_sample(unit.sample)
            store.add_unit(unit)
    return path


def test_sample_rows_pair_the_first_said_box_with_each_used_union():
    rows = {r["sample"]: r for r in sample_agreement(_units(), said="prompting", used=USED)}
    assert sorted(rows) == ["a", "b", "e"]
    a, b, e = rows["a"], rows["b"], rows["e"]
    assert (a["said_truth"], a["said_medfocus"], a["said_occlusion"]) == (1.0, pytest.approx(1 / 3), 1.0)
    assert (a["medfocus_truth"], a["occlusion_truth"], a["agrees_medfocus"], a["agrees_occlusion"]) == \
        (pytest.approx(1 / 3), 1.0, False, True)
    assert (b["said_truth"], b["said_medfocus"], b["said_occlusion"], b["medfocus_truth"], b["occlusion_truth"]) == \
        (0.5, 1.0, 0.0, 0.5, 0.0)
    assert (e["said_truth"], e["said_medfocus"], e["medfocus_truth"], e["agrees_occlusion"]) == (0.0, 0.0, 1.0, False)
    assert a["model"] == "m|1" and a["finding"] == "mass" and e["finding"] == "nodule" and a["split"] == "direct"


def test_rows_per_model_and_finding_average_in_percent():
    mass, nodule = box_agreement(_units(), said="prompting", used=USED, n_boot=50)
    assert (mass.model, mass.finding, mass.mode, mass.n) == ("m|1", "mass", "direct", 2)
    assert mass.said_used["medfocus"].mean == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert mass.said_used["occlusion"].mean == pytest.approx(50.0)
    assert mass.said_truth.mean == pytest.approx(75.0)
    assert mass.used_truth["medfocus"].mean == pytest.approx(100 * (1 / 3 + 0.5) / 2)
    assert mass.used_truth["occlusion"].mean == pytest.approx(50.0)
    assert mass.agreement["medfocus"].mean == mass.agreement["occlusion"].mean == pytest.approx(50.0)
    assert mass.said_used["occlusion"].ci_low <= 50.0 <= mass.said_used["occlusion"].ci_high
    assert (nodule.n, nodule.said_truth.mean, nodule.used_truth["occlusion"].mean) == (1, 0.0, 100.0)


def test_the_store_gives_the_same_rows_and_a_markdown_table(tmp_path):
    path = _store(tmp_path)
    rows = agreement_from_store(path, said="prompting", used=USED)
    assert rows == box_agreement(_units(), said="prompting", used=USED)
    table = agreement_markdown(rows).splitlines()
    assert table[0] == ("| model | finding | n | IoU(said, medfocus) | IoU(said, occlusion) | IoU(said, truth) | "
                        "IoU(medfocus, truth) | IoU(occlusion, truth) | said ~ medfocus (IoU >= 0.5) | "
                        "said ~ occlusion (IoU >= 0.5) |")
    assert table[2].startswith("| m\\|1 | mass | 2 | 66.7 [") and len(table) == 4


def test_the_command_prints_and_writes_the_same_table(tmp_path):
    from click.testing import CliRunner

    from cxr_attrib.cli import cli

    path = _store(tmp_path)
    expected = agreement_markdown(agreement_from_store(path, said="prompting", used=USED))
    printed = CliRunner().invoke(cli, ["said-vs-used", str(path)])
    assert printed.exit_code == 0, printed.output
    assert printed.output.strip() == expected
    out = tmp_path / "table.md"
    written = CliRunner().invoke(cli, ["said-vs-used", str(path), "--used", "occlusion", "--out", str(out)])
    assert written.exit_code == 0 and out.read_text().strip().splitlines()[0].count("occlusion") == 3
    wrong = CliRunner().invoke(cli, ["said-vs-used", str(path), "--used", "lrp"])
    assert wrong.exit_code != 0 and "lrp" in wrong.output


@pytest.mark.parametrize("said, used", [("prompting", ()), ("prompting", ("prompting",)), ("", USED),
                                        ("prompting", ("occlusion", "occlusion"))])
def test_bad_method_names_are_refused(said, used):
    with pytest.raises(DataError, match="said="):
        box_agreement([], said=said, used=used)


def test_two_configurations_of_one_method_are_refused():
    units = _units() + [_unit("a", "medfocus", TRUTH, seed=1)]
    with pytest.raises(DataError, match="two units of method 'medfocus'"):
        box_agreement(units, said="prompting", used=USED)


def test_nothing_counted_gives_no_rows():
    assert box_agreement(_units()[:4], said="prompting", used=("rise", "medfocus")) != []
    assert box_agreement([u for u in _units() if u.method != "occlusion"], said="prompting", used=USED) == []
    assert agreement_markdown([]).startswith("(no sample")


_box = st.tuples(st.integers(0, 90), st.integers(0, 90), st.integers(1, 10), st.integers(1, 10)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@given(said=st.lists(_box, min_size=1, max_size=3), truth=_box)
def test_a_used_region_equal_to_the_said_box_agrees_and_scores_the_same_against_the_truth(said, truth):
    sample = SampleRecord("s", "phantom", 0, "mass", "q", "direct", np.array([truth], dtype=np.float64), (100, 100))
    units = [UnitRecord(f"u{i}", "s", "m", name, {}, "direct", 0, "ok", answer="Yes", sample=sample,
                        method_boxes=np.asarray(boxes, dtype=np.float64))
             for i, (name, boxes) in enumerate([("said", said), ("same", said[:1]), ("all", said)])]
    (row,) = sample_agreement(units, said="said", used=("same", "all"))
    assert row["said_same"] == 1.0 and row["agrees_same"]
    assert row["same_truth"] == row["said_truth"] and 0.0 <= row["all_truth"] <= 1.0
    assert 0.0 < row["said_all"] <= 1.0 and row["agrees_all"] == (row["said_all"] >= 0.5)
