"""Box and mask benchmarks (RSNA Pneumonia, SIIM-ACR, ChestX-Det10, MS-CXR): tiny fixtures in
each dataset's own format, checked against hand-computed samples; bad input refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_attrib.benchmarks.chestx_det10 import ChestXDet10
from cxr_attrib.benchmarks.ms_cxr import MsCxr
from cxr_attrib.benchmarks.rle import decode_rle, parse_rle
from cxr_attrib.benchmarks.rsna import RsnaPneumonia
from cxr_attrib.benchmarks.siim import SiimAcr, runs_box
from cxr_attrib.errors import DataError
from cxr_attrib.registry import get_benchmark
from cxr_attrib.testing.data_files import write_dicom

SIIM_SHAPE = (8, 6)  # (H, W): non-square, so a transposed decode cannot pass
RSNA_CSV = """patientId,x,y,width,height,Target
p1,1,2,3,4,1
p2,,,,,0
p1,5,5,2,2,1
p3,0.5,1,2.5,3,1
"""
# "10 3 20 2": pixels 10-12 (column 1, rows 2-4) and 33-34 (column 4, rows 1-2).
# "5 4": pixels 5-8: column 0 rows 5-7 and column 1 row 0 (a run crossing a column).
SIIM_CSV = """ImageId, EncodedPixels
imgA, 10 3 20 2
imgB,-1
imgA, 5 4
"""
DET10 = [
    {"file_name": "a.png", "syms": ["Nodule", "Effusion", "Nodule"], "boxes": [[1, 1, 3, 3], [0, 4, 6, 8], [4, 1, 5, 2]]},
    {"file_name": "b.png", "syms": [], "boxes": []},
]
MS_CXR_CSV = """dicom_id,study_id,category_name,label_text,path,x,y,w,h,image_width,image_height
d1,s1,Pneumonia,left lower lobe pneumonia,files/p10/p10000001/s1/d1.jpg,1,1,3,2,8,8
d1,s1,Pneumonia,left lower lobe pneumonia,files/p10/p10000001/s1/d1.jpg,4,4,2,2,8,8
d1,s1,Cardiomegaly,enlarged heart,files/p10/p10000001/s1/d1.jpg,2,3,4,4,8,8
d2,s2,Cardiomegaly,cardiomegaly,files/p10/p10000002/s2/d2.jpg,0,0,5,5,8,8
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "data"
    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 100
    (base / "rsna_pneumonia/stage_2_train_images").mkdir(parents=True)
    (base / "rsna_pneumonia/stage_2_train_labels.csv").write_text(RSNA_CSV)
    for patient in ("p1", "p2", "p3"):
        write_dicom(base / f"rsna_pneumonia/stage_2_train_images/{patient}.dcm", grey)
    nested = base / "siim_acr/dicom-images-train/study/series"
    nested.mkdir(parents=True)
    (base / "siim_acr/train-rle.csv").write_text(SIIM_CSV)
    write_dicom(nested / "imgA.dcm", grey[:, :6])
    write_dicom(base / "siim_acr/dicom-images-train/imgB.dcm", grey[:, :6])
    for split in ("train", "test"):
        (base / f"chestx_det10/{split}_data").mkdir(parents=True)
        (base / f"chestx_det10/{split}.json").write_text(json.dumps(DET10 if split == "train" else []))
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8), 90, np.uint8)).save(base / "chestx_det10/train_data" / name)
    (base / "ms_cxr").mkdir()
    (base / "ms_cxr/MS_CXR_Local_Alignment_v1.1.0.csv").write_text(MS_CXR_CSV)
    for pid, study, dicom in (("p10000001", "s1", "d1"), ("p10000002", "s2", "d2")):
        folder = base / "mimic-cxr-jpg/2.1.0/files/p10" / pid / study
        folder.mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 120, np.uint8)).save(folder / f"{dicom}.jpg")
    return base


def test_every_loader_is_registered_through_the_hook():
    for name, kind in (("rsna_pneumonia", RsnaPneumonia), ("siim_acr", SiimAcr), ("chestx_det10", ChestXDet10),
                       ("ms_cxr", MsCxr)):
        assert isinstance(get_benchmark(name), kind)


