"""Tiny data files in the public datasets' own formats, for loader tests and fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_dicom"]


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """Write a minimal 16-bit MONOCHROME2 DICOM file without a window.

    Args:
        path (Path): the file to write (its folder must exist).
        pixels (np.ndarray): (H, W) integer grey values in [0, 65535].
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
