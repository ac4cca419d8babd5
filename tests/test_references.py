"""Reference rows (``truth``, ``random``), method variants and their checks before any model loads."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from cxr_attrib.api import attribute
from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.cli import cli
from cxr_attrib.errors import DataError, InputError, MethodParameterError, UnknownMethodError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, UnitRecord, open_store, unit_id
from cxr_attrib.leaderboard.plan import build_config
from cxr_attrib.leaderboard.report import REFERENCE_RANK, UnitResult, build_report
from cxr_attrib.method import Method, MethodOutput
from cxr_attrib.registry import _check_method
from cxr_attrib.scoring import score
from cxr_attrib.variants import canonical_label, parse_variant, split_method_list

QUESTION = "Is there evidence of nodule in the image?"
IMAGE = np.tile(np.arange(150, dtype=np.uint8)[None, :], (100, 1))  # (H, W) = (100, 150): padded frame
BOXES = np.array([[10.0, 20.0, 60.0, 70.0], [90.0, 5.0, 140.0, 30.0]])


def test_truth_scores_iou_one_against_itself() -> None:
    result = attribute("none", IMAGE, QUESTION, method="truth", answer="Yes", truth_boxes=BOXES)
    np.testing.assert_allclose(result.boxes, BOXES, atol=1e-9)
    assert result.heatmap is None
    assert score(result, BOXES).iou == pytest.approx(1.0)


@pytest.mark.parametrize("boxes, message", [(None, "needs truth_boxes"), (np.zeros((0, 4)), "no ground-truth box")])
def test_truth_without_boxes_fails_before_any_model_loads(boxes, message) -> None:
    with pytest.raises(InputError, match=message):  # the model reference is never resolved
        attribute("no/such-model", IMAGE, QUESTION, method="truth", truth_boxes=boxes)


def test_truth_boxes_never_reach_a_real_method(registered_plugin) -> None:
    seen = []

    class Spy(Method):
        name, summary, reference, uses_model = "spy-truth", "spy", "none", False

        def attribute(self, request):
            seen.append(request.truth)
            return MethodOutput(heatmap=request.content_mask.astype(np.float32))

    class Cheat(Spy):
        name, needs_truth = "cheat", True

    @hookimpl
    def register_methods(register):
        register(Spy)

    registered_plugin(type("SpyPlugin", (), {"register_methods": staticmethod(register_methods)}))
    attribute("none", IMAGE, QUESTION, method="spy-truth", answer="Yes", truth_boxes=BOXES)
    assert seen == [None]
    assert "needs_truth but is not a model-free reference" in _check_method(Cheat)


def test_random_map_is_seeded_per_image_and_stays_on_the_content() -> None:
    first = attribute("none", IMAGE, QUESTION, method="random", answer="Yes", seed=3)
    again = attribute("none", IMAGE, QUESTION, method="random", answer="Yes", seed=3)
    other = attribute("none", IMAGE[:, ::-1].copy(), QUESTION, method="random", answer="Yes", seed=3)
    np.testing.assert_array_equal(first.heatmap, again.heatmap)
    assert not np.array_equal(first.heatmap, other.heatmap)
    assert first.heatmap.shape == IMAGE.shape and 0.0 <= first.heatmap.min() and first.heatmap.max() <= 1.0
    coarse = attribute("none", IMAGE, QUESTION, method="random", answer="Yes", seed=3, cells=2)
    assert len(np.unique(coarse.heatmap)) <= 2 * 2 * 4  # four blocks (bilinear seams aside)


# ---------------------------------------------------------------- variant labels


def test_variant_labels_parse_and_print_canonically() -> None:
    variant = parse_variant("medfocus[ transfer=warp, mass_quantile=0.5 ,note=\"a,b\"]")
    assert variant.name == "medfocus" and variant.params == {"transfer": "warp", "mass_quantile": 0.5, "note": "a,b"}
    assert variant.label == 'medfocus[mass_quantile=0.5,note="a,b",transfer=warp]'
    assert parse_variant(variant.label) == variant  # the canonical label reads back as itself
    assert canonical_label("medfocus", {}) == "medfocus"
    assert canonical_label("x", {"s": "0.5"}) == 'x[s="0.5"]'  # a string that looks like a number stays a string
    assert split_method_list("a, b[c=1,d=[1,2]] ,e") == ["a", "b[c=1,d=[1,2]]", "e"]


@pytest.mark.parametrize("label, message", [
    ("medfocus[transfer=warp", "does not parse"),
    ("medfocus[]", "empty brackets"),
    ("medfocus[transfer]", "is not key=value"),
    ("medfocus[transfer=warp,transfer=uot]", "sets parameter 'transfer' twice"),
])
def test_bad_variant_labels(label: str, message: str) -> None:
    with pytest.raises(MethodParameterError, match=message):
        parse_variant(label)


class _NoBoxes(Benchmark):
    name = "no-boxes"
    summary = "samples without ground-truth boxes"
    has_boxes = False

    def samples(self, *, split: str | None = None, model: str | None = None) -> Iterator[Sample]:
        return iter(())


class _NoBoxesPlugin:
    __name__ = "NoBoxesPlugin"

    @staticmethod
    @hookimpl
    def register_benchmarks(register):
        register(_NoBoxes())


def test_build_config_runs_variants_and_adds_the_references() -> None:
    config = build_config(benchmark="phantom", split="direct", models=["phantom-gemma"],
                          methods_=["medfocus", "medfocus[transfer=warp]"], fill="noisy_linear")
    assert config.methods[:2] == ("medfocus", "medfocus[transfer=warp]")
    assert {"truth", "random", "center", "whole_image"} <= set(config.methods)
    assert config.params["medfocus[transfer=warp]"]["transfer"] == "warp"
    assert config.params["medfocus"]["transfer"] != "warp" and config.fill == "noisy_linear"
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs, error, message", [
    ({"methods_": ["medfocus[no_such=1]"]}, MethodParameterError, "no parameter"),
    ({"methods_": ["medfocus[transfer=warp,transfer=uot]"]}, MethodParameterError, "twice"),
    ({"methods_": ["medfocsu[transfer=warp]"]}, UnknownMethodError, "medfocus"),
    ({"methods_": ["center[fraction=1]"], "params": ["center.fraction=0.2"]}, MethodParameterError,
     "not in this run"),
    ({"fill": "noisy"}, DataError, "fill"),
    ({"fill": 1.5}, DataError, "fill"),
])
def test_build_config_refuses_before_any_model_loads(kwargs, error, message) -> None:
    args = {"benchmark": "phantom", "split": "direct", "models": ["phantom-gemma"], "methods_": ["center"], **kwargs}
    with pytest.raises(error, match=message):
        build_config(**args)


def test_truth_on_a_benchmark_without_boxes(registered_plugin) -> None:
    registered_plugin(_NoBoxesPlugin)
    config = build_config(benchmark="no-boxes", split="direct", models=["phantom-gemma"], methods_=["center"])
    assert "truth" not in config.methods and "random" in config.methods  # not added where it cannot run
    with pytest.raises(DataError, match="ground-truth reference.*no-boxes.*has no boxes"):
        build_config(benchmark="no-boxes", split="direct", models=["phantom-gemma"], methods_=["truth"])


@pytest.mark.parametrize("benchmark, extra, message", [
    ("phantom", ["--methods", "occlusion,medfocus[transfer=warp,transfer=uot]"], "sets parameter 'transfer' twice"),
    ("phantom", ["--methods", "occlusion", "--fill", "noisy"], "unknown fill 'noisy'"),
    ("no-boxes", ["--methods", "truth"], "ground-truth reference"),
])
def test_cli_refuses_a_bad_run_in_one_line(tmp_path, registered_plugin, benchmark, extra, message) -> None:
    registered_plugin(_NoBoxesPlugin)
    result = CliRunner().invoke(cli, ["leaderboard", "-b", benchmark, "-m", "no/such-model", *extra,
                                      "--out", str(tmp_path)])  # the model is never resolved
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


# ----------------------------------------------------------------- store and report


def test_store_round_trips_variant_labels(tmp_path) -> None:
    config = build_config(benchmark="phantom", split="direct", models=["phantom-gemma"],
                          methods_=["medfocus[transfer=warp]"])
    label = "medfocus[transfer=warp]"
    uid = unit_id("s1", "phantom-gemma", label, config.params[label], "direct", 0)
    with Store.create(tmp_path / "s.sqlite", config, "0/1") as store:
        store.add_sample(SampleRecord("s1", "phantom", 1, "nodule", QUESTION, "direct", BOXES, (100, 150)))
        store.add_unit(UnitRecord(uid, "s1", "phantom-gemma", label, config.params[label], "direct", 0, "ok",
                                  metrics={"iou": 0.5}))
    with open_store(tmp_path / "s.sqlite") as store:
        (unit,) = store.units()
        assert store.config() == config
    assert unit.method == label and unit.params["transfer"] == "warp"
    assert unit_id("s1", "phantom-gemma", "medfocus", config.params[label], "direct", 0) != uid


def _units(method: str, ious: list[float], gains: list[float], model: str = "m") -> list[UnitResult]:
    return [UnitResult(f"s{i}", "phantom", "phantom", "direct", "nodule", model, method,
                       metrics={"iou": iou, "deletion_gain": gain})
            for i, (iou, gain) in enumerate(zip(ious, gains))]


def test_report_shows_references_apart_and_flags_an_uninformative_metric() -> None:
    units = (_units("occlusion", [0.4, 0.5], [0.1, 0.2]) + _units("medfocus[transfer=warp]", [0.3, 0.3], [0.0, 0.1])
             + _units("truth", [1.0, 1.0], [0.05, 0.05]) + _units("random", [0.1, 0.1], [0.3, 0.3])
             + _units("truth", [1.0, 1.0], [0.5, 0.5], model="n") + _units("random", [0.1, 0.1], [0.0, 0.0], model="n"))
    report = build_report(units, rank_by="iou", metrics=["iou", "deletion_gain"], n_boot=20)
    order = list(dict.fromkeys(row.method for row in report.rows))
    ranks = dict(zip((row.method for row in report.rows), report.ranks))
    assert order == ["occlusion", "medfocus[transfer=warp]", "random", "truth"]  # truth is never ranked first
    assert (ranks["occlusion"], ranks["medfocus[transfer=warp]"]) == (1, 2)
    assert ranks["truth"] == ranks["random"] == REFERENCE_RANK and report.references == ("random", "truth")
    # truth does not beat random on deletion_gain on model m (5 < 30); it does on n (50 > 0) and on the
    # macro means (27.5 > 15); iou ranks truth first everywhere
    assert report.uninformative == (("m", "direct", "phantom", "deletion_gain"),)
    assert type(report).from_dict(report.to_dict()) == report


class _Page(HTMLParser):
    """The ranking table's (row class, method) pairs and the uninformative flags of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str | None, list[str]]] = []
        self.flags: list[str] = []
        self._table: str | None = None
        self._in: str | None = None  # "td" or "li" while reading one
        self._list = False  # inside ul.uninformative

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table == "ranking-1":
            self.rows.append((attrs.get("class"), []))
        elif tag == "td" and self._table == "ranking-1" and self.rows:
            self.rows[-1][1].append("")
            self._in = "td"
        elif tag == "li" and self._table is None and self._list:
            self.flags.append("")
            self._in = "li"
        if tag == "ul":
            self._list = attrs.get("class") == "uninformative"

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag in ("td", "li"):
            self._in = None
        if tag == "ul":
            self._list = False

    def handle_data(self, data):
        if self._in == "td":
            self.rows[-1][1][-1] += data
        elif self._in == "li":
            self.flags[-1] += data