def test_rsna_positives_and_negatives_by_hand(root: Path):
    bench = RsnaPneumonia(root)
    positives = list(bench.samples())
    assert [s.id for s in positives] == ["rsna_pneumonia/train/p1/Pneumonia", "rsna_pneumonia/train/p3/Pneumonia"]
    assert positives[0].boxes.tolist() == [[1, 2, 4, 6], [5, 5, 7, 7]]
    assert positives[1].boxes.tolist() == [[0.5, 1, 3, 4]]
    assert positives[0].question == "Is there evidence of pneumonia in the image?" and positives[0].answer == "Yes"
    negatives = list(bench.negatives())
    assert [(s.id, s.answer, s.boxes.shape) for s in negatives] == [("rsna_pneumonia/train/p2/no Pneumonia", "No", (0, 4))]
    assert negatives[0].load_image().shape == (8, 8)


def expected_siim_mask() -> np.ndarray:
    mask = np.zeros(SIIM_SHAPE, bool)
    mask[2:5, 1] = True  # pixels 10-12
    mask[1:3, 4] = True  # pixels 33-34
    mask[5:8, 0] = True  # pixels 5-7
    mask[0, 1] = True  # pixel 8
    return mask


def test_siim_masks_boxes_and_negatives_by_hand(root: Path):
    bench = SiimAcr(root, mask_shape=SIIM_SHAPE)
    (positive,) = bench.samples()
    assert positive.id == "siim_acr/train/imgA/Pneumothorax"
    assert np.array_equal(positive.load_mask(), expected_siim_mask())
    assert positive.boxes.tolist() == [[1, 1, 5, 5], [0, 0, 2, 8]]
    assert positive.load_image().shape == SIIM_SHAPE
    assert positive.extra["image_path"].endswith("study/series/imgA.dcm")
    (negative,) = bench.negatives()
    assert negative.id == "siim_acr/train/imgB/no Pneumothorax" and negative.load_mask is None


def test_siim_mask_whose_shape_differs_from_its_image_is_refused(root: Path):
    (positive,) = SiimAcr(root, mask_shape=(6, 8)).samples()  # the DICOM is 8 x 6
    with pytest.raises(DataError, match=r"image is 8x6 \(H x W\) but its mask .* is 6x8"):
        positive.load_image()


def test_rle_overrunning_the_image_is_refused_by_line(root: Path):
    (root / "siim_acr/train-rle.csv").write_text("ImageId, EncodedPixels\nimgA, 40 5 1 4\n")
    with pytest.raises(DataError, match=r"line 2 \(ImageId imgA\): RLE run 1 ends at pixel 50, beyond the 8x6"):
        list(SiimAcr(root, mask_shape=SIIM_SHAPE).samples())


@pytest.mark.parametrize("text, words", [
    ("1 2 3", "even count"), ("1 x", "not an integer"), ("1 0", "lengths >= 1"), ("-3 2", "offsets must be >= 0"),
])
def test_bad_rle_strings(text, words):
    with pytest.raises(DataError, match=words):
        parse_rle(text, (4, 4), where="f.csv, line 3")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_rle_round_trip_and_box_match_an_independent_encoder(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 9, 2))
    mask = rng.random((height, width)) < rng.random()
    if not mask.any():
        mask[rng.integers(height), rng.integers(width)] = True
    # independent encoder: walk the pixels column by column, counting from each run's end
    flat, pairs, last, k = mask.T.ravel(), [], 0, 0
    while k < flat.size:
        if flat[k]:
            start = k
            while k < flat.size and flat[k]:
                k += 1
            pairs += [start - last, k - start]
            last = k
        else:
            k += 1
    runs = parse_rle(" ".join(map(str, pairs)), (height, width), where="case")
    assert np.array_equal(decode_rle(runs, (height, width)), mask)
    rows, cols = np.nonzero(mask)
    assert runs_box(runs, (height, width)) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_chestx_det10_groups_classes_and_draws_negatives(root: Path):
    bench = ChestXDet10(root)
    positives = {s.id: s for s in bench.samples(split="train")}
    assert sorted(positives) == ["chestx_det10/train/a.png/Effusion", "chestx_det10/train/a.png/Nodule"]
    assert positives["chestx_det10/train/a.png/Nodule"].boxes.tolist() == [[1, 1, 3, 3], [4, 1, 5, 2]]
    negatives = [s.id for s in bench.negatives(split="train")]
    assert len(negatives) == 8 + 10  # a.png lacks 8 classes, b.png all 10
    assert "chestx_det10/train/b.png/no Nodule" in negatives and "chestx_det10/train/a.png/no Nodule" not in negatives
    assert list(bench.samples(split="test")) == []


