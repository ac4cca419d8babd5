"""Tests of cxr_attrib.imageio: every supported source and every refused one."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image, ImageFile

from cxr_attrib.errors import ImageLoadError
from cxr_attrib.imageio import DEFAULT_MAX_PIXELS, LoadedImage, load_image

# Pillow's 601 luma of pure red, green and blue: round(0.299 * 255) = 76,
# round(0.587 * 255) = 150, round(0.114 * 255) = 29.
RED, GREEN, BLUE = 76, 150, 29


# --------------------------------------------------------------------- fixtures


def _encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG container that claims ``width x height`` but holds no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"")
        + _png_chunk(b"IEND", b"")
    )


def _dicom_bytes(
    pixels: np.ndarray | None,
    *,
    rows: int | None = None,
    columns: int | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    **elements: Any,
) -> bytes:
    """An uncompressed DICOM file; ``pixels`` is (H, W), (F, H, W) or (H, W, 3) uint8 RGB."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "CR"
    ds.PhotometricInterpretation = photometric
    colour = photometric == "RGB"
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if colour else 16
    ds.BitsStored = 8 if colour else bits_stored
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if pixels is not None:
        if pixels.ndim == 3 and not colour:
            ds.NumberOfFrames = pixels.shape[0]
        rows, columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        dtype = np.uint8 if colour else np.dtype("<u2")
        ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
    ds.Rows, ds.Columns = rows, columns
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------- encoded files


def test_grey_png_from_path_is_unchanged(tmp_path: Path) -> None:
    pixels = np.array([[0, 1, 2], [127, 128, 255]], dtype=np.uint8)
    path = _write(tmp_path, "grey.png", _encode(Image.fromarray(pixels)))
    image = load_image(path)
    assert isinstance(image, LoadedImage)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image.pixels.dtype == np.uint8
    assert (image.source, image.format, image.original_mode, image.bits) == (
        str(path),
        "PNG",
        "L",
        8,
    )
    assert image.meta == {"scaling": "none"}
    assert load_image(str(path)).source == str(path)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_min_max_scaled(fmt: str) -> None:
    values = np.array([[1000, 2000, 3000], [4000, 5000, 5000]], dtype=np.uint16)
    image = load_image(_encode(Image.fromarray(values), fmt))
    # (x - 1000) / 4000 * 255 = 0, 63.75, 127.5, 191.25, 255 -> half up.
    np.testing.assert_array_equal(image.pixels, [[0, 64, 128], [191, 255, 255]])
    assert (image.source, image.format, image.original_mode, image.bits) == (
        "<bytes>",
        fmt,
        "I;16",
        16,
    )
    assert image.meta == {"scaling": "min-max", "data_min": 1000.0, "data_max": 5000.0}


def test_constant_16_bit_becomes_black() -> None:
    image = load_image(_encode(Image.fromarray(np.full((3, 4), 4321, dtype=np.uint16))))
    np.testing.assert_array_equal(image.pixels, np.zeros((3, 4), np.uint8))


def test_jpeg_grey_blocks_decode_exactly() -> None:
    # Flat 8x8 blocks at quality 100 survive JPEG without loss.
    pixels = np.zeros((16, 16), dtype=np.uint8)
    pixels[:, :8], pixels[:, 8:] = 50, 200
    image = load_image(_encode(Image.fromarray(pixels), "JPEG", quality=100))
    assert image.format == "JPEG"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_rgb_png_becomes_601_luma() -> None:
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[0, 0, 0], [255, 255, 255], [10, 20, 30]]],
        dtype=np.uint8,
    )
    image = load_image(_encode(Image.fromarray(rgb)))
    # 0.299 * 10 + 0.587 * 20 + 0.114 * 30 = 18.15 -> 18.
    np.testing.assert_array_equal(image.pixels, [[RED, GREEN, BLUE], [0, 255, 18]])
    assert image.original_mode == "RGB"


def test_rgba_png_ignores_alpha() -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 255, 0, 128], [0, 0, 255, 255]]], dtype=np.uint8)
    image = load_image(_encode(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(image.pixels, [[RED, GREEN, BLUE]])
    assert image.original_mode == "RGBA"


def test_la_png_keeps_the_grey_channel() -> None:
    la = np.array([[[10, 0], [200, 255]]], dtype=np.uint8)
    image = load_image(_encode(Image.fromarray(la, "LA")))
    np.testing.assert_array_equal(image.pixels, [[10, 200]])
    assert image.original_mode == "LA"


def test_palette_png_maps_through_the_palette() -> None:
    palette = Image.new("P", (4, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    palette.putdata([3, 2, 1, 0])
    image = load_image(_encode(palette))
    np.testing.assert_array_equal(image.pixels, [[18, BLUE, GREEN, RED]])
    assert image.original_mode == "P"


def test_in_memory_pil_images_are_converted_and_left_alone() -> None:
    bilevel = Image.fromarray(np.array([[True, False], [False, True]]))
    image = load_image(bilevel)
    np.testing.assert_array_equal(image.pixels, [[255, 0], [0, 255]])
    assert (image.source, image.format, image.original_mode, image.bits) == (
        "<PIL.Image>",
        "PIL.Image",
        "1",
        1,
    )
    assert bilevel.mode == "1"
    floats = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.2]], dtype=np.float32))
    np.testing.assert_array_equal(load_image(floats).pixels, [[0, 128], [255, 51]])


