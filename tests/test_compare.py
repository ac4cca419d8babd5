"""``compare()`` / ``cxr-attrib compare`` / ``cxr-attrib demo``: several methods side by side, scored.

The demo is run once (module fixture) and checked three ways: the sheet's pixels at
the truth box's edges, the page in a headless browser, and the page's numbers
against ``score()`` on the saved results.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cxr_attrib import hookimpl
from cxr_attrib.cli import cli
from cxr_attrib.comparison import COMPARE_METHODS, Comparison, Panel, compare
from cxr_attrib.compare_page import render_page, render_sheet, result_file
from cxr_attrib.errors import DataError, UnknownMethodError
from cxr_attrib.method import Method
from cxr_attrib.render import TRUTH_COLOR
from cxr_attrib.result import Attribution, Meta, Target
from cxr_attrib.scoring.score import score

Q = "Is there evidence of pleural effusion in the image?"
PAYLOAD = "<script>document.title='PWNED'</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from cxr_attrib_phantom.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return run_demo(out), out


def _truth_edges_in(picture: np.ndarray, origin: tuple[int, int], scale: int, box) -> list[tuple[int, ...]]:
    """Pixels on the middle of each edge of ``box`` (drawn 2 px inside its exclusive ends)."""
    (ox, oy), (x1, y1, x2, y2) = origin, (round(v * scale) for v in box)
    mx, my = ox + (x1 + x2) // 2, oy + (y1 + y2) // 2
    points = [(oy + y1, mx), (oy + y2 - 1, mx), (my, ox + x1), (my, ox + x2 - 1)]
    return [tuple(picture[y, x]) for y, x in points]


@pytest.mark.slow
def test_demo_sheet_shows_every_method_with_the_exact_truth_box(demo):
    run, out = demo
    comparison = run.comparison
    assert [p.method for p in comparison.panels] == list(COMPARE_METHODS)
    assert all(p.error is None for p in comparison.panels), [p.error for p in comparison.panels]
    assert comparison.answer.strip() == "Yes"
    files = {p.name for p in out.iterdir()}
    assert files == {"phantom.png", "compare.png", "index.html", *(result_file(m) for m in COMPARE_METHODS)}
    saved = np.asarray(Image.open(out / "compare.png").convert("RGB"))
    sheet = render_sheet(comparison)
    np.testing.assert_array_equal(saved, np.asarray(sheet.image))  # PNG is lossless: the geometry below holds
    assert len(sheet.origins) == len(COMPARE_METHODS) and sheet.scale >= 1
    for origin in sheet.origins:
        assert _truth_edges_in(saved, origin, sheet.scale, run.ground_truth) == [TRUTH_COLOR] * 4
    # a ranked list by IoU, prompting (the box the model was taught to state) on top
    ious = [p.metric("iou") for p in comparison.ranked()]
    assert ious == sorted(ious, reverse=True) and comparison.ranked()[0].method == "prompting"


@pytest.mark.slow
def test_demo_page_numbers_equal_score_on_the_saved_results(demo):
    run, out = demo
    page = (out / "index.html").read_text(encoding="utf-8")
    truth = np.asarray([run.ground_truth])
    for method in COMPARE_METHODS:
        loaded = Attribution.load(out / result_file(method))
        scores = score(loaded, truth)
        row = re.search(rf'<tr id="row-{method}">(.*?)</tr>', page, re.S).group(1)
        values = re.findall(r'<td data-value="([^"]*)">', row)[1:4]  # rank, then IoU, pointing game, deletion gain
        assert float(values[0]) == pytest.approx(scores.iou, abs=1e-12)
        if scores.pointing_game is None:
            assert values[1] == ""
        else:
            assert float(values[1]) == pytest.approx(scores.pointing_game, abs=1e-12)
        assert float(values[2]) == pytest.approx(run.comparison.panels[COMPARE_METHODS.index(method)]
                                                 .metric("deletion_gain"), abs=1e-12)
    # the deletion gain of one method, recomputed from its saved result with the model
    from cxr_attrib.models import load_adapter

    loaded = Attribution.load(out / result_file("lrp"))
    again = score(loaded, truth, model=load_adapter("phantom-qwen"), image=run.comparison.image, seed=0)
    shown = json.loads(re.search(r'id="compare-data">(.*?)</script>', page, re.S).group(1))
    lrp = next(m for m in shown["methods"] if m["method"] == "lrp")
    assert lrp["deletion_gain"] == pytest.approx(again.deletion_gain, abs=1e-9)
    assert [s for s in shown["said_vs_used"]] == [s.line() for s in run.comparison.said_vs_used]
    assert len(shown["said_vs_used"]) == 2 and "prompting" in shown["said_vs_used"][0]


chromium = shutil.which("chromium")


@pytest.mark.slow
@pytest.mark.skipif(chromium is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                    ".ci/run installs it")
def test_demo_page_in_headless_chromium_shows_every_panel_and_the_truth(demo, tmp_path):
    run, out = demo
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (out / "index.html").as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-sortable="ready"' in dom  # the page's own script ran under its CSP
    for method in COMPARE_METHODS:
        figure = re.search(rf'<figure id="panel-{method}"><img src="data:image/png;base64,([^"]+)"', dom)
        assert figure is not None, method
        panel = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(figure.group(1)))).convert("RGB"))
        scale = panel.shape[1] // 224
        origin = (0, panel.shape[0] - 224 * scale)  # the title strip is on top
        assert _truth_edges_in(panel, origin, scale, run.ground_truth) == [TRUTH_COLOR] * 4, method
    truth = ", ".join(f"{v:g}" for v in run.ground_truth)
    assert f'<span id="truth">({truth})</span>' in dom
    assert re.search(r'<p class="said" id="said-vs-used-1">the model says \(', dom)


def _synthetic(answer: str, error: str) -> Comparison:
    image = np.full((40, 60), 90, np.uint8)
    heat = np.zeros((40, 60), np.float32)
    heat[5:15, 5:15] = 1.0
    result = Attribution(answer=answer, target=Target(answer, "answer", "direct"), image=image, heatmap=heat,
                         meta=Meta(method=PAYLOAD, model="m", image_size=(40, 60)), boxes=[(5, 5, 15, 15)])
    return Comparison(model=PAYLOAD, question=PAYLOAD, answer=answer, image=image,
                      truth=np.array([[0.0, 0.0, 20.0, 20.0]]),
                      panels=(Panel(PAYLOAD, result, None), Panel("broken", None, None, error)))


def test_page_escapes_every_model_and_user_string():
    page = render_page(_synthetic("Yes " + PAYLOAD, "RuntimeError: " + PAYLOAD))
    assert "<script>document" not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the JSON data and the sort script
    data = re.search(r'id="compare-data">(.*?)</script>', page, re.S).group(1)
    assert not set(data) & set("<>&") and json.loads(data)["answer"] == "Yes " + PAYLOAD
    assert "Yes &lt;script&gt;" in page and "RuntimeError: &lt;script&gt;" in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert html.unescape(csp).startswith("default-src 'none'; img-src data:;")


def test_a_failed_method_gets_an_error_panel_and_the_others_render(tiny_qwen_adapter, registered_plugin):
    class Broken(Method):
        name = "broken_stub"
        summary = "Fails half-way."
        reference = "test"
        uses_model = False

        def attribute(self, request):
            raise RuntimeError("half-way " + PAYLOAD)

    registered_plugin(type("BrokenPlugin", (), {"register_methods": staticmethod(
        hookimpl(specname="register_methods")(lambda register: register(Broken)))}))
    image = np.full((56, 84), 120, np.uint8)
    comparison = compare(tiny_qwen_adapter, image, Q, ["whole_image", "broken_stub", "center"],
                         truth=[0, 0, 42, 28], answer="Yes", faithfulness=False)
    assert [p.method for p in comparison.panels] == ["whole_image", "broken_stub", "center"]
    broken = comparison.panels[1]
    assert broken.result is None and "half-way" in broken.error and "\n" not in broken.error
    assert comparison.panels[0].metric("iou") == pytest.approx(42 * 28 / (84 * 56))
    sheet = render_sheet(comparison)
    assert len(sheet.origins) == 3
    assert comparison.ranked()[-1].method == "broken_stub"


def test_compare_on_a_dicom_keeps_boxes_in_the_dicoms_pixel_frame(tiny_qwen_adapter, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    rows, columns = 300, 500  # wide: the working frame pads top and bottom
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta, SecondaryCaptureImageStorage, "1.2.3", "CR"
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = (np.arange(rows * columns).reshape(rows, columns) % 4000).astype("<u2").tobytes()
    path = tmp_path / "cxr.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    truth = [100, 50, 350, 200]  # DICOM pixels
    comparison = compare(tiny_qwen_adapter, path, Q, ["whole_image", "center"], truth=truth, answer="Yes",
                         faithfulness=False)
    whole, centre = (p.result for p in comparison.panels)
    assert comparison.image.shape == (rows, columns)
    assert whole.boxes == ((0.0, 0.0, float(columns), float(rows)),)  # the whole DICOM, not the 224 frame
    x1, y1, x2, y2 = centre.boxes[0]
    assert (x1 + x2) / 2 == pytest.approx(columns / 2, abs=1.5) and (y1 + y2) / 2 == pytest.approx(rows / 2, abs=1.5)
    assert comparison.panels[0].metric("iou") == pytest.approx(250 * 150 / (rows * columns))
    files = comparison.save(tmp_path / "out")
    assert Attribution.load(tmp_path / "out" / "result-whole_image.json").boxes == whole.boxes
    assert {f.name for f in files} >= {"compare.png", "index.html"}


def test_an_unknown_method_among_several_fails_before_any_model_loads(monkeypatch):
    import cxr_attrib.comparison as module

    monkeypatch.setattr(module, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UnknownMethodError, match=r"unknown method 'oclusion'\. Did you mean 'occlusion'"):
        compare("phantom-qwen", np.zeros((8, 8), np.uint8), Q, ["medfocus", "oclusion", "lrp"])
    with pytest.raises(DataError, match="repeat"):
        compare("phantom-qwen", np.zeros((8, 8), np.uint8), Q, ["lrp", "lrp"])


@pytest.mark.parametrize(("truth", "match"), [
    ("0,0,300,10", r"truth box 0,0,300,10 lies outside the 64 x 48 image"),
    ("30,10,20,40", r"truth box 30,10,20,40 is inverted or empty"),
    ("1,2,3", r"--truth must be x1,y1,x2,y2 \(four numbers"),
])
def test_compare_command_refuses_a_bad_truth_in_one_line(tmp_path, truth, match, monkeypatch):
    import cxr_attrib.comparison as module

    monkeypatch.setattr(module, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(image)
    result = CliRunner().invoke(cli, ["compare", str(image), "-q", Q, "-m", "phantom-qwen", "--truth", truth,
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert re.search(match, result.output) and not (tmp_path / "out").exists()


def test_compare_command_refuses_an_output_folder_that_is_a_file(tmp_path):
    image, taken = tmp_path / "x.png", tmp_path / "taken"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(image)
    taken.write_text("mine")
    result = CliRunner().invoke(cli, ["compare", str(image), "-q", Q, "-m", "no-such-model", "--out", str(taken)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"output folder {str(taken)!r} is a file" in result.output and taken.read_text() == "mine"


def test_compare_command_writes_the_sheet_page_and_results_and_ranks_by_iou(tmp_path, tiny_qwen_adapter,
                                                                            monkeypatch):
    import cxr_attrib.comparison as module

    monkeypatch.setattr(module, "load_adapter", lambda *a, **k: tiny_qwen_adapter)
    image = tmp_path / "x.png"
    Image.fromarray(np.full((48, 64), 100, np.uint8)).save(image)
    result = CliRunner().invoke(cli, ["compare", str(image), "-q", Q, "-m", "tiny", "--methods", "center,whole_image",
                                      "--truth", "16,12,48,36", "--answer", "Yes", "--no-faithfulness",
                                      "--out", str(tmp_path / "out")], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    order = [n for line in lines for n in ("center", "whole_image") if f" {n} " in line]
    assert order == ["center", "whole_image"]  # the centre box overlaps the centred truth more
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "compare.png", "index.html", "result-center.json", "result-whole_image.json"}
