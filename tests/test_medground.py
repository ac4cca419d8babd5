"""MedGround-Bench loaders (see docs/benchmark-protocol.md): joins checked against hand-computed values on
tiny fixtures written in each dataset's own format, error messages, and the released
split's exact counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pluggy
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cxr_attrib import hookspecs
from cxr_attrib.benchmarks import medground
from cxr_attrib.benchmarks.imagenome import load_imagenome, parse_coord
from cxr_attrib.benchmarks.medground import (
    ENV_VAR,
    MedGroundBench,
    MedGroundLayout,
    UnknownSplitError,
    load_split,
    split_counts,
)
from cxr_attrib.benchmarks.padchest import load_padchest
from cxr_attrib.benchmarks.vindr import load_vindr
from cxr_attrib.errors import DataError
from cxr_attrib.testing.data_files import write_dicom

RELEASED = Path(__file__).parents[1] / ".." / "shared" / "data" / "medground_bench" / "direct.json"

# Header line 1; data rows are lines 2..8. Columns in an unusual order plus unused ones.
IMAGENOME_TSV = [
    ["study_id", "image_id", "patient_id", "bbox", "relation", "label_name", "categoryID",
     "coord224", "coord_original", "sentence"],
    ["50414267", "aaa.dcm", "10000032", "right lung", "1", "lung opacity",
     "anatomicalfinding", "[1, 1, 2, 2]", "[10, 20, 30, 40]", "opacity right"],
    ["50414267", "aaa.dcm", "10000032", "right lung", "1", "pneumonia", "disease",
     "[1, 1, 2, 2]", "[1, 2, 3, 4]", "pneumonia"],
    ["50414267", "aaa.dcm", "10000032", "left lung", "1", "lung opacity",
     "anatomicalfinding", "[1, 1, 2, 2]", "[50, 60, 70.5, 80]", "opacity left"],
    ["50414267", "aaa.dcm", "10000032", "left lung", "0", "pleural effusion", "disease",
     "[1, 1, 2, 2]", "[0, 0, 1, 1]", "no effusion"],
    ["50414267", "aaa.dcm", "10000032", "left lung", "1", "endotracheal tube",
     "tubesandlines", "[1, 1, 2, 2]", "[0, 0, 1, 1]", "tube"],
    ["s50000001", "bbb.dcm", "p10000001", "cardiac silhouette", "1",
     "enlarged cardiac silhouette", "anatomicalfinding", "[1, 1, 2, 2]", "[5, 6, 7, 8]", "big"],
    ["59000000", "ccc", "9000000", "right lung", "1", "atelectasis", "anatomicalfinding",
     "[1, 1, 2, 2]", "[0.5, 1.5, 2.5, 3.5]", "atelectasis"],
]
# Ids appear with and without their letter, image ids with and without ".dcm".
# Sorted groups (patient ids numerically: 9000000 < 10000001 < 10000032):
# 0 atelectasis, 1 enlarged cardiac silhouette, 2 lung opacity (lines 2 and 4), 3 pneumonia.

VINDR_CSV = """image_id,rad_id,class_name,x_min,y_min,x_max,y_max
b,R8,No finding,,,,
b,R9,Nodule/Mass,10.5,20,30,40.25
a,R8,Aortic enlargement,1,2,3,4
b,R10,Nodule/Mass,12,22,33,44
b,R9,Aortic enlargement,5,6,7,8
c,R8,No finding,,,,
"""
# Groups: 0 (a, Aortic enlargement), 1 (b, Aortic enlargement), 2 (b, Nodule/Mass) x2.

PADCHEST_STUDIES = [
    {"ImageID": "s0.png", "findings": [
        {"abnormal": False, "labels": ["normal"], "boxes": [[0, 0, 1, 1]], "extra_boxes": []},
        {"abnormal": True, "labels": ["nodule"], "boxes": [[0.1, 0.2, 0.5, 0.6]],
         "extra_boxes": [[0, 0, 0.25, 0.5]]},
        {"abnormal": True, "labels": ["scoliosis"], "boxes": [], "extra_boxes": []},
    ]},
    {"ImageID": "s1.png", "findings": [
        {"abnormal": True, "labels": ["cardiomegaly", "pleural effusion"], "boxes": [],
         "extra_boxes": [[0.5, 0.5, 1, 1]]},
    ]},
    {"ImageID": "s2.png", "findings": [
        {"abnormal": True, "labels": ["mass"], "boxes": [[0, 0, 1, 1]], "extra_boxes": []},
    ]},
]
# Items: 0 s0 "nodule" (study 0, finding 1), 1 s1 "cardiomegaly or pleural effusion",
# 2 s2 "mass". s0.png is 40 x 20 (W x H), s1.png is 30 x 10.

DICOM_PIXELS = np.array([[0, 1000, 2000], [4000, 3000, 1000]], dtype=np.uint16)
# No window: min-max to 8 bit, half up -> 0, 63.75, 127.5, 255, 191.25, 63.75.
DICOM_GREY = np.array([[0, 64, 128], [255, 191, 64]], dtype=np.uint8)


def _record(model: str, dataset: str, index: int, suffix: str = "direct") -> dict:
    return {"model": model, "dataset": dataset, "index": index, "answer": "Yes",
            f"prediction_{suffix}": "Yes", f"prediction_edited_{suffix}": "No",
            f"prediction_edited_kept_{suffix}": "Yes",
            f"prediction_edited_kept_normal_{suffix}": "Yes."}


DIRECT = [
    _record("m1", "imagenome", 2), _record("m1", "imagenome", 0), _record("m2", "imagenome", 2),
    _record("m1", "vindr_cxr", 2), _record("m2", "vindr_cxr", 0),
    _record("m1", "padchest_gr", 0), _record("m2", "padchest_gr", 1),
]
REASONING = [_record("m1", "vindr_cxr", 1, "cot")]


def write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root in the default layout with every fixture file."""
    base = tmp_path / "data"
    layout = MedGroundLayout()
    (base / layout.splits).mkdir(parents=True)
    (base / layout.splits / "direct.json").write_text(json.dumps(DIRECT))
    (base / layout.splits / "reasoning.json").write_text(json.dumps(REASONING))
    write_tsv(base / layout.imagenome_gold, IMAGENOME_TSV)
    mimic = base / layout.mimic_cxr_jpg
    for relpath, size in [("p90/p9000000/s59000000/ccc.jpg", (6, 4)),
                          ("p10/p10000001/s50000001/bbb.jpg", (6, 4)),
                          ("p10/p10000032/s50414267/aaa.jpg", (8, 5))]:
        (mimic / relpath).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 100).save(mimic / relpath)
    (base / layout.vindr_annotations).parent.mkdir(parents=True)
    (base / layout.vindr_annotations).write_text(VINDR_CSV)
    (base / layout.vindr_images).mkdir(parents=True)
    for image_id in "abc":
        write_dicom(base / layout.vindr_images / f"{image_id}.dicom", DICOM_PIXELS)
    (base / layout.padchest_images).mkdir(parents=True)
    (base / layout.padchest_studies).write_text(json.dumps(PADCHEST_STUDIES))
    Image.fromarray(np.full((20, 40), 3000, dtype=np.uint16)).save(
        base / layout.padchest_images / "s0.png")
    Image.new("L", (30, 10), 7).save(base / layout.padchest_images / "s1.png")
    return base


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------- dataset joins


