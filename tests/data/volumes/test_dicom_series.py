"""DICOM series: ordering, rescale and geometry on real series and SimpleITK; every bad folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes import read_dicom_series, read_metaimage, read_volume
from ssmd.utils.errors import DataError

pydicom = pytest.importorskip("pydicom")

WriteSlice = Callable[..., Path]


def _series(
    folder: Path, write: WriteSlice, zs: list[float], uid: str = "1.2.3.4", **kw: object
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n, z in enumerate(zs, start=1):
        px = np.full((4, 3), 1000 + 10 * n, dtype=np.uint16)
        out.append(write(folder / f"{uid}_{n:02d}.dcm", px, (0.0, 0.0, z), uid, n, **kw))
    return out


def test_sorted_along_the_normal_with_rescale_by_hand(
    tmp_path: Path, write_slice: WriteSlice
) -> None:
    # written in shuffled z order; instance n has raw value 1000 + 10 n
    _series(tmp_path, write_slice, [5.0, -5.0, 0.0, 10.0], slope=2.0, intercept=-1000.0)
    v = read_dicom_series(tmp_path)
    assert v.meta["instance_numbers"] == [2, 3, 1, 4]  # z = -5, 0, 5, 10
    assert v.spacing == (0.5, 0.7, 5.0)  # PixelSpacing (0.7 row, 0.5 column) -> x 0.5, y 0.7
    assert v.origin == (0.0, 0.0, -5.0)
    # HU = 2 * (1000 + 10 n) - 1000 for n = 2, 3, 1, 4
    assert v.array[:, 0, 0].tolist() == [1040, 1060, 1020, 1080]
    assert v.array.dtype == np.int16 and v.array.shape == (4, 4, 3)
    assert v.meta["nonuniform"] is False and v.meta["slice_steps"] == [5.0, 5.0, 5.0]


def test_oblique_series_matches_simpleitk(tmp_path: Path, write_slice: WriteSlice) -> None:
    sitk = pytest.importorskip("SimpleITK")
    c, s = np.cos(0.5), np.sin(0.5)
    row, col = np.array([c, s, 0.0]), np.array([-s * 0.6, c * 0.6, 0.8])
    normal = np.cross(row, col)
    origin = np.array([-100.0, 20.0, 7.0])
    tmp_path.mkdir(exist_ok=True)
    for n in range(5):
        px = (np.arange(12).reshape(4, 3) * (n + 1)).astype(np.uint16)
        pos = origin + normal * 1.5 * (4 - n)  # written in reverse order
        write_slice(tmp_path / f"s{n}.dcm", px, tuple(pos), "9.9", n + 1,
                    orientation=(*row, *col), intercept=-1024.0)  # fmt: skip
    v = read_dicom_series(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    np.testing.assert_allclose(v.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(v.spacing, img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(v.direction.reshape(-1), img.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(v.array, sitk.GetArrayFromImage(img))


def test_missing_slice_is_named(tmp_path: Path, write_slice: WriteSlice) -> None:
    files = _series(tmp_path, write_slice, [0.0, 2.0, 4.0, 8.0, 10.0])
    with pytest.raises(
        DataError, match=r"1 missing slice\(s\): step 4 mm .* median step is 2 mm"
    ) as e:
        read_dicom_series(tmp_path)
    assert e.value.path == str(files[3]) and e.value.field == "ImagePositionPatient"
    v = read_dicom_series(tmp_path, allow_nonuniform=True)
    assert v.meta["nonuniform"] is True and v.meta["suspected_missing_slices"] == 1
    assert v.spacing[2] == 2.0 and v.meta["slice_steps"] == [2.0, 2.0, 4.0, 2.0]


def test_nonuniform_spacing_is_reported(tmp_path: Path, write_slice: WriteSlice) -> None:
    _series(tmp_path, write_slice, [0.0, 1.0, 2.0, 3.5])
    with pytest.raises(DataError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path)
    v = read_dicom_series(tmp_path, allow_nonuniform=True)
    assert v.meta["nonuniform"] and v.meta["suspected_missing_slices"] == 0


def test_two_series_in_one_folder(tmp_path: Path, write_slice: WriteSlice) -> None:
    _series(tmp_path, write_slice, [0.0, 1.0, 2.0], uid="1.1")
    _series(tmp_path, write_slice, [0.0, 1.0], uid="2.2")
    with pytest.raises(DataError, match="mixes 2 series") as e:
        read_dicom_series(tmp_path)
    assert e.value.value == {"1.1": 3, "2.2": 2}
    assert read_dicom_series(tmp_path, series_uid="2.2").array.shape[0] == 2
    with pytest.raises(DataError, match="no such series"):
        read_dicom_series(tmp_path, series_uid="3.3")


def test_duplicate_position_and_inconsistent_geometry(
    tmp_path: Path, write_slice: WriteSlice
) -> None:
    _series(tmp_path / "dup", write_slice, [0.0, 1.0, 1.0])
    with pytest.raises(DataError, match="same position"):
        read_dicom_series(tmp_path / "dup")
    files = _series(tmp_path / "orient", write_slice, [0.0, 1.0])
    write_slice(files[1], np.zeros((4, 3), np.uint16), (0.0, 0.0, 1.0), "1.2.3.4", 2,
                orientation=(0, 1, 0, 1, 0, 0))  # fmt: skip
    with pytest.raises(DataError, match="ImageOrientationPatient"):
        read_dicom_series(tmp_path / "orient")
    files = _series(tmp_path / "size", write_slice, [0.0, 1.0])
    write_slice(files[1], np.zeros((5, 3), np.uint16), (0.0, 0.0, 1.0), "1.2.3.4", 2)
    with pytest.raises(DataError, match="Rows"):
        read_dicom_series(tmp_path / "size")


def test_non_dicom_files_are_listed_not_dropped(tmp_path: Path, write_slice: WriteSlice) -> None:
    _series(tmp_path, write_slice, [0.0, 1.0])
    (tmp_path / "notes.txt").write_text("not dicom")
    v = read_dicom_series(tmp_path)
    assert v.meta["ignored_files"] == [str(tmp_path / "notes.txt")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no DICOM image slice"):
        read_dicom_series(empty)
    with pytest.raises(DataError, match="is not a folder"):
        read_dicom_series(tmp_path / "nope")


@pytest.mark.realdata
@pytest.mark.parametrize("patient", ["LIDC-IDRI-0001", "LIDC-IDRI-0002"])
def test_lidc_dicom_equals_the_luna16_mhd(
    lidc: Path, lidc_dicom: Callable[[str], Path], patient: str
) -> None:
    pytest.importorskip("SimpleITK")
    folder = lidc_dicom(patient)
    v = read_volume(folder)
    m = read_metaimage(lidc / "mhd" / f"{folder.name}.mhd")
    assert v.meta["series_uid"] == folder.name
    np.testing.assert_array_equal(v.array, m.array)  # HU = raw + RescaleIntercept (-1024)
    np.testing.assert_allclose(v.origin, m.origin, atol=1e-4)
    np.testing.assert_allclose(v.spacing, m.spacing, atol=1e-5)
    np.testing.assert_array_equal(v.direction, np.eye(3))


@pytest.mark.realdata
def test_lung_pet_ct_series_order_and_hu(lung_pet: Path) -> None:
    folder = next((lung_pet / "dicom").iterdir())
    v = read_dicom_series(folder)
    assert v.array.shape == (64, 512, 512) and v.array.dtype == np.int16
    # InstanceNumber 1 is the most cranial slice (z = -124): ascending z is 64, 63, ..., 1
    assert v.meta["instance_numbers"] == list(range(64, 0, -1))
    assert v.origin[2] == -439.0 and v.spacing == (0.841796875, 0.841796875, 5.0)
    raw = pydicom.dcmread(folder / "1-13.dcm").pixel_array.astype(np.int32)
    np.testing.assert_array_equal(v.array[64 - 13], raw - 1024)  # uint16 raw, HU = raw - 1024
    assert int(v.array.min()) == -1024


@pytest.mark.realdata
def test_lung_pet_ct_series_matches_simpleitk(lung_pet: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    folder = next((lung_pet / "dicom").iterdir())
    v = read_dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    np.testing.assert_array_equal(v.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(v.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(v.spacing, img.GetSpacing(), atol=1e-6)
