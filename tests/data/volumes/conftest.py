"""Real CT data for the volume tests (skipped when ../shared/data is absent) and tiny writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "data"
LIDC = SHARED / "lidc_subvolumes"
LUNG_PET = SHARED / "lung_pet_ct_dx"


def need(path: Path) -> Path:
    """``path`` if it exists, else skip the test."""
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def lidc() -> Path:
    """``../shared/data/lidc_subvolumes``."""
    return need(LIDC)


@pytest.fixture
def lung_pet() -> Path:
    """``../shared/data/lung_pet_ct_dx``."""
    return need(LUNG_PET)


@pytest.fixture
def lidc_dicom(lidc: Path) -> Callable[[str], Path]:
    """``patient -> `` the one DICOM series folder of that LIDC patient."""

    def folder(patient: str) -> Path:
        return next((lidc / "dicom" / patient).rglob("*.dcm")).parent

    return folder


@pytest.fixture
def write_slice() -> Callable[..., Path]:
    """The :func:`write_ct_slice` writer (skips when pydicom is missing)."""
    pytest.importorskip("pydicom")
    return write_ct_slice


def write_ct_slice(
    path: Path,
    pixels: np.ndarray,
    position: tuple[float, float, float],
    series_uid: str = "1.2.3.4",
    instance: int = 1,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.7, 0.5),
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """Write a minimal uncompressed CT slice with pydicom (uint16 pixels ``(rows, cols)``)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    try:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)
    return path
