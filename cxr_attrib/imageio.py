"""Read one image from a path, bytes, a PIL image or an array, as 8-bit grey.

Every source becomes a read-only ``(H, W)`` uint8 array, 0 = black:

- 8-bit data is kept as it is; colour (RGB, RGBA, LA, palette, ...) becomes
  ITU-R 601 luma exactly as Pillow's ``"L"`` mode computes it, alpha ignored;
- integer data deeper than 8 bits (16-bit PNG/TIFF, ``int32`` arrays, ...) is
  min-max scaled from its actual range to 0..255 (a constant image becomes 0, with
  a :class:`ConstantImageWarning` on stderr and ``meta["warning"]``; a range that
  overflows to infinity is an error);
- float data in ``[0, 1]`` is multiplied by 255; float data outside ``[0, 1]`` is
  min-max scaled; bool data becomes 0 / 255;
- DICOM goes through the Modality LUT (rescale), the first VOI LUT or window, and
  is inverted when MONOCHROME1, so that bone and mediastinum are bright.

Rounding is half up everywhere. The pixel count declared by a file's header is
checked against a limit before anything is decoded. Nothing is ever written.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from cxr_attrib.errors import ImageLoadError, UnreadableFileError
from cxr_attrib.safeio import open_regular
from cxr_attrib.typing import GreyImage

__all__ = ["DEFAULT_MAX_PIXELS", "ConstantImageWarning", "LoadedImage", "load_image"]

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest accepted image (H * W pixels) when neither ``max_pixels`` nor the
``CXR_ATTRIB_MAX_PIXELS`` environment variable says otherwise."""

_MAX_PIXELS_ENV = "CXR_ATTRIB_MAX_PIXELS"
_DICOM_SUFFIXES = (".dcm", ".dicom")
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_RESCALINGS = ("min-max", "window", "voi-lut")



class ConstantImageWarning(UserWarning):
    """An image whose pixels are all equal after scaling: the model sees no content."""