def test_imagenome_groups_by_hand(root: Path) -> None:
    items = load_imagenome(root / MedGroundLayout().imagenome_gold)
    assert [(i.finding, i.category) for i in items] == [
        ("atelectasis", "anatomicalfinding"),
        ("enlarged cardiac silhouette", "anatomicalfinding"),
        ("lung opacity", "anatomicalfinding"),
        ("pneumonia", "disease"),
    ]
    assert [i.image_relpath for i in items] == [
        "p90/p9000000/s59000000/ccc.jpg",
        "p10/p10000001/s50000001/bbb.jpg",
        "p10/p10000032/s50414267/aaa.jpg",
        "p10/p10000032/s50414267/aaa.jpg",
    ]
    assert items[0].boxes.tolist() == [[0.5, 1.5, 2.5, 3.5]]
    assert items[1].boxes.tolist() == [[5, 6, 7, 8]]
    assert items[2].boxes.tolist() == [[10, 20, 30, 40], [50, 60, 70.5, 80]]
    assert items[2].lines == (2, 4)
    assert items[3].boxes.tolist() == [[1, 2, 3, 4]] and items[3].lines == (3,)
    assert items[2].boxes.dtype == np.float64 and not items[2].boxes.flags.writeable


def test_vindr_groups_by_hand(root: Path) -> None:
    items = load_vindr(root / MedGroundLayout().vindr_annotations)
    assert [(i.image_id, i.finding) for i in items] == [
        ("a", "Aortic enlargement"), ("b", "Aortic enlargement"), ("b", "Nodule/Mass")]
    assert items[0].boxes.tolist() == [[1, 2, 3, 4]]
    assert items[1].boxes.tolist() == [[5, 6, 7, 8]]
    assert items[2].boxes.tolist() == [[10.5, 20, 30, 40.25], [12, 22, 33, 44]]
    assert items[2].lines == (3, 5)
    assert items[2].image_relpath == "b.dicom"


