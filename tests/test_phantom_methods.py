"""The phantom methods table (benchmarks/phantom_methods.py): options and a small real run."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method
from cxr_attrib.sanitise import for_markdown

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
phantom_methods = importlib.import_module("phantom_methods")


def test_params_option_reads_literals_per_method():
    parsed = phantom_methods.parse_params(["rise:n_masks=200", "rise:smooth=False", "occlusion:fill=mean"])
    assert parsed == {"rise": {"n_masks": 200, "smooth": False}, "occlusion": {"fill": "mean"}}
    with pytest.raises(SystemExit, match="METHOD:NAME=VALUE"):
        phantom_methods.parse_params(["rise-n_masks=3"])


class Broken(Method):
    name = "broken_for_table"
    summary = "Raises on every sample."
    reference = "none"

    def attribute(self, request):
        raise RuntimeError("boom")


class BrokenPlugin:
    __name__ = "BrokenPlugin"

    @staticmethod
    @hookimpl
    def register_methods(register):
        register(Broken)


@pytest.mark.slow
def test_small_run_in_two_merged_parts_scores_kept_samples_and_records_a_failing_method(tmp_path, registered_plugin):
    registered_plugin(BrokenPlugin)
    common = ["--per-finding", "1", "--methods", "center,rise,broken_for_table",
              "--params", "rise:n_masks=16", "rise:batch_size=17"]
    for model in phantom_methods.MODELS:
        phantom_methods.main([*common, "--models", model, "--save", str(tmp_path / f"{model}.json"),
                              "--out", str(tmp_path / f"{model}.md")])
    out = tmp_path / "table.md"
    phantom_methods.main(["--merge", *(str(tmp_path / f"{m}.json") for m in phantom_methods.MODELS),
                          "--out", str(out)])
    text = out.read_text()
    for model in phantom_methods.MODELS:
        assert "python benchmarks/phantom_methods.py --per-finding 1 --methods center,rise,broken_for_table" in text
        assert re.search(rf"\| {model} \| \d+ \| 6 \|", text), f"{model}: one kept sample per finding"
        assert re.search(rf"\| {model} \| direct \| rise \| phantom \| 6 \|", text)
        prior = re.escape(for_markdown("center (prior)"))  # markdown-escaped: center \(prior\)
        assert re.search(rf"\| {model} \| direct \| {prior} \| phantom \| 6 \|", text)
        assert text.count(f"- {model} / broken_for_table / phantom/direct/") == 6
    assert re.search(r"\| macro \| direct \| rise \| phantom \| 12 \|", text)
    assert "RuntimeError: boom" in text and "`rise`: {'n_masks': 16, 'batch_size': 17}" in text