def test_multi_frame_tiff_reads_the_first_frame() -> None:
    frames = [Image.fromarray(np.full((2, 2), value, np.uint8)) for value in (7, 99)]
    data = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    image = load_image(data)
    np.testing.assert_array_equal(image.pixels, np.full((2, 2), 7))
    assert image.meta["frames"] == 2 and image.meta["frame"] == 0


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)))
def test_uint8_round_trips_through_png_bytes(pixels: np.ndarray) -> None:
    np.testing.assert_array_equal(load_image(_encode(Image.fromarray(pixels))).pixels, pixels)


# -------------------------------------------------------------------- arrays


def test_uint8_array_is_copied_and_read_only() -> None:
    source = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    image = load_image(source)
    np.testing.assert_array_equal(image.pixels, source)
    assert (image.source, image.format, image.original_mode, image.bits) == (
        "<ndarray>",
        "ndarray",
        "uint8",
        8,
    )
    with pytest.raises(ValueError):
        image.pixels[0, 0] = 9
    source[0, 0] = 100
    assert image.pixels[0, 0] == 1 and source.flags.writeable


def test_channel_arrays() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(load_image(rgb).pixels, expected)
    alpha = rng.integers(0, 256, (9, 7, 1), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(np.concatenate([rgb, alpha], 2)).pixels, expected)
    np.testing.assert_array_equal(load_image(alpha).pixels, alpha[..., 0])
    assert load_image(rgb).original_mode == "uint8 (9, 7, 3)"


def test_float_arrays() -> None:
    unit = load_image(np.array([[0.0, 0.5], [1.0, 0.2]]))
    np.testing.assert_array_equal(unit.pixels, [[0, 128], [255, 51]])
    assert (unit.bits, unit.meta) == (64, {"scaling": "unit"})
    wide = load_image(np.array([[-1.0, 0.0, 1.0, 0.5]], dtype=np.float32))
    # (x + 1) / 2 * 255 = 0, 127.5, 255, 191.25.
    np.testing.assert_array_equal(wide.pixels, [[0, 128, 255, 191]])
    assert wide.meta == {"scaling": "min-max", "data_min": -1.0, "data_max": 1.0}
    np.testing.assert_array_equal(load_image(np.full((2, 2), 7.5)).pixels, np.zeros((2, 2)))


def test_bool_and_integer_arrays() -> None:
    mask = load_image(np.array([[True, False]]))
    np.testing.assert_array_equal(mask.pixels, [[255, 0]])
    assert mask.bits == 1
    signed = load_image(np.array([[-100, 0, 100]], dtype=np.int32))
    np.testing.assert_array_equal(signed.pixels, [[0, 128, 255]])
    deep_rgb = np.zeros((1, 2, 3), dtype=np.uint16)
    deep_rgb[0, 1] = 4000  # grey, so its luma is 4000 up to rounding
    np.testing.assert_array_equal(load_image(deep_rgb).pixels, [[0, 255]])


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((0, 0), np.uint8), "empty"),
        (np.zeros((4, 0, 3), np.uint8), "empty"),
        (np.zeros(5, np.uint8), "shape (5,)"),
        (np.zeros((2, 2, 2), np.uint8), "shape (2, 2, 2)"),
        (np.zeros((1, 2, 2, 3), np.uint8), "shape (1, 2, 2, 3)"),
        (np.array([[1.0, np.nan, np.nan]]), "2 NaN"),
        (np.array([[1.0, np.inf]]), "1 infinite"),
        (np.array([["a"]]), "dtype <U1"),
        (np.zeros((2, 2), np.complex64), "dtype complex64"),
    ],
)
def test_bad_arrays_are_refused(array: np.ndarray, problem: str) -> None:
    with pytest.raises(ImageLoadError, match="^<ndarray>: ") as caught:
        load_image(array)
    assert problem in str(caught.value)


# --------------------------------------------------------------------- DICOM

