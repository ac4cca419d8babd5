"""What the toolkit reports about itself is true: listings, meta, defaults, filter sources."""

from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from cxr_attrib import cli as cli_module
from cxr_attrib import hookimpl, registry
from cxr_attrib.api import attribute
from cxr_attrib.benchmark import Benchmark
from cxr_attrib.cli import cli

QUESTION = "Is there evidence of nodule in the image?"
IMAGE = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)


@pytest.mark.parametrize(("command", "key", "expected"), [
    ("methods", "method", lambda: registry.methods()),
    ("models", "key", lambda: registry.model_cards()),
    ("plugins", "plugin", lambda: [info.name for info in registry.plugin_report()]),
])
def test_listing_json_has_every_registered_name(command, key, expected):
    result = CliRunner().invoke(cli, [command, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row[key] for row in rows] == list(expected())


def test_methods_json_says_which_plugin_registered_each_method():
    rows = {row["method"]: row for row in json.loads(CliRunner().invoke(cli, ["methods", "--json"]).output)}
    assert rows["occlusion"]["plugin"] == "occlusion" and rows["center"]["plugin"] == "priors"
    assert rows["occlusion"]["needs"] == ["model"] and rows["center"]["needs"] == []
    assert rows["occlusion"]["defaults"] == "tiles=8, fill='zero', batch_size=64"


@pytest.mark.parametrize(("command", "names"), [
    ("models", lambda: registry.model_cards()),
    ("methods", lambda: registry.methods()),
    ("plugins", lambda: [info.name for info in registry.plugin_report()]),
])
def test_listing_tables_never_cut_names_on_a_narrow_terminal(monkeypatch, command, names):
    monkeypatch.setattr(cli_module, "console", Console(width=50))
    output = CliRunner().invoke(cli, [command]).output
    lines = output.splitlines()
    for name in names():
        assert any(f" {name} " in line for line in lines), f"{name!r} is cut in:\n{output}"


def test_meta_passes_count_the_generation_that_made_the_answer(tiny_qwen_adapter):
    generated = attribute(tiny_qwen_adapter, IMAGE, QUESTION, method="occlusion", tiles=2, target="response")
    given = attribute(tiny_qwen_adapter, IMAGE, QUESTION, method="occlusion", tiles=2, answer="Yes")
    assert generated.meta.passes == {"forward_calls": 1, "forward_sequences": 5, "backward_calls": 0,
                                     "backward_sequences": 0, "generate_calls": 1}
    assert given.meta.passes["generate_calls"] == 0 and given.meta.passes["forward_sequences"] == 5


def test_model_free_method_records_the_generation_of_its_answer(tiny_qwen_adapter):
    result = attribute(tiny_qwen_adapter, IMAGE, QUESTION, method="center", target="response")
    assert result.meta.passes == {"generate_calls": 1}


def test_meta_versions_name_the_distribution_of_the_method(registered_plugin):
    version = importlib.metadata.version("cxr-attrib")
    result = attribute("none", IMAGE, QUESTION, method="whole_image", answer="Yes")
    assert result.meta.versions["method_plugin"] == f"cxr-attrib {version}"
    assert result.meta.versions["cxr_attrib"] == version


def test_filter_uses_the_benchmarks_own_counterfactuals():
    from cxr_attrib_phantom.benchmark import PhantomBench, PhantomCounterfactuals

    assert isinstance(PhantomBench().counterfactual_provider(), PhantomCounterfactuals)


def test_filter_on_a_benchmark_without_counterfactuals_asks_for_a_source(registered_plugin, tmp_path):
    class Bare(Benchmark):
        name = "bare_stub"
        summary = "no edits"

        def samples(self, *, split=None, model=None):
            return iter(())

    plugin = type("BarePlugin", (), {"register_benchmarks": staticmethod(
        hookimpl(specname="register_benchmarks")(lambda register: register(Bare())))})
    registered_plugin(plugin)
    assert Bare().counterfactual_provider() is None
    result = CliRunner().invoke(cli, ["filter", "-m", "phantom-qwen", "-b", "bare_stub", "--out",
                                      str(tmp_path / "k.json")])
    assert result.exit_code == 2
    assert "benchmark 'bare_stub' makes no counterfactuals of its own; pass --counterfactuals DIR or --inpaint" \
        in " ".join(result.output.split())


def test_heatmap_method_gets_the_boxes_the_scorer_would_make(tiny_qwen_adapter):
    from cxr_attrib.frames import ResizePad
    from cxr_attrib.scoring.boxes import DERIVED_BOXES, input_heatmap_boxes

    result = attribute(tiny_qwen_adapter, IMAGE, QUESTION, method="occlusion", tiles=4, answer="Yes")
    assert result.meta.info["derived_boxes"] == DERIVED_BOXES and result.boxes
    frame = ResizePad(*IMAGE.shape, size=224)
    assert [list(b) for b in result.boxes] == input_heatmap_boxes(result.heatmap, frame).tolist()


def test_a_method_that_gives_its_own_boxes_keeps_them():
    result = attribute("none", IMAGE, QUESTION, method="center", answer="Yes", fraction=0.5)
    assert "derived_boxes" not in result.meta.info
    assert np.allclose(result.boxes, [(7.5, 10.0, 22.5, 30.0)], atol=1e-9)  # centre half of 30 x 40
