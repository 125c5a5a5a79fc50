"""MetaImage reading: the real LUNA16-named slabs, round trips, and every bad-header case."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import ssmd.data.volumes._deps as deps
from ssmd.data.volumes import (
    MissingDependencyError,
    Volume,
    read_metaimage,
    read_metaimage_geometry,
    read_volume,
    write_metaimage,
)
from ssmd.utils.errors import DataError

pytest.importorskip("SimpleITK")


def _tiny(tmp_path: Path, compress: bool = False, name: str = "a") -> Path:
    a = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 1000  # (Z, Y, X)
    d = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    v = Volume(a, (0.5, 0.75, 2.5), (-10.0, 20.0, -30.5), d)
    return write_metaimage(v, tmp_path / f"{name}.mhd", compress=compress)


def _header_with(path: Path, key: str, value: str) -> None:
    lines = path.read_text().splitlines()
    out = [f"{key} = {value}" if ln.split("=")[0].strip() == key else ln for ln in lines]
    path.write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_keeps_voxels_and_geometry(tmp_path: Path, compress: bool) -> None:
    path = _tiny(tmp_path, compress)
    v = read_metaimage(path)
    assert v.array.dtype == np.int16 and v.array.shape == (2, 3, 4)
    assert v.array[1, 2, 3] == 2 * 3 * 4 - 1 - 1000
    assert v.spacing == (0.5, 0.75, 2.5) and v.origin == (-10.0, 20.0, -30.5)
    np.testing.assert_array_equal(v.direction, [[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    g = read_metaimage_geometry(path)
    assert g.size_xyz == (4, 3, 2) and g.spacing == v.spacing
    assert read_volume(path).array.tolist() == v.array.tolist()


def test_raw_shorter_than_the_header_says(tmp_path: Path) -> None:
    path = _tiny(tmp_path)
    raw = tmp_path / "a.raw"
    raw.write_bytes(raw.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"header needs 48 bytes .* but a\.raw has 46") as e:
        read_metaimage(path)
    assert e.value.field == "DimSize" and e.value.path == str(path)


def test_raw_longer_than_the_header_says(tmp_path: Path) -> None:
    # SimpleITK itself reads this without complaint
    path = _tiny(tmp_path)
    raw = tmp_path / "a.raw"
    raw.write_bytes(raw.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="has 50"):
        read_metaimage_geometry(path)


def test_missing_raw_file(tmp_path: Path) -> None:
    path = _tiny(tmp_path)
    (tmp_path / "a.raw").unlink()
    with pytest.raises(DataError, match="does not exist") as e:
        read_metaimage(path)
    assert e.value.field == "ElementDataFile" and e.value.value == "a.raw"


def test_zraw_size_disagrees_with_compressed_data_size(tmp_path: Path) -> None:
    path = _tiny(tmp_path, compress=True)
    _header_with(path, "CompressedDataSize", "12345")
    with pytest.raises(DataError, match="CompressedDataSize"):
        read_metaimage(path)


def test_corrupt_zraw_is_a_data_error_not_garbage(tmp_path: Path) -> None:
    path = _tiny(tmp_path, compress=True)
    z = tmp_path / "a.zraw"
    z.write_bytes(b"x" * z.stat().st_size)  # right size, not a zlib stream
    with pytest.raises(DataError, match="invalid zlib stream"):
        read_metaimage(path)


def test_missing_header_field_and_unknown_type(tmp_path: Path) -> None:
    path = _tiny(tmp_path)
    text = path.read_text()
    path.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("DimSize")))
    with pytest.raises(DataError, match="missing MetaImage header field"):
        read_metaimage(path)
    path2 = _tiny(tmp_path, name="b")
    _header_with(path2, "ElementType", "MET_WEIRD")
    with pytest.raises(DataError, match="ElementType"):
        read_metaimage(path2)


def test_not_a_header_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mhd"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="not a MetaImage header"):
        read_metaimage(junk)
    with pytest.raises(DataError, match="does not exist"):
        read_metaimage(tmp_path / "nope.mhd")
    with pytest.raises(DataError, match="not a volume file"):
        (tmp_path / "x.png").write_bytes(b"")
        read_volume(tmp_path / "x.png")


def test_missing_simpleitk_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny(tmp_path)

    def no_module(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(deps.importlib, "import_module", no_module)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ssmd\[medical\]'"):
        read_metaimage(path)


@pytest.mark.realdata
def test_real_lidc_slabs_match_volumes_csv(lidc: Path) -> None:
    for row in csv.DictReader((lidc / "volumes.csv").open()):
        v = read_metaimage(lidc / "mhd" / f"{row['seriesuid']}.mhd")
        x, y, z = (int(s) for s in row["size_xyz"].split("x"))
        assert v.size_xyz == (x, y, z) and v.array.dtype == np.int16
        np.testing.assert_allclose(
            v.spacing, [float(s) for s in row["spacing_xyz_mm"].split("x")], atol=1e-6
        )
        np.testing.assert_allclose(
            v.origin, [float(s) for s in row["origin_xyz_mm"].split()], atol=1e-3
        )
        assert (int(v.array.min()), int(v.array.max())) == (int(row["hu_min"]), int(row["hu_max"]))
        np.testing.assert_array_equal(v.direction, np.eye(3))


def test_zraw_that_inflates_to_the_wrong_size(tmp_path: Path) -> None:
    import zlib

    path = _tiny(tmp_path, compress=True)
    z = tmp_path / "a.zraw"
    z.write_bytes(zlib.compress(bytes(40)))  # 40 bytes where 2 * 3 * 4 int16 need 48
    _header_with(path, "CompressedDataSize", str(z.stat().st_size))
    with pytest.raises(DataError, match=r"needs 48 bytes but a\.zraw inflates to 40"):
        read_metaimage(path)
