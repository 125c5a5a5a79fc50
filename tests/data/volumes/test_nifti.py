"""NIfTI: RAS -> LPS by hand, agreement with SimpleITK, scaling, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes import Volume, read_nifti, read_volume, write_nifti
from ssmd.utils.errors import DataError

nib = pytest.importorskip("nibabel")


def test_ras_affine_becomes_lps_geometry_by_hand(tmp_path: Path) -> None:
    data = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2)  # (i, j, k) = (X, Y, Z)
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])  # RAS: +i goes to -x_ras = +x_lps
    affine[:3, 3] = [10.0, 20.0, 30.0]  # RAS origin -> LPS (-10, -20, 30)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "a.nii.gz")
    v = read_nifti(tmp_path / "a.nii.gz")
    assert v.spacing == (2.0, 3.0, 4.0)
    assert v.origin == (-10.0, -20.0, 30.0)
    np.testing.assert_array_equal(v.direction, np.eye(3))
    assert v.array.shape == (2, 3, 4) and v.array.dtype == np.int16
    assert v.array[1, 2, 3] == data[3, 2, 1]


def test_oblique_volume_agrees_with_simpleitk(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    a = rng.integers(-1000, 1000, size=(3, 4, 5)).astype(np.int16)
    v = Volume(a, (0.8, 0.9, 2.0), (-100.0, 50.0, 12.5), q)
    path = write_nifti(v, tmp_path / "v.nii")
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, a)
    np.testing.assert_allclose(back.direction, q, atol=1e-5)
    np.testing.assert_allclose(back.spacing, v.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, v.origin, atol=1e-4)
    img = sitk.ReadImage(str(path))  # SimpleITK reads NIfTI into LPS itself
    np.testing.assert_allclose(back.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.spacing, img.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.direction.reshape(-1), img.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(back.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(read_volume(path).array, a)


def test_scaled_nifti_is_float_hu(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.full((2, 2, 2), 10, np.int16), np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "s.nii")
    v = read_nifti(tmp_path / "s.nii")
    assert v.array.dtype == np.float32 and float(v.array[0, 0, 0]) == 2.0 * 10 - 1024


def test_sheared_and_missing_files_are_data_errors(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.5  # shear
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), affine), tmp_path / "sh.nii")
    with pytest.raises(DataError, match="sheared"):
        read_nifti(tmp_path / "sh.nii")
    with pytest.raises(DataError, match="does not exist"):
        read_nifti(tmp_path / "none.nii.gz")
    (tmp_path / "bad.nii").write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match="nibabel cannot read it"):
        read_nifti(tmp_path / "bad.nii")


@pytest.mark.realdata
def test_real_slab_survives_mhd_to_nifti(lidc: Path, tmp_path: Path) -> None:
    pytest.importorskip("SimpleITK")
    from ssmd.data.volumes import read_metaimage

    mhd = next((lidc / "mhd").glob("*.mhd"))
    v = read_metaimage(mhd)
    back = read_nifti(write_nifti(v, tmp_path / "slab.nii.gz"))
    np.testing.assert_array_equal(back.array, v.array)
    np.testing.assert_allclose(back.origin, v.origin, atol=1e-4)
    np.testing.assert_allclose(back.spacing, v.spacing, atol=1e-6)