def test_html_report_shades_the_references_and_flags_an_uninformative_metric(tmp_path) -> None:
    evil = "m<b>x</b>"
    config = RunConfig("phantom", "direct", (evil, "n"), ("occlusion", "truth", "random"))
    gains = {(evil, "occlusion"): 0.2, (evil, "truth"): 0.05, (evil, "random"): 0.3,
             ("n", "occlusion"): 0.1, ("n", "truth"): 0.5, ("n", "random"): 0.0}
    with Store.create(tmp_path / "s.sqlite", config, "0/1") as store:
        store.add_sample(SampleRecord("s1", "phantom", 1, "nodule", QUESTION, "direct", BOXES, (100, 150)))
        for (model, method), gain in gains.items():
            store.add_unit(UnitRecord(unit_id("s1", model, method, {}, "direct", 0), "s1", model, method, {},
                                      "direct", 0, "ok", metrics={"iou": 1.0 if method == "truth" else 0.3,
                                                                  "deletion_gain": gain}))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"),
                                      "--format", "html", "--n-boot", "20", "--thumbnails", "0"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert [(cls, cells[:2]) for cls, cells in page.rows[1:]] == [  # the header row first
        (None, ["1", "occlusion"]), ("reference", [REFERENCE_RANK, "random"]),
        ("reference", [REFERENCE_RANK, "truth"])]
    # truth (5) does not beat random (30) on deletion_gain on the hostile model; it does on n (50 > 0)
    assert page.flags == [f"uninformative: deletion_gain on {evil}: truth does not beat random."]
    assert "<b>x</b>" not in text and "m&lt;b&gt;x&lt;/b&gt;" in text  # the model name is text