# Stored 0, 50, 100, 150, 200 -> rescale (x 2 - 100) -> -100, 0, 100, 200, 300.
# Window C=100, W=201 (LINEAR): fraction ((v - 99.5) / 200 + 0.5) clipped to [0, 1]
# -> 0, 0.0025, 0.5025, 1, 1 -> x 255, half up -> 0, 1, 128, 255, 255.
_STORED = np.array([[0, 50, 100, 150, 200]], dtype=np.uint16)
_RESCALE = {"RescaleSlope": 2, "RescaleIntercept": -100}
_WINDOWED = [[0, 1, 128, 255, 255]]


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    data = _dicom_bytes(_STORED, WindowCenter=100, WindowWidth=201, **_RESCALE)
    path = _write(tmp_path, "scan.dcm", data)
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, _WINDOWED)
    assert (image.source, image.format, image.original_mode, image.bits) == (
        str(path),
        "DICOM",
        "MONOCHROME2",
        12,
    )
    assert image.meta["scaling"] == "window"
    assert (image.meta["window_center"], image.meta["window_width"]) == (100.0, 201.0)
    assert image.meta["inverted"] is False
    json.dumps(image.meta)


def test_dicom_uses_the_first_window_and_inverts_monochrome1() -> None:
    data = _dicom_bytes(
        _STORED,
        photometric="MONOCHROME1",
        WindowCenter=[100, 2000],
        WindowWidth=[201, 4000],
        **_RESCALE,
    )
    image = load_image(data)
    assert image.source == "<bytes>"
    np.testing.assert_array_equal(image.pixels, 255 - np.array(_WINDOWED))
    assert image.meta["window_center"] == 100.0 and image.meta["inverted"] is True


def test_dicom_without_window_is_min_max_of_rescaled_values() -> None:
    image = load_image(_dicom_bytes(_STORED, photometric="MONOCHROME1", **_RESCALE))
    # -100..300 -> 0, 63.75, 127.5, 191.25, 255 -> 0, 64, 128, 191, 255, then inverted.
    np.testing.assert_array_equal(image.pixels, [[255, 191, 127, 64, 0]])
    assert image.meta["scaling"] == "min-max"
    assert (image.meta["data_min"], image.meta["data_max"]) == (-100.0, 300.0)


def test_dicom_invalid_window_falls_back_to_min_max() -> None:
    image = load_image(_dicom_bytes(_STORED, WindowCenter=100, WindowWidth=0))
    np.testing.assert_array_equal(image.pixels, [[0, 64, 128, 191, 255]])
    assert "Window Width" in str(image.meta["voi_ignored"])


def test_dicom_voi_lut_sequence() -> None:
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new(0x00283002, "US", [3, 10, 16])  # 3 entries, first maps 10, 16 bits
    lut.add_new(0x00283006, "US", [0, 32768, 65535])
    stored = np.array([[9, 10, 11, 12]], dtype=np.uint16)
    image = load_image(_dicom_bytes(stored, VOILUTSequence=[lut], WindowCenter=1, WindowWidth=9))
    # 9 and 10 -> entry 0; 11 -> 32768 / 65535 * 255 = 127.5 -> 128; 12 -> 255.
    np.testing.assert_array_equal(image.pixels, [[0, 0, 128, 255]])
    assert image.meta["scaling"] == "voi-lut"


def test_dicom_multi_frame_reads_the_first_frame() -> None:
    frames = np.stack([[[0, 10], [20, 40]], [[40, 0], [0, 0]]]).astype(np.uint16)
    image = load_image(_dicom_bytes(frames))
    np.testing.assert_array_equal(image.pixels, [[0, 64], [128, 255]])
    assert (image.meta["frames"], image.meta["frame"]) == (2, 0)


def test_dicom_rgb_becomes_luma() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    image = load_image(_dicom_bytes(rgb, photometric="RGB"))
    np.testing.assert_array_equal(image.pixels, [[RED, GREEN, BLUE]])
    assert (image.original_mode, image.bits) == ("RGB", 8)


def test_chest_radiograph_from_pydicom_data() -> None:
    data_store = pytest.importorskip("data_store")
    pydicom = pytest.importorskip("pydicom")
    path = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    header = pydicom.dcmread(path, stop_before_pixels=True)
    image = load_image(path)
    assert image.pixels.shape == (header.Rows, header.Columns) == (1955, 1841)
    assert image.original_mode == "MONOCHROME1" and image.meta["inverted"] is True
    height, width = image.pixels.shape
    rows = slice(int(0.25 * height), int(0.45 * height))  # mid-height, above the heart

    def mean(left: float, right: float) -> float:
        return float(image.pixels[rows, int(left * width) : int(right * width)].mean())

    mediastinum = mean(0.46, 0.54)
    lungs = (mean(0.15, 0.28), mean(0.65, 0.80))
    assert all(mediastinum > lung + 40 for lung in lungs), (mediastinum, lungs)