def test_vindr_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "annotations_test.csv"
    path.write_text("\ufeff" + VINDR_CSV, encoding="utf-8")
    assert [i.finding for i in load_vindr(path)] == [
        "Aortic enlargement", "Aortic enlargement", "Nodule/Mass"]


def test_padchest_items_by_hand(root: Path) -> None:
    path = root / MedGroundLayout().padchest_studies
    items = load_padchest(path)
    assert [(i.image_id, i.finding, i.study, i.finding_number) for i in items] == [
        ("s0.png", "nodule", 0, 1),
        ("s1.png", "cardiomegaly or pleural effusion", 1, 0),
        ("s2.png", "mass", 2, 0),
    ]
    assert items[0].relative_boxes.tolist() == [[0.1, 0.2, 0.5, 0.6], [0, 0, 0.25, 0.5]]
    assert [i.image_id for i in load_padchest(path, max_studies=2)] == ["s0.png", "s1.png"]


def test_padchest_uses_the_first_2000_studies(tmp_path: Path) -> None:
    finding = {"abnormal": True, "labels": ["x"], "boxes": [[0, 0, 1, 1]], "extra_boxes": []}
    studies = [{"ImageID": f"{n}.png", "findings": [finding]} for n in range(2001)]
    path = tmp_path / "studies.json"
    path.write_text(json.dumps(studies))
    items = load_padchest(path)
    assert len(items) == 2000 and items[-1].image_id == "1999.png"


@given(st.lists(st.floats(0, 1e5, allow_nan=False), min_size=4, max_size=4))
def test_parse_coord_reads_what_was_written(values: list[float]) -> None:
    x1, x2 = sorted(values[::2])
    y1, y2 = sorted(values[1::2])
    assert parse_coord(f"[{x1!r}, {y1!r}, {x2!r}, {y2!r}]") == (x1, y1, x2, y2)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "[1, 2, 3, 4, 5]", "[1, 2, x, 4]",
                                  "[1, 2, nan, 4]", "[3, 2, 1, 4]", "__import__('os')"])
def test_parse_coord_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_coord(text)


# ------------------------------------------------------------- samples


def test_direct_samples_joined_by_hand(root: Path) -> None:
    samples = list(MedGroundBench(root).samples(split="direct"))
    assert [s.id for s in samples] == [
        "direct/imagenome/2/m1", "direct/imagenome/0/m1", "direct/imagenome/2/m2",
        "direct/vindr_cxr/2/m1", "direct/vindr_cxr/0/m2",
        "direct/padchest_gr/0/m1", "direct/padchest_gr/1/m2",
    ]
    first = samples[0]
    assert (first.dataset, first.index, first.model, first.mode, first.split) == (
        "imagenome", 2, "m1", "direct", "direct")
    assert first.finding == "lung opacity"
    assert first.question == "Is there evidence of lung opacity in the image?"
    assert first.answer == "Yes"
    assert first.boxes.tolist() == [[10, 20, 30, 40], [50, 60, 70.5, 80]]
    assert first.extra["image_path"] == str(
        root / "mimic-cxr-jpg/2.1.0/files/p10/p10000032/s50414267/aaa.jpg")
    assert first.extra["predictions"] == {
        "prediction": "Yes", "prediction_edited": "No", "prediction_edited_kept": "Yes",
        "prediction_edited_kept_normal": "Yes."}
    assert samples[1].finding == "atelectasis"
    assert samples[3].finding == "Nodule/Mass"
    assert samples[3].boxes.tolist() == [[10.5, 20, 30, 40.25], [12, 22, 33, 44]]
    assert samples[3].extra["image_path"] == str(root / "vindr_cxr/test/b.dicom")
    # PadChest-GR: relative boxes times (W, H) = (40, 20) and (30, 10).
    assert samples[5].finding == "nodule"
    assert samples[5].boxes.tolist() == [[4, 4, 20, 12], [0, 0, 10, 10]]
    assert samples[6].question == (
        "Is there evidence of cardiomegaly or pleural effusion in the image?")
    assert samples[6].boxes.tolist() == [[15, 5, 30, 10]]
    assert samples[6].extra["image_size"] == [30, 10]
    json.dumps([s.extra for s in samples])  # JSON-safe