def test_ms_cxr_groups_phrases_by_category(root: Path):
    bench = MsCxr(root)
    positives = {s.id: s for s in bench.samples()}
    pneumonia = positives["ms_cxr/all/d1/Pneumonia"]
    assert pneumonia.boxes.tolist() == [[1, 1, 4, 3], [4, 4, 6, 6]]
    assert pneumonia.extra["phrases"] == ["left lower lobe pneumonia"]
    assert positives["ms_cxr/all/d2/Cardiomegaly"].boxes.tolist() == [[0, 0, 5, 5]]
    assert pneumonia.load_image().shape == (8, 8)
    assert [s.id for s in bench.negatives()] == ["ms_cxr/all/d2/no Pneumonia"]


@pytest.mark.parametrize("name, path, text, words", [
    ("rsna_pneumonia", "rsna_pneumonia/stage_2_train_labels.csv", "patientId,x,y,width,height,Target\np1,1,1,0,2,1\n",
     "line 2: box .* positive size"),
    ("rsna_pneumonia", "rsna_pneumonia/stage_2_train_labels.csv", "patientId,x,y,width,height,Target\np1,,,,,0\np1,1,1,2,2,1\n",
     "both Target 0 and 1"),
    ("rsna_pneumonia", "rsna_pneumonia/stage_2_train_labels.csv", "patientId,x,y,width\n", "lacks column 'height'"),
    ("chestx_det10", "chestx_det10/train.json", '[{"file_name": "a.png", "syms": ["Tumour"], "boxes": [[0,0,1,1]]}]',
     r"record \[0\]: unknown class 'Tumour'"),
    ("chestx_det10", "chestx_det10/train.json", '[{"file_name": "a.png", "syms": ["Mass"], "boxes": []}]', "equal length"),
    ("ms_cxr", "ms_cxr/MS_CXR_Local_Alignment_v1.1.0.csv",
     "dicom_id,category_name,label_text,path,x,y,w,h\nd1,Edema,edema,files/d1.jpg,1,1,w,2\n", "line 2: x, y, w, h must be numbers"),
    ("siim_acr", "siim_acr/train-rle.csv", "ImageId, EncodedPixels\nimgZ,-1\n", r"no DICOM imgZ\.dcm"),
])
def test_bad_annotations_are_refused_by_file_and_line(root, name, path, text, words):
    (root / path).write_text(text)
    bench = {"rsna_pneumonia": RsnaPneumonia, "chestx_det10": ChestXDet10, "ms_cxr": MsCxr, "siim_acr": SiimAcr}[name](root)
    with pytest.raises(DataError, match=words):
        list(bench.samples(split="train" if name == "chestx_det10" else None))


def test_data_root_comes_from_the_environment_and_is_never_guessed(root, monkeypatch):
    monkeypatch.delenv("CXR_ATTRIB_DATA", raising=False)
    with pytest.raises(DataError, match="set CXR_ATTRIB_DATA"):
        list(RsnaPneumonia().samples())
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(root))
    assert len(list(RsnaPneumonia().samples())) == 2
    with pytest.raises(DataError, match="image.*climbs out"):
        (root / "ms_cxr/MS_CXR_Local_Alignment_v1.1.0.csv").write_text(
            "dicom_id,category_name,label_text,path,x,y,w,h\nd1,Edema,edema,../../secret.jpg,1,1,2,2\n")
        list(MsCxr().samples())


def test_phantom_negatives_are_the_exact_counterfactuals():
    from cxr_attrib.filtering import box_mask

    bench = get_benchmark("phantom")
    positive = next(iter(bench.samples(split="direct")))
    negative = next(iter(bench.negatives(split="direct")))
    key = positive.extra["finding_key"]
    assert negative.id == positive.id.replace(f"/{key}/", f"/no {key}/")
    assert (negative.answer, negative.finding, negative.boxes.shape) == ("No", positive.finding, (0, 4))
    changed = positive.load_image() != negative.load_image()
    assert changed.any() and not (changed & ~box_mask(positive.boxes, changed.shape)).any()