# -------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match="no such file") as caught:
        load_image(path)
    assert str(caught.value).startswith(str(path))


def test_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.png", b"")
    with pytest.raises(ImageLoadError, match=r"empty \(0 bytes\)") as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ImageLoadError, match=r"^<bytes>: empty"):
        load_image(b"")


@pytest.mark.parametrize("name", ["notes.txt", "notes.png"])
def test_text_file(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, b"patient list\nnothing to see here\n")
    with pytest.raises(ImageLoadError, match="not a recognised image") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_text_file_named_dcm(tmp_path: Path) -> None:
    path = _write(tmp_path, "notes.dcm", b"patient list\nnothing to see here\n" * 5)
    with pytest.raises(ImageLoadError, match="not a DICOM image") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    data = _encode(Image.fromarray(noise))
    path = _write(tmp_path, "cut.png", data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt") as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: cannot decode the PNG image data")


def test_corrupt_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    broken = data.replace(b"\xff\xdb", b"\xff\xe5")  # quantisation tables -> APP5
    path = _write(tmp_path, "broken.jpg", broken)
    with pytest.raises(ImageLoadError, match="truncated or corrupt") as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: cannot decode the JPEG image data")


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = _write(tmp_path, "report.dcm", _dicom_bytes(None, rows=4, columns=4))
    with pytest.raises(ImageLoadError, match="contains no pixel data") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_dicom_size_is_checked_from_the_header() -> None:
    with pytest.raises(ImageLoadError, match=r"50000 x 40000 .* = 2,000,000,000 pixels"):
        load_image(_dicom_bytes(None, rows=40000, columns=50000))


def test_pydicom_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dicom_bytes(_STORED)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)
    with pytest.raises(ImageLoadError, match=r'pip install "cxr-attrib\[dicom\]"'):
        load_image(data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixel data fail the test."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.usefixtures("no_decoding")
def test_50000_square_png_header_fails_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path, "bomb.png", _png_header_only(50000, 50000))
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused by Pillow's decompression-bomb guard")
    assert "2500000000 pixels" in message and "max_pixels" in message


@pytest.mark.usefixtures("no_decoding")
def test_our_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    # 144M pixels: below Pillow's hard limit, above our default of 100M.
    path = _write(tmp_path, "big.png", _png_header_only(12000, 12000))
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert str(caught.value) == (
        f"{path}: the image claims 12000 x 12000 (width x height) = 144,000,000 pixels, "
        "more than the limit of 100,000,000. If you trust this file, pass "
        "max_pixels=144000000 to load_image or set the environment variable "
        "CXR_ATTRIB_MAX_PIXELS=144000000"
    )
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_limit_from_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.zeros((10, 20), dtype=np.uint8)
    png = _encode(Image.fromarray(pixels))
    with pytest.raises(ImageLoadError, match=r"20 x 10 .* limit of 199\b"):
        load_image(png, max_pixels=199)
    assert load_image(png, max_pixels=200).pixels.shape == (10, 20)
    monkeypatch.setenv("CXR_ATTRIB_MAX_PIXELS", "150")
    with pytest.raises(ImageLoadError, match=r"^<ndarray>: .* limit of 150\b"):
        load_image(pixels)
    assert load_image(pixels, max_pixels=200).pixels.shape == (10, 20)
    monkeypatch.setenv("CXR_ATTRIB_MAX_PIXELS", "lots")
    with pytest.raises(ImageLoadError, match="CXR_ATTRIB_MAX_PIXELS .* got 'lots'"):
        load_image(pixels)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_max_pixels_argument(bad: Any) -> None:
    with pytest.raises(ImageLoadError, match="max_pixels must be a positive int"):
        load_image(np.zeros((2, 2), np.uint8), max_pixels=bad)


def test_unsupported_source_type() -> None:
    with pytest.raises(ImageLoadError, match="cannot load an image from a int"):
        load_image(42)  # type: ignore[arg-type]


def test_loaded_image_checks_its_pixels() -> None:
    with pytest.raises(ImageLoadError, match=r"must be a \(H, W\) uint8 array"):
        LoadedImage(np.zeros((2, 2), np.float32), "<ndarray>", "ndarray", "float32", 32)
    own = np.zeros((2, 2), np.uint8)
    made = LoadedImage(own, "<ndarray>", "ndarray", "uint8", 8)
    assert own.flags.writeable and not made.pixels.flags.writeable