def test_images_load_as_grey(root: Path) -> None:
    samples = {s.id: s for s in MedGroundBench(root).samples(split="direct")}
    jpeg = samples["direct/imagenome/2/m1"].load_image()
    assert jpeg.shape == (5, 8) and jpeg.dtype == np.uint8 and abs(int(jpeg[2, 3]) - 100) <= 2
    assert samples["direct/vindr_cxr/2/m1"].load_image().tolist() == DICOM_GREY.tolist()
    png = samples["direct/padchest_gr/1/m2"].load_image()
    assert png.shape == (10, 30) and int(png[0, 0]) == 7


def test_model_filter_and_splits(root: Path) -> None:
    bench = MedGroundBench(root)
    assert [s.id for s in bench.samples(split="direct", model="m2")] == [
        "direct/imagenome/2/m2", "direct/vindr_cxr/0/m2", "direct/padchest_gr/1/m2"]
    assert list(bench.samples(split="direct", model="absent")) == []
    for name in ("reasoning", "cot"):
        (sample,) = bench.samples(split=name)
        assert (sample.id, sample.mode, sample.split) == (
            "reasoning/vindr_cxr/1/m1", "reasoning", "reasoning")
        assert sample.finding == "Aortic enlargement"
        assert sample.boxes.tolist() == [[5, 6, 7, 8]]
    every = [s.id for s in bench.samples()]
    assert len(every) == len(DIRECT) + 1 and every[-1] == "reasoning/vindr_cxr/1/m1"
    with pytest.raises(UnknownSplitError, match="direct"):
        list(bench.samples(split="drect"))


def test_reasoning_file_with_direct_keys_is_refused(root: Path) -> None:
    (root / "medground_bench" / "reasoning.json").write_text(json.dumps(DIRECT))
    with pytest.raises(DataError, match="holds direct records"):
        list(MedGroundBench(root).samples(split="reasoning"))


def test_loading_writes_nothing_under_the_root(root: Path) -> None:
    before = _snapshot(root)
    bench = MedGroundBench(root)
    for sample in bench.samples():
        assert sample.load_image().ndim == 2
    assert _snapshot(root) == before


def test_layout_paths_can_be_overridden(root: Path, tmp_path: Path) -> None:
    studies = tmp_path / "elsewhere" / "grounded_reports.json"
    studies.parent.mkdir()
    studies.write_text(json.dumps(PADCHEST_STUDIES[1:]))
    bench = MedGroundBench(root, layout=MedGroundLayout(padchest_studies=str(studies)))
    sample = next(s for s in bench.samples(split="direct") if s.id == "direct/padchest_gr/0/m1")
    assert sample.finding == "cardiomegaly or pleural effusion"


# ------------------------------------------------------------- data root


def test_missing_root_is_one_clear_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(root)  # a valid layout in the cwd must not be picked up
    with pytest.raises(DataError) as caught:
        list(MedGroundBench().samples())
    message = str(caught.value)
    assert ENV_VAR in message and "<root>/medground_bench/direct.json" in message
    assert "<root>/vindr_cxr/test/<image_id>.dicom" in message
    monkeypatch.setenv(ENV_VAR, "  ")
    with pytest.raises(DataError, match=ENV_VAR):
        list(MedGroundBench().samples())


def test_root_from_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(root))
    assert len(list(MedGroundBench().samples(split="direct"))) == len(DIRECT)
    monkeypatch.setenv(ENV_VAR, str(root / "absent"))
    with pytest.raises(DataError, match=r"CXR_ATTRIB_DATA=.*absent.*is not a folder"):
        list(MedGroundBench().samples())


def test_missing_dataset_file_names_path_and_layout(root: Path) -> None:
    (root / "vindr_cxr/annotations/annotations_test.csv").unlink()
    with pytest.raises(DataError) as caught:
        list(MedGroundBench(root).samples(split="direct"))
    message = str(caught.value)
    assert "annotations_test.csv" in message and "<root>/padchest_gr/images/<ImageID>" in message


