"""DeepLesion format: HU of 16-bit PNGs, DL_info checks, and neighbour plans at series ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data.volumes.deeplesion import (
    neighbour_plan,
    read_dl_info,
    read_hu_png,
    resolve_slice,
)
from ssmd.utils.errors import DataError

HEADER = (
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
    "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
    "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,"
    "Patient_age,Train_Val_Test\n"
)


def dl_row(name: str = "000001_01_01_012.png", key: int = 12, box: str = "10, 20, 30, 40",
           rng: str = "10, 14", spacing: str = "0.8, 0.8, 5", size: str = "64, 48",
           noisy: int = 0, split: int = 1, window: str = "-175, 275") -> str:  # fmt: skip
    """One ``DL_info.csv`` line in the release's column order."""
    return (
        f'{name},1,1,1,{key},"0, 0, 0, 0","{box}","1, 1","0.5, 0.5, 0.5",4,{noisy},'
        f'"{rng}","{spacing}","{size}","{window}",F,50,{split}\n'
    )


def _csv(tmp_path: Path, *rows: str) -> Path:
    p = tmp_path / "DL_info.csv"
    p.write_text(HEADER + "".join(rows))
    return p


def test_hu_is_png_value_minus_32768(tmp_path: Path) -> None:
    a = np.array([[32768, 31744], [34000, 0]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "s.png")
    assert read_hu_png(tmp_path / "s.png").tolist() == [[0, -1024], [1232, -32768]]


def test_an_8_bit_png_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(DataError, match="8-bit PNG") as e:
        read_hu_png(tmp_path / "s.png")
    assert e.value.field == "image.dtype"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="single-channel"):
        read_hu_png(tmp_path / "c.png")


def test_dl_info_row_is_parsed(tmp_path: Path) -> None:
    (row,) = read_dl_info(_csv(tmp_path, dl_row(noisy=1, split=3)))
    assert (row.series, row.key_slice, row.line) == ("000001_01_01", 12, 2)
    assert row.box == (10.0, 20.0, 30.0, 40.0) and row.spacing == (0.8, 0.8, 5.0)
    assert row.slice_range == (10, 14) and row.image_size == (64, 48)
    assert row.noisy and row.split == "test" and row.lesion_type == 4
    assert row.image_path == "Images_png/000001_01_01/012.png"


@pytest.mark.parametrize(
    ("row", "field", "match"),
    [
        (dl_row(box="10, 20, 70, 40"), "line 2: Bounding_boxes", "outside the image"),
        (dl_row(box="30, 20, 10, 40"), "line 2: Bounding_boxes", "empty box"),
        (dl_row(box="10, 20, 30"), "line 2: Bounding_boxes", "4 finite numbers"),
        (dl_row(key=13), "line 2: Key_slice_index", "differs from the slice 12"),
        (dl_row(rng="13, 20"), "line 2: Slice_range", "does not contain the key slice 12"),
        (dl_row(split=4), "line 2: Train_Val_Test", "expected 1"),
        (dl_row(name="scan_12.png"), "line 2: File_name", "expected <patient>"),
        (dl_row(spacing="0.8, 0.8, 0"), "line 2: Spacing_mm_px_", "must be > 0"),
        (dl_row(noisy=2), "line 2: Possibly_noisy", "0 or 1"),
    ],
)
def test_bad_dl_info_rows(tmp_path: Path, row: str, field: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as e:
        read_dl_info(_csv(tmp_path, row))
    assert e.value.field == field and e.value.path == str(tmp_path / "DL_info.csv")


def test_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "DL_info.csv"
    p.write_text("File_name,Key_slice_index\n")
    with pytest.raises(DataError, match="missing DL_info column"):
        read_dl_info(p)


def _slices(plan: object) -> list[list[int]]:
    return [[s for s, _ in ch] for ch in plan.channels]  # type: ignore[attr-defined]


def test_native_neighbours_repeat_the_nearest_slice_at_series_ends() -> None:
    avail = {5, 6, 7, 8, 9}
    first = neighbour_plan(5, avail, 2)
    assert _slices(first) == [[5], [5], [5], [6], [7]] and first.substituted == 2
    last = neighbour_plan(9, avail, 2)
    assert _slices(last) == [[7], [8], [9], [9], [9]] and last.substituted == 2
    inner = neighbour_plan(7, avail, 2)
    assert _slices(inner) == [[5], [6], [7], [8], [9]] and inner.substituted == 0
    # only the key slice released (DeepLesion key-slice subsets): all channels repeat it
    lonely = neighbour_plan(61, {61}, 1, slice_interval=5.0, z_spacing=2.0)
    assert lonely.channels == (((61, 1.0),), ((61, 1.0),), ((61, 1.0),)) and lonely.substituted == 2


def test_a_gap_resolves_towards_the_key_slice() -> None:
    plan = neighbour_plan(5, {3, 5}, 2)  # slice 4 missing -> 5; 6, 7 missing -> 5
    assert _slices(plan) == [[3], [5], [5], [5], [5]] and plan.substituted == 3
    assert resolve_slice({3, 5}, 5, 1) == 3  # 1, 2 missing -> 3
    with pytest.raises(ValueError, match="key slice 4"):
        resolve_slice({3, 5}, 4, 3)


def test_interpolation_to_2_mm_by_hand() -> None:
    # 5 mm slices, channels 2 mm apart: t = 12 -+ 0.4 -> weights 0.4 / 0.6
    plan = neighbour_plan(12, set(range(10, 15)), 1, slice_interval=5.0, z_spacing=2.0)
    (lo, mid, hi) = plan.channels
    assert [s for s, _ in lo] == [11, 12] and np.allclose([w for _, w in lo], [0.4, 0.6])
    assert mid == ((12, 1.0),)
    assert [s for s, _ in hi] == [12, 13] and np.allclose([w for _, w in hi], [0.6, 0.4])
    # 1 mm slices, 2 mm apart: whole slices 2 away, no blend
    plan1 = neighbour_plan(12, set(range(8, 17)), 2, slice_interval=1.0, z_spacing=2.0)
    assert plan1.channels == (((8, 1.0),), ((10, 1.0),), ((12, 1.0),), ((14, 1.0),), ((16, 1.0),))
    with pytest.raises(ValueError, match="need both > 0"):
        neighbour_plan(12, {12}, 1, slice_interval=None, z_spacing=2.0)


@pytest.mark.realdata
def test_real_png_hu_equals_the_dicom_hu(lung_pet: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    png = lung_pet / "deeplesion_format" / "Images_png" / "900001_01_01" / "013.png"
    dcm = next((lung_pet / "dicom").iterdir()) / "1-13.dcm"
    ds = pydicom.dcmread(dcm)
    want = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(read_hu_png(png), want)


@pytest.mark.realdata
def test_real_key_slices_are_16_bit_hu() -> None:
    root = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "deeplesion_keyslices"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    hu = read_hu_png(root / "Images_png" / "000053_04_01" / "042.png")
    assert hu.shape == (512, 512) and hu.dtype == np.int32
    assert int(hu.min()) == 31744 - 32768 == -1024  # air / outside the scan