MetaValue: TypeAlias = str | int | float | bool | None
ImageSource: TypeAlias = str | os.PathLike[str] | bytes | Image.Image | npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """One image as 8-bit grey, with where it came from.

    Args:
        pixels (GreyImage): ``(H, W)`` uint8 grey image, 0 = black; stored as a
            read-only copy.
        source (str): the file path as given, or ``"<bytes>"``, ``"<PIL.Image>"``,
            ``"<ndarray>"``.
        format (str): ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ... as Pillow names it,
            ``"DICOM"``, ``"ndarray"``, or ``"PIL.Image"`` for an in-memory image.
        original_mode (str): the source's pixel layout: the Pillow mode (``"I;16"``,
            ``"RGBA"``), the DICOM photometric interpretation, or the array dtype
            (with ``(H, W, C)`` when it has channels).
        bits (int): bits per sample of the source data (DICOM: Bits Stored).
        meta (dict[str, str | int | float | bool | None]): JSON-safe details:
            ``scaling`` (``"none"``, ``"unit"``, ``"min-max"``, ``"window"``,
            ``"voi-lut"``), the data range, DICOM window, frames, ...
    """

    pixels: GreyImage
    source: str
    format: str
    original_mode: str
    bits: int
    meta: dict[str, MetaValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ImageLoadError(
                f"{self.source}: LoadedImage.pixels must be a (H, W) uint8 array, got "
                f"{type(pixels).__name__} {getattr(pixels, 'dtype', '')} "
                f"of shape {getattr(pixels, 'shape', '?')}"
            )
        own = np.array(pixels, order="C", copy=True)
        own.setflags(write=False)
        object.__setattr__(self, "pixels", own)


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> LoadedImage:
    """Load a radiograph (or any image) as a read-only ``(H, W)`` uint8 grey image.

    Files are recognised by content: DICOM by the ``DICM`` marker at byte 128 (or a
    ``.dcm`` / ``.dicom`` suffix), everything else by Pillow (PNG, JPEG, TIFF, ...;
    the first frame of multi-frame files). Reading DICOM needs the ``dicom`` extra.

    Args:
        source (str | os.PathLike | bytes | PIL.Image.Image | numpy.ndarray): a file
            path; the bytes of an encoded file; an image; or an array of shape
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA), of
            bool, integer or float dtype. Inputs are never modified.
        max_pixels (int | None): largest accepted ``H * W``, checked against the
            header before decoding. Default: None, meaning the environment variable
            ``CXR_ATTRIB_MAX_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``
            (100,000,000).

    Returns:
        LoadedImage: ``pixels`` of shape ``(H, W)``, dtype uint8, plus provenance.

    Raises:
        ImageLoadError: the source is missing, empty, not an image, truncated,
            corrupt, too large, or an array of the wrong shape, dtype or with
            NaN / infinite values. The message names the source and the fix.

    Examples::

        >>> import numpy as np
        >>> image = load_image(np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16))
        >>> image.pixels  # min-max: (x - 1000) / 4000 * 255, half up
        array([[  0,  64],
               [128, 255]], dtype=uint8)
        >>> image.format, image.bits, image.meta["scaling"]
        ('ndarray', 16, 'min-max')
    """
    limit = _resolve_limit(max_pixels)
    if isinstance(source, np.ndarray):
        loaded = _load_array(source, limit)
    elif isinstance(source, Image.Image):
        loaded = _load_pil(source, "<PIL.Image>", source.format or "PIL.Image", limit)
    elif isinstance(source, bytes):
        loaded = _load_bytes(source, limit)
    elif isinstance(source, (str, os.PathLike)):
        loaded = _load_path(Path(source), os.fspath(source), limit)
    else:
        raise ImageLoadError(
            f"cannot load an image from a {type(source).__name__}; expected a file path "
            "(str or os.PathLike), bytes, a PIL.Image.Image or a numpy.ndarray"
        )
    _flag_constant(loaded)
    return loaded


def _flag_constant(loaded: LoadedImage) -> None:
    """Record (``meta["warning"]``) and warn (stderr) when rescaling left one grey value."""
    pixels, scaling = loaded.pixels, loaded.meta.get("scaling")
    if scaling not in _RESCALINGS or pixels.min() != pixels.max():
        return
    message = (
        f"{loaded.source}: the image is constant after {scaling} scaling (every pixel is "
        f"{int(pixels.flat[0])}); the model sees no content, so any answer about it is meaningless. "
        "Check the file or its DICOM rescale / window"
    )
    loaded.meta["warning"] = message
    warnings.warn(message, ConstantImageWarning, stacklevel=3)


def _resolve_limit(max_pixels: int | None) -> int:
    """The pixel limit: the argument, else the environment variable, else the default."""
    if max_pixels is None:
        raw = os.environ.get(_MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            max_pixels = 0
        if max_pixels <= 0:
            raise ImageLoadError(
                f"environment variable {_MAX_PIXELS_ENV} must be a positive whole number "
                f"of pixels, got {raw!r}; fix it or unset it to use the default "
                f"{DEFAULT_MAX_PIXELS:,}"
            )
        return max_pixels
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ImageLoadError(
            f"max_pixels must be a positive int (pixels) or None, got {max_pixels!r}"
        )
    return max_pixels


def _check_size(name: str, width: int, height: int, limit: int) -> None:
    """Refuse an image whose declared ``width * height`` exceeds ``limit``."""
    if width * height > limit:
        raise ImageLoadError(
            f"{name}: the image claims {width} x {height} (width x height) = "
            f"{width * height:,} pixels, more than the limit of {limit:,}. If you trust "
            f"this file, pass max_pixels={width * height} to load_image or set the "
            f"environment variable {_MAX_PIXELS_ENV}={width * height}"
        )


def _load_path(path: Path, name: str, limit: int) -> LoadedImage:
    """Load a file (``name``: the path as given), after checking that it is one."""
    if not path.exists():
        raise ImageLoadError(
            f"{name}: no such file (looked in {path.resolve().parent}); check the path"
        )
    if path.is_dir():
        raise ImageLoadError(f"{name}: is a folder; expected an image file inside it")
    try:
        with open_regular(path, what="image") as handle:
            return _load_handle(handle, path, name, limit)
    except UnreadableFileError as exc:
        raise ImageLoadError(str(exc)) from None


def _load_handle(handle: BinaryIO, path: Path, name: str, limit: int) -> LoadedImage:
    """Decode an open regular file (DICOM by its marker or suffix, else Pillow)."""
    empty = os.fstat(handle.fileno()).st_size == 0
    head = handle.read(132)
    if empty:
        raise ImageLoadError(
            f"{name}: the file is empty (0 bytes); re-export or re-copy the image"
        )
    handle.seek(0)
    if _is_dicom(head) or path.suffix.lower() in _DICOM_SUFFIXES:
        return _load_dicom(handle, name, limit)
    return _load_encoded(handle, name, limit)


def _load_bytes(data: bytes, limit: int) -> LoadedImage:
    """Load the bytes of an encoded file (DICOM or anything Pillow reads)."""
    if not data:
        raise ImageLoadError("<bytes>: empty (0 bytes); expected the bytes of an image file")
    if _is_dicom(data[:132]):
        return _load_dicom(io.BytesIO(data), "<bytes>", limit)
    return _load_encoded(io.BytesIO(data), "<bytes>", limit)


def _is_dicom(head: bytes) -> bool:
    """Whether a file starts with the DICOM preamble and ``DICM`` marker."""
    return head[128:132] == b"DICM"


def _load_encoded(stream: BinaryIO, name: str, limit: int) -> LoadedImage:
    """Identify and decode a Pillow-readable stream, checking its size first."""
    try:
        with warnings.catch_warnings():
            # Our own limit, checked next, decides below Pillow's hard limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            f"{name}: refused by Pillow's decompression-bomb guard: {exc} If you trust "
            f"this file, raise PIL.Image.MAX_IMAGE_PIXELS and pass max_pixels to "
            f"load_image (or set {_MAX_PIXELS_ENV})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"{name}: not a recognised image; expected PNG, JPEG, TIFF (or another "
            "format Pillow reads) or DICOM. Check that the file really is an image"
        ) from exc
    except (OSError, SyntaxError, EOFError) as exc:  # a header cut short or corrupt
        raise ImageLoadError(
            f"{name}: the image header is truncated or corrupt ({exc}); re-export or re-download the file"
        ) from exc
    with image:
        return _load_pil(image, name, image.format or "unknown", limit)


def _load_pil(image: Image.Image, name: str, fmt: str, limit: int) -> LoadedImage:
    """Check the size, decode (Pillow is lazy) and convert a PIL image to grey."""
    if image.width < 1 or image.height < 1:
        raise ImageLoadError(
            f"{name}: the image is {image.width} x {image.height} pixels (width x height); "
            "expected at least 1 x 1"
        )
    _check_size(name, image.width, image.height, limit)
    try:
        image.load()
    except Exception as exc:  # decoders raise OSError, SyntaxError, EOFError, ...
        raise ImageLoadError(
            f"{name}: cannot decode the {fmt} image data ({type(exc).__name__}: {exc}); "
            "the file is truncated or corrupt. Re-export or re-copy it"
        ) from exc
    mode = image.mode
    if mode == "F" or mode.startswith("I"):  # 16- and 32-bit integer, 32-bit float
        pixels, meta = _values_to_grey(np.asarray(image), name)
    else:
        try:
            grey = image if mode == "L" else image.convert("L")
        except ValueError as exc:
            raise ImageLoadError(
                f"{name}: cannot convert Pillow mode {mode!r} to grey ({exc}); save the "
                "image as grey, RGB or RGBA"
            ) from exc
        pixels, meta = np.asarray(grey), {"scaling": "none"}
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        meta.update(frames=frames, frame=0)
    bits = 1 if mode == "1" else 16 if mode.startswith("I;16") else 32 if mode in ("I", "F") else 8
    return LoadedImage(pixels, name, fmt, mode, bits, meta)


def _load_array(array: npt.NDArray[Any], limit: int) -> LoadedImage:
    """Convert a numpy array (never modified) to grey."""
    name = "<ndarray>"
    if array.ndim in (2, 3):
        _check_size(name, array.shape[1], array.shape[0], limit)
    pixels, meta = _values_to_grey(array, name)
    mode = array.dtype.name if array.ndim == 2 else f"{array.dtype.name} {array.shape}"
    bits = 1 if array.dtype == np.bool_ else array.dtype.itemsize * 8
    return LoadedImage(pixels, name, "ndarray", mode, bits, meta)


def _values_to_grey(
    array: npt.NDArray[Any], name: str
) -> tuple[GreyImage, dict[str, MetaValue]]:
    """Apply the module's grey rules to a ``(H, W)`` or ``(H, W, C)`` array.

    Returns:
        tuple[GreyImage, dict]: the ``(H, W)`` uint8 image and ``meta`` entries.
    """
    _validate_array(array, name)
    values = array.astype(np.uint8) * np.uint8(255) if array.dtype == np.bool_ else array
    if values.ndim == 3:
        values = values[..., 0] if values.shape[2] == 1 else _luma(values[..., :3])
    if values.dtype == np.uint8:
        return values, {"scaling": "none"}
    low, high = float(values.min()), float(values.max())
    if array.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return _round_half_up(values.astype(np.float64) * 255.0), {"scaling": "unit"}
    return _scale(values, low, high, name), {"scaling": "min-max", "data_min": low, "data_max": high}


def _validate_array(array: npt.NDArray[Any], name: str) -> None:
    """Reject arrays of the wrong shape, an unsupported dtype or non-finite values."""
    shape = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise ImageLoadError(
            f"{name}: expected an array of shape (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4), got shape {shape}; pass one image, channels last"
        )
    if array.size == 0:
        raise ImageLoadError(
            f"{name}: the array is empty (shape {shape}); expected at least one pixel"
        )
    if array.dtype.kind not in "buif":
        raise ImageLoadError(
            f"{name}: unsupported dtype {array.dtype}; expected bool, integer or float "
            "pixel values"
        )
    if array.dtype.kind == "f":
        for label, count in (
            ("NaN", int(np.isnan(array).sum())),
            ("infinite", int(np.isinf(array).sum())),
        ):
            if count:
                raise ImageLoadError(
                    f"{name}: the array contains {count} {label} value(s); expected "
                    "finite pixel values. Replace them first, e.g. with np.nan_to_num"
                )


def _luma(rgb: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """ITU-R 601 luma of ``(H, W, 3)``: bit-exact with Pillow for uint8, else float64."""
    if rgb.dtype == np.uint8:
        wide = rgb.astype(np.uint32)
        total = wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 0x8000
        return (total >> 16).astype(np.uint8)
    return rgb.astype(np.float64) @ _LUMA_WEIGHTS


def _scale(values: npt.NDArray[Any], low: float, high: float, name: str = "<data>") -> GreyImage:
    """Map ``[low, high]`` linearly onto ``[0, 255]``; an empty range gives 0.

    Raises:
        ImageLoadError: the range (or its width) is not finite in float64.
    """
    if not math.isfinite(high - low):
        raise ImageLoadError(
            f"{name}: the pixel values span [{low:g}, {high:g}], a range that overflows to infinity in float64; "
            "the data (or its DICOM RescaleSlope / RescaleIntercept) is corrupt"
        )
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return _round_half_up((values.astype(np.float64) - low) * 255.0 / (high - low))


def _round_half_up(values: npt.NDArray[np.float64]) -> GreyImage:
    """Round to the nearest integer (halves up) and clip into uint8."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _load_dicom(stream: BinaryIO, name: str, limit: int) -> LoadedImage:
    """Read the first frame of a DICOM file as display-ready grey."""
    pydicom, pixels_module = _import_pydicom(name)
    force = not _is_dicom(stream.read(132))  # a .dcm file without the preamble
    header = _read_dicom(pydicom, stream, name, force=force, stop_before_pixels=True)
    rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    if force and not (rows and columns):
        raise ImageLoadError(
            f"{name}: not a DICOM image: there is no 'DICM' marker at byte 128 and no "
            "Rows / Columns; check that the file is a DICOM image"
        )
    if not (rows and columns):
        raise _no_pixel_data(name)
    _check_size(name, columns, rows, limit)
    dataset = _read_dicom(pydicom, stream, name, force=force)
    if not any(key in dataset for key in _PIXEL_DATA_KEYWORDS):
        raise _no_pixel_data(name)
    try:
        array = pixels_module.pixel_array(dataset, index=0)
    except Exception as exc:  # decoder plugins raise many types
        raise ImageLoadError(
            f"{name}: pydicom cannot decode the pixel data ({type(exc).__name__}: {exc}). "
            "If the transfer syntax is compressed, install a decoder plugin, e.g. "
            "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        ) from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    meta: dict[str, MetaValue] = {
        "photometric_interpretation": photometric,
        "modality": str(dataset.get("Modality", "")),
        "frames": int(dataset.get("NumberOfFrames") or 1),
        "frame": 0,
    }
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _dicom_monochrome(array, dataset, pixels_module, meta, name)
    else:
        if photometric == "PALETTE COLOR":
            array = pixels_module.apply_color_lut(array, dataset)
        grey, scaling = _values_to_grey(array, name)
        meta.update(scaling)
    bits = int(dataset.get("BitsStored") or array.dtype.itemsize * 8)
    return LoadedImage(grey, name, "DICOM", photometric, bits, meta)


def _no_pixel_data(name: str) -> ImageLoadError:
    """The error for a DICOM object that holds no image."""
    return ImageLoadError(
        f"{name}: the DICOM file contains no pixel data (it may be a report or "
        "another non-image object); pass a DICOM image"
    )


def _import_pydicom(name: str) -> tuple[Any, Any]:
    """Import pydicom (an optional dependency) and its ``pixels`` module, or explain."""
    try:
        import pydicom
        import pydicom.pixels
    except ImportError as exc:
        raise ImageLoadError(
            f"{name}: reading DICOM files needs pydicom >= 3.0, which is not installed "
            f"({exc}). Install it with: pip install \"cxr-attrib[dicom]\""
        ) from exc
    return pydicom, pydicom.pixels


def _read_dicom(pydicom: Any, stream: BinaryIO, name: str, **options: Any) -> Any:
    """``pydicom.dcmread`` from the start of ``stream``, with errors made readable."""
    stream.seek(0)
    try:
        return pydicom.dcmread(stream, **options)
    except Exception as exc:  # pydicom raises many types on malformed files
        raise ImageLoadError(
            f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc}); check that "
            "it is a complete DICOM image"
        ) from exc


def _dicom_monochrome(
    array: npt.NDArray[Any], dataset: Any, pixels_module: Any, meta: dict[str, MetaValue], name: str
) -> GreyImage:
    """Modality LUT, then VOI LUT / first window (else min-max), then MONOCHROME1 flip.

    Updates ``meta`` with the VOI step that was applied.
    """
    values = pixels_module.apply_modality_lut(array, dataset)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageLoadError(
            f"{name}: the Modality LUT (RescaleSlope "
            f"{dataset.get('RescaleSlope', 1)!r}, RescaleIntercept {dataset.get('RescaleIntercept', 0)!r}) "
            "sends pixel values to infinity or NaN; the DICOM header is corrupt"
        )
    voi_item = (dataset.get("VOILUTSequence") or [None])[0]
    grey = None
    try:
        if voi_item is not None and "LUTDescriptor" in voi_item and "LUTData" in voi_item:
            if values.dtype.kind == "f":  # LUT inputs are whole numbers
                values = np.rint(values).astype(np.int64)
            output = pixels_module.apply_voi_lut(values, dataset, index=0)
            meta["scaling"] = "voi-lut"
            grey = _scale(output, 0.0, float(2 ** int(voi_item.LUTDescriptor[2]) - 1))
        elif "WindowCenter" in dataset and "WindowWidth" in dataset:
            output = pixels_module.apply_voi_lut(values, dataset, index=0, prefer_lut=False)
            # A window sends everything below / above it to the ends of its output range.
            low, high = pixels_module.apply_voi_lut(
                np.array([-np.inf, np.inf]), dataset, index=0, prefer_lut=False
            )
            meta.update(
                scaling="window",
                window_center=_first_value(dataset, "WindowCenter"),
                window_width=_first_value(dataset, "WindowWidth"),
                voi_lut_function=str(dataset.get("VOILUTFunction", "LINEAR")),
            )
            grey = _scale(output, float(low), float(high))
    except (ValueError, NotImplementedError) as exc:  # e.g. a window width of 0
        meta["voi_ignored"] = f"{type(exc).__name__}: {exc}"
        grey = None
    if grey is None:
        low, high = float(values.min()), float(values.max())
        meta.update(scaling="min-max", data_min=low, data_max=high)
        grey = _scale(values, low, high, name)
    inverted = meta["photometric_interpretation"] == "MONOCHROME1"
    meta["inverted"] = inverted
    return np.subtract(255, grey, dtype=np.uint8) if inverted else grey


def _first_value(dataset: Any, keyword: str) -> float:
    """The first value of a possibly multi-valued DICOM number (e.g. Window Center)."""
    element = dataset[keyword]
    return float(element.value[0] if element.VM > 1 else element.value)
