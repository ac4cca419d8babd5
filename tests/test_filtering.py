"""The causal filter: providers, keep/reject decisions, the record schema and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_faithfulness import WIRED_REGION, RegionAdapter, wired_gemma

from cxr_attrib.adapter import ModelCard
from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.cli import cli
from cxr_attrib.errors import DataError
from cxr_attrib.filtering import (
    CounterfactualProvider,
    Counterfactuals,
    FolderProvider,
    InpaintProvider,
    _harmonic_fill,
    box_mask,
    causal_filter,
    write_records,
)
from cxr_attrib.frames import ResizePad
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.models import clear_adapter_cache
from cxr_attrib.targets import build_prompt, parse_yes_no

SHAPE = (40, 60)  # (H, W) input; working frame 16: content 16 x 11, rows 2..12
REGION = (4, 5, 8, 9)  # the fake model's decisive working-frame pixels
FINDING_BOX = (11.0, 7.0, 34.0, 29.0)  # input pixels: the region plus a working-pixel margin
BACKGROUND = 128
RECORD_KEYS = {
    "model", "dataset", "index", "answer", "prediction_direct", "prediction_edited_direct",
    "prediction_edited_kept_direct", "prediction_edited_kept_normal_direct", "kept", "approximate",
}


def _image(finding: bool = True) -> np.ndarray:
    image = np.full(SHAPE, BACKGROUND, dtype=np.uint8)
    if finding:
        x1, y1, x2, y2 = (int(v) for v in FINDING_BOX)
        image[y1:y2, x1:x2] = 255
    return image


def _sample(index: int, boxes, *, finding: bool = True, extra: dict | None = None,
            dataset: str = "toyset") -> Sample:
    image = _image(finding)
    return Sample(
        id=f"{dataset}/{index}", dataset=dataset, index=index, finding="nodule",
        question="Is there evidence of nodule in the image?", answer="Yes",
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), load_image=lambda: image,
        extra=extra or {},
    )


class ExactProvider(CounterfactualProvider):
    """Counterfactuals exact by construction: the scene is background + finding.

    ``removed`` paints the boxes with the background; ``kept`` brightens outside the
    boxes by 8; ``kept_normal`` does the same, or (``extra["harsh"]``) paints everything
    outside the boxes with the background, which removes any evidence left there.
    """

    def counterfactuals(self, sample: Sample) -> Counterfactuals:
        image = sample.load_image()
        inside = box_mask(sample.boxes, image.shape)
        removed = np.where(inside, BACKGROUND, image).astype(np.uint8)
        kept = np.where(inside, image, np.clip(image.astype(int) + 8, 0, 255)).astype(np.uint8)
        kept_normal = np.where(inside, image, BACKGROUND if sample.extra.get("harsh") else kept).astype(np.uint8)
        return Counterfactuals(removed, kept, kept_normal, approximate=False)


def _adapter() -> RegionAdapter:
    return RegionAdapter(REGION, size=16, threshold=0.85, name="fake_region")


def test_region_and_box_agree_in_the_shared_working_frame() -> None:
    frame = ResizePad(*SHAPE, 16)
    x1, y1, x2, y2 = frame.boxes_to_input([REGION])[0]
    fx1, fy1, fx2, fy2 = FINDING_BOX
    assert fx1 < x1 and fy1 < y1 and fx2 > x2 and fy2 > y2  # the box holds the region


def test_filter_keeps_only_causal_samples_and_writes_the_exact_schema(tmp_path: Path) -> None:
    half = (11.0, 7.0, 22.5, 29.0)
    samples = [
        _sample(0, [FINDING_BOX]),  # box = evidence: kept
        _sample(1, [(40.0, 30.0, 58.0, 39.0)]),  # box elsewhere: removing it changes nothing
        _sample(2, [FINDING_BOX], finding=False),  # the model says no on the original
        _sample(3, [half], extra={"harsh": True}),  # half the evidence lies outside the box
    ]
    adapter = _adapter()
    records = list(causal_filter(adapter, samples, ExactProvider()))
    assert [r.kept for r in records] == [True, False, False, False]
    verdicts = [(r.prediction, r.prediction_edited, r.prediction_edited_kept, r.prediction_edited_kept_normal)
                for r in records]
    assert verdicts == [
        ("Yes.", "No.", "Yes.", "Yes."),
        ("Yes.", "Yes.", "Yes.", "Yes."),
        ("No.", "No.", "No.", "No."),
        ("Yes.", "No.", "Yes.", "No."),
    ]
    assert adapter.counter.generate_calls == 4 * len(samples)
    assert set(adapter.prompts) == {build_prompt("Is there evidence of nodule in the image?", "direct")}
    out = tmp_path / "out" / "records.json"
    assert write_records(records, out) == 4
    written = json.loads(out.read_text())
    assert written[0] == {
        "model": "fake_region", "dataset": "toyset", "index": 0, "answer": "Yes",
        "prediction_direct": "Yes.", "prediction_edited_direct": "No.",
        "prediction_edited_kept_direct": "Yes.", "prediction_edited_kept_normal_direct": "Yes.",
        "kept": True, "approximate": False,
    }
    assert [row["kept"] for row in written] == [True, False, False, False]
    assert [p.name for p in out.parent.iterdir()] == ["records.json"]  # no temporary file left


def test_wired_model_answers_alike_when_only_the_outside_of_the_box_changes() -> None:
    """A real tiny model that sees only WIRED_REGION: edits outside the box change nothing."""
    adapter = wired_gemma()
    frame = ResizePad(448, 336, adapter.working_size)  # content 168 x 224 at x offset 28
    box = frame.boxes_to_input([WIRED_REGION])[0] + np.array([-4.0, -4.0, 4.0, 4.0])  # 2 working px margin
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(448, 336), dtype=np.uint8)
    sample = Sample(id="toyset/5", dataset="toyset", index=5, finding="nodule",
                    question="Is there evidence of nodule in the image?", answer="Yes",
                    boxes=box[None], load_image=lambda: image)
    adapter.counter.reset()
    (record,) = causal_filter(adapter, [sample], ExactProvider(), max_new_tokens=4)
    assert adapter.counter.generate_calls == 4
    assert record.prediction_edited_kept == record.prediction == record.prediction_edited_kept_normal
    assert record.prediction_edited != record.prediction  # removing inside the box reaches the model
    verdicts = [parse_yes_no(text, mode="direct") for text in (
        record.prediction, record.prediction_edited, record.prediction_edited_kept,
        record.prediction_edited_kept_normal)]
    assert record.kept == (verdicts == ["yes", "no", "yes", "yes"])


def test_reasoning_mode_uses_cot_keys_and_its_prompt() -> None:
    adapter = _adapter()
    (record,) = causal_filter(adapter, [_sample(0, [FINDING_BOX])], ExactProvider(), mode="reasoning",
                              model="qwen2_5_vl_3b")
    assert record.kept and record.model == "qwen2_5_vl_3b"
    assert set(record.to_dict()) == {
        "model", "dataset", "index", "answer", "prediction_cot", "prediction_edited_cot",
        "prediction_edited_kept_cot", "prediction_edited_kept_normal_cot", "kept", "approximate",
    }
    assert adapter.prompts[0].endswith("Think step by step and answer with yes or no.")


def test_counterfactual_of_another_size_is_rejected() -> None:
    class Cropped(ExactProvider):
        def counterfactuals(self, sample: Sample) -> Counterfactuals:
            edits = super().counterfactuals(sample)
            return Counterfactuals(edits.removed[:-1], edits.kept, edits.kept_normal, False)

    with pytest.raises(DataError, match=r"removed.*\(39, 60\).*\(40, 60\)"):
        list(causal_filter(_adapter(), [_sample(0, [FINDING_BOX])], Cropped()))


def test_folder_provider_layout_and_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "edits" / "toyset"
    folder.mkdir(parents=True)
    images = {suffix: np.full(SHAPE, value, dtype=np.uint8)
              for suffix, value in zip(FolderProvider.SUFFIXES, (10, 20, 30))}
    for suffix, image in images.items():
        Image.fromarray(image).save(folder / f"7{suffix}")
    provider = FolderProvider(tmp_path / "edits")
    edits = provider.counterfactuals(_sample(7, [FINDING_BOX]))
    assert (edits.removed[0, 0], edits.kept[0, 0], edits.kept_normal[0, 0]) == (10, 20, 30)
    assert edits.removed.shape == SHAPE and edits.approximate is False
    (folder / "7_edited_kept_normal.png").unlink()
    with pytest.raises(DataError, match=r"toyset/7_edited_kept_normal\.png"):
        provider.counterfactuals(_sample(7, [FINDING_BOX]))
    with pytest.raises(DataError, match="not a folder"):
        FolderProvider(tmp_path / "nowhere")


def test_box_mask_covers_every_overlapping_pixel() -> None:
    mask = box_mask([(1.5, 0.0, 3.0, 1.2), (9.0, 9.0, 9.0, 12.0)], (4, 5))
    expected = np.zeros((4, 5), dtype=bool)
    expected[0:2, 1:3] = True  # columns 1, 2 and rows 0, 1 overlap; the empty box adds nothing
    np.testing.assert_array_equal(mask, expected)


def test_inpaint_changes_only_inside_for_removed_and_only_outside_for_kept() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, size=SHAPE, dtype=np.uint8)
    image[7:29, 11:34] = 255
    sample = _sample(0, [FINDING_BOX])
    sample = Sample(**{**sample.__dict__, "load_image": lambda: image})
    edits = InpaintProvider().counterfactuals(sample)
    inside = box_mask(sample.boxes, SHAPE)
    assert edits.approximate is True
    assert np.array_equal(edits.removed[~inside], image[~inside])
    assert (edits.removed[inside] != image[inside]).mean() > 0.9
    assert edits.removed[inside].mean() < 160  # the bright finding is gone
    for edited in (edits.kept, edits.kept_normal):
        assert np.array_equal(edited[inside], image[inside])
        assert (edited[~inside] != image[~inside]).mean() > 0.5
    again = InpaintProvider().counterfactuals(sample)  # seeded by the sample id
    assert np.array_equal(again.removed, edits.removed) and np.array_equal(again.kept_normal, edits.kept_normal)


def test_harmonic_fill_is_the_mean_of_its_neighbours_and_bounded() -> None:
    yy, xx = np.mgrid[:60, :80]
    image = (100 + 40 * np.sin(xx / 9.0) + 20 * np.cos(yy / 7.0)).astype(np.float64)
    mask = np.zeros(image.shape, dtype=bool)
    mask[10:40, 20:60] = True
    exact = _harmonic_fill(image, mask, max_unknowns=10**6)
    r, c = 25, 40
    neighbours = (exact[r - 1, c] + exact[r + 1, c] + exact[r, c - 1] + exact[r, c + 1]) / 4
    assert exact[r, c] == pytest.approx(neighbours, abs=1e-9)
    assert image[~mask].min() <= exact[mask].min() and exact[mask].max() <= image[~mask].max()
    coarse = _harmonic_fill(image, mask, max_unknowns=300)  # two-level path
    assert np.abs(coarse - exact).max() < 3.0  # grey levels; the boundary spans ~120
    assert np.array_equal(coarse[~mask], image[~mask])


def test_write_records_never_writes_into_a_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (record,) = causal_filter(_adapter(), [_sample(0, [FINDING_BOX])], ExactProvider())
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match="never written"):
        write_records([record], tmp_path / "data" / "sub" / "r.json")
    with pytest.raises(DataError, match="never written"):
        write_records([record], tmp_path / "edits" / "r.json", protected=[tmp_path / "edits"])
    assert write_records([record], tmp_path / "elsewhere.json") == 1


class _StubBenchmark(Benchmark):
    name = "stub_filter"
    summary = "Two toy items for the filter command."

    def samples(self, *, split=None, model=None):
        yield _sample(0, [FINDING_BOX])
        yield _sample(0, [FINDING_BOX])  # the same item listed for another model: asked once
        yield _sample(1, [(40.0, 30.0, 58.0, 39.0)], dataset="other")


class _StubPlugin:
    __name__ = "StubFilterPlugin"

    @hookimpl
    def register_benchmarks(self, register) -> None:
        register(_StubBenchmark())

    @hookimpl
    def register_adapters(self, register) -> None:
        register(ModelCard(key="fake_region", source="fake", family="fake_region", summary="test fake",
                           load=lambda source, options, name: _adapter()))
        register(ModelCard(key="tiny_wired", source="tiny", family="gemma3", summary="wired tiny Gemma 3",
                           load=lambda source, options, name: wired_gemma()))


def test_cli_filter_writes_records_and_counts(registered_plugin, tmp_path: Path) -> None:
    registered_plugin(_StubPlugin())
    out = tmp_path / "records.json"
    runner = CliRunner()
    try:
        result = runner.invoke(cli, ["filter", "--model", "fake_region", "--benchmark", "stub_filter",
                                     "--inpaint", "--out", str(out)])
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())
        assert all(set(r) == RECORD_KEYS for r in rows)
        assert [(r["dataset"], r["index"], r["kept"], r["approximate"]) for r in rows] == [
            ("toyset", 0, True, True), ("other", 1, False, True)]
        assert "kept 1 of 2 items (approximate counterfactuals)" in result.output
        limited = runner.invoke(cli, ["filter", "-m", "fake_region", "-b", "stub_filter", "--inpaint",
                                      "--limit", "1", "--out", str(out)])
        assert limited.exit_code == 0 and len(json.loads(out.read_text())) == 1
        neither = runner.invoke(cli, ["filter", "-m", "fake_region", "-b", "stub_filter", "--out", str(out)])
        assert neither.exit_code == 2 and "makes no counterfactuals of its own" in neither.output
        both = runner.invoke(cli, ["filter", "-m", "fake_region", "-b", "stub_filter", "--inpaint",
                                   "--counterfactuals", str(tmp_path), "--out", str(out)])
        assert both.exit_code == 2 and "at most one of --counterfactuals DIR and --inpaint" in both.output
        missing = runner.invoke(cli, ["filter", "-m", "fake_region", "-b", "stub_filter", "--counterfactuals",
                                      str(tmp_path), "--out", str(tmp_path.parent / "r.json")])
        assert missing.exit_code == 1 and "missing counterfactual" in missing.output
    finally:
        clear_adapter_cache()


def test_cli_filter_with_a_tiny_real_model(registered_plugin, tmp_path: Path) -> None:
    registered_plugin(_StubPlugin())
    out = tmp_path / "records.json"
    try:
        result = CliRunner().invoke(cli, ["filter", "-m", "tiny_wired", "-b", "stub_filter", "--inpaint",
                                          "--max-new-tokens", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())
        assert [(r["model"], r["dataset"], r["index"], r["approximate"]) for r in rows] == [
            ("tiny_wired", "toyset", 0, True), ("tiny_wired", "other", 1, True)]
        assert all(set(r) == RECORD_KEYS for r in rows)
        assert f"kept {sum(r['kept'] for r in rows)} of 2 items" in result.output
    finally:
        clear_adapter_cache()