def test_missing_padchest_image_is_a_data_error(root: Path) -> None:
    (root / "padchest_gr/images/s1.png").unlink()
    with pytest.raises(DataError, match="s1.png"):
        list(MedGroundBench(root).samples(split="direct", model="m2"))


def test_index_beyond_the_annotations(root: Path) -> None:
    (root / "medground_bench/direct.json").write_text(json.dumps([_record("m", "vindr_cxr", 3)]))
    with pytest.raises(DataError, match="vindr_cxr/3.*yield only 3 items"):
        list(MedGroundBench(root).samples(split="direct"))


# ------------------------------------------------------------- malformed files


def test_malformed_imagenome_row_names_file_and_line(tmp_path: Path) -> None:
    rows = [list(row) for row in IMAGENOME_TSV]
    rows[3][8] = "[50, 60, 70.5]"
    path = tmp_path / "gold.txt"
    write_tsv(path, rows)
    with pytest.raises(DataError, match=r"gold\.txt, line 4: malformed"):
        load_imagenome(path)


def test_imagenome_header_names_the_missing_column(tmp_path: Path) -> None:
    rows = [list(row) for row in IMAGENOME_TSV]
    rows[0][6] = "category"
    path = tmp_path / "gold.txt"
    write_tsv(path, rows)
    with pytest.raises(DataError, match="lacks column 'categoryID'"):
        load_imagenome(path)


def test_malformed_vindr_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "annotations_test.csv"
    path.write_text(VINDR_CSV.replace("a,R8,Aortic enlargement,1,2,3,4",
                                      "a,R8,Aortic enlargement,1,2,,4"))
    with pytest.raises(DataError, match=r"annotations_test\.csv, line 4: malformed"):
        load_vindr(path)


def test_malformed_padchest_finding_names_study_and_finding(tmp_path: Path) -> None:
    studies = json.loads(json.dumps(PADCHEST_STUDIES))
    del studies[1]["findings"][0]["extra_boxes"]
    path = tmp_path / "studies.json"
    path.write_text(json.dumps(studies))
    with pytest.raises(DataError, match=r"studies\.json, study \[1\], finding \[0\]"):
        load_padchest(path)


def test_load_split_names_file_record_and_key(tmp_path: Path) -> None:
    records = [_record("m1", "imagenome", 0), _record("m1", "imagenome", 1)]
    del records[1]["prediction_edited_direct"]
    path = tmp_path / "direct.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"direct\.json, record \[1\]: missing key "
                                        r"'prediction_edited_direct'"):
        load_split(path)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [({"dataset": "mimic"}, "unknown dataset 'mimic'"),
     ({"index": -1}, "index"),
     ({"index": True}, "index"),
     ({"answer": None}, "answer"),
     ({"index": 0}, r"duplicates record \[0\]")],
)
def test_load_split_rejects_bad_records(tmp_path: Path, change: dict, pattern: str) -> None:
    path = tmp_path / "direct.json"
    path.write_text(json.dumps([_record("m1", "imagenome", 0),
                                {**_record("m1", "imagenome", 5), **change}]))
    with pytest.raises(DataError, match=pattern):
        load_split(path)


# ------------------------------------------------------------- registration


def test_hook_registers_the_benchmark() -> None:
    manager = pluggy.PluginManager("cxr_attrib")
    manager.add_hookspecs(hookspecs)
    manager.register(medground)
    registered = {}
    manager.hook.register_benchmarks(
        register=lambda obj, name=None: registered.setdefault(name, obj))
    assert list(registered) == ["medground"]
    assert isinstance(registered["medground"], MedGroundBench)


# ------------------------------------------------------------- the released split


@pytest.mark.skipif(not RELEASED.is_file(), reason="released direct.json not present")
def test_released_direct_split_counts() -> None:
    records = load_split(RELEASED)
    counts = split_counts(records)
    assert counts.records == 1880
    assert counts.models == {
        "gemma3_12b": 282, "gemma3_4b": 222, "medgemma1_5_4b": 473, "medgemma_4b": 562,
        "qwen2_5_vl_3b": 199, "qwen2_5_vl_7b": 142}
    assert counts.datasets == {"imagenome": 804, "padchest_gr": 643, "vindr_cxr": 433}
    assert counts.items == 1266
    assert counts.answers == {"Yes": 1880}
    assert {r.mode for r in records} == {"direct"}
    assert (records[0].model, records[0].dataset, records[0].index) == (
        "qwen2_5_vl_3b", "imagenome", 43)
