"""World <-> voxel maps and resampling: hand-computed cases, SimpleITK, and the real LIDC slabs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes import Volume, VolumeGeometry, read_metaimage, resample

UID_0001 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


def test_world_to_voxel_identity_direction_by_hand() -> None:
    g = VolumeGeometry(size=(10, 10, 10), spacing=(0.5, 2.0, 3.0), origin=(10.0, -5.0, 2.0))
    # ((11 - 10) / 0.5, (-1 + 5) / 2, (11 - 2) / 3)
    np.testing.assert_allclose(g.world_to_voxel([11.0, -1.0, 11.0]), [2.0, 2.0, 3.0])
    np.testing.assert_allclose(g.voxel_to_world([2.0, 2.0, 3.0]), [11.0, -1.0, 11.0])


def test_world_to_voxel_rotated_direction_by_hand() -> None:
    # voxel x runs along world +y, voxel y along world -x (90 degrees about z)
    d = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = VolumeGeometry(size=(4, 4, 4), spacing=(1.0, 2.0, 3.0), direction=d)
    # p = D @ (1 * 1, 1 * 2, 1 * 3) = (-2, 1, 3)
    np.testing.assert_allclose(g.voxel_to_world([1.0, 1.0, 1.0]), [-2.0, 1.0, 3.0])
    np.testing.assert_allclose(g.world_to_voxel([[-2.0, 1.0, 3.0]]), [[1.0, 1.0, 1.0]])


def test_world_voxel_agree_with_simpleitk_for_an_oblique_volume() -> None:
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    vol = Volume(np.zeros((5, 6, 7), np.int16), (0.7, 0.8, 2.5), (-12.0, 30.5, -200.0), q)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(tuple(q.reshape(-1)))
    for _ in range(5):
        p = rng.normal(scale=50.0, size=3)
        want = img.TransformPhysicalPointToContinuousIndex(tuple(p))
        np.testing.assert_allclose(vol.world_to_voxel(p), want, atol=1e-9)
        np.testing.assert_allclose(vol.voxel_to_world(vol.world_to_voxel(p)), p, atol=1e-9)


def test_contains_index_is_half_open_at_voxel_edges() -> None:
    g = VolumeGeometry(size=(4, 3, 2), spacing=(1.0, 1.0, 1.0))
    inside = g.contains_index([[-0.5, 0, 0], [3.49, 2.49, 1.49], [3.5, 0, 0], [0, -0.51, 0]])
    assert inside.tolist() == [True, True, False, False]


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="direction"):
        Volume(np.zeros((2, 2, 2)), (1.0, 1.0, 1.0), direction=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        Volume(np.zeros((2, 2)), (1.0, 1.0, 1.0))


def test_resample_linear_by_hand() -> None:
    a = np.array([0, 10, 20, 30], dtype=np.int16).reshape(1, 1, 4)  # x ramp
    v = Volume(a, (1.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0))
    coarse = resample(v, (2.0, 1.0, 1.0))
    assert coarse.array.tolist() == [[[0.0, 20.0]]]  # round(4 / 2) = 2 voxels at x = 0, 2
    fine = resample(v, (0.5, 1.0, 1.0))
    # 8 voxels at old x = 0, 0.5, ..., 3.5; past the last centre the edge value repeats
    assert fine.array.ravel().tolist() == [0, 5, 10, 15, 20, 25, 30, 30]
    assert fine.origin == v.origin and fine.spacing == (0.5, 1.0, 1.0)
    assert fine.array.dtype == np.float32
    nearest = resample(v, (0.5, 1.0, 1.0), order=0)
    assert nearest.array.dtype == np.int16
    assert nearest.array.ravel().tolist() == [0, 10, 10, 20, 20, 30, 30, 30]


def test_resample_keeps_channels_and_world_points() -> None:
    a = np.arange(2 * 4 * 3 * 2, dtype=np.float32).reshape(2, 4, 3, 2)  # (C, Z, Y, X)
    v = Volume(a, (1.0, 1.5, 2.0), origin=(1.0, 2.0, 3.0))
    r = resample(v, 1.0)
    assert r.array.shape == (2, 8, 5, 2)  # 4 * 2 / 1 = 8, 3 * 1.5 / 1 = 4.5 -> 5 (half up), 2
    # voxel 0 keeps its world position; a world point maps to old_index * old / new
    p = v.voxel_to_world([1.0, 2.0, 3.0])
    np.testing.assert_allclose(r.world_to_voxel(p), [1.0, 3.0, 6.0])


@pytest.mark.realdata
def test_lidc_listed_voxel_indices_and_hu(lidc: Path) -> None:
    """The LUNA16 rows' voxel indices listed with SimpleITK are what world_to_voxel gives."""
    pytest.importorskip("SimpleITK")
    rows = list(csv.DictReader((lidc / "annotations_luna16.csv").open()))
    assert len(rows) == 1
    for row in rows:
        vol = read_metaimage(lidc / "mhd" / f"{row['seriesuid']}.mhd")
        idx = vol.world_to_voxel([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
        listed = [float(row["voxel_x"]), float(row["voxel_y"]), float(row["voxel_z"])]
        assert np.round(idx, 2).tolist() == listed  # 316.03, 367.0, 6.65
        i, j, k = (int(v) for v in np.floor(idx + 0.5))
        assert int(vol.array[k, j, i]) == int(row["hu_at_centre"])  # 91 HU
        assert bool(vol.contains_index(idx)) == (row["centre_inside_subvolume"] == "1")


@pytest.mark.realdata
def test_lidc_reader_centroids_fall_in_their_pixel_boxes(lidc: Path) -> None:
    """Each reader's contour centroid (world mm) maps into that reader's own pixel box."""
    pytest.importorskip("SimpleITK")
    vol = read_metaimage(lidc / "mhd" / f"{UID_0001}.mhd")
    rows = [
        r
        for r in csv.DictReader((lidc / "nodules_per_reader.csv").open())
        if r["seriesuid"] == UID_0001 and r["fully_inside"] == "1"
    ]
    assert rows
    for r in rows:
        x, y, z = vol.world_to_voxel([float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])])
        assert float(r["x_px_min"]) <= x <= float(r["x_px_max"])
        assert float(r["y_px_min"]) <= y <= float(r["y_px_max"])
        z_lo = vol.world_to_voxel([0.0, 0.0, float(r["z_mm_min"])])[2]
        z_hi = vol.world_to_voxel([0.0, 0.0, float(r["z_mm_max"])])[2]
        assert z_lo <= z <= z_hi


@pytest.mark.realdata
def test_resample_matches_simpleitk_linear_on_a_real_slab(lidc: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    path = lidc / "mhd" / f"{UID_0001}.mhd"
    vol = read_metaimage(path)
    iso = resample(vol, 1.0)
    assert iso.array.shape == (40, 360, 360)  # 16 * 2.5 = 40, 512 * 0.703125 = 360
    img = sitk.ReadImage(str(path))
    ref = sitk.Resample(
        sitk.Cast(img, sitk.sitkFloat32),
        [360, 360, 40],
        sitk.Transform(),
        sitk.sitkLinear,
        img.GetOrigin(),
        (1.0, 1.0, 1.0),
        img.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    want = sitk.GetArrayFromImage(ref)
    # inside the last voxel centres (SimpleITK pads beyond them, ssmd repeats the edge)
    np.testing.assert_allclose(iso.array[:37, :359, :359], want[:37, :359, :359], atol=1e-2)
