"""DeepLesionDataset: neighbour channels, windows, ids, split, every bad input; real subsets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.cli.main import main
from ssmd.data import CocoDataset, build_dataset
from ssmd.data.datasets.deeplesion import DeepLesionDataset
from ssmd.utils.errors import DataError

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
HEADER = (
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
    "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
    "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,"
    "Patient_age,Train_Val_Test\n"
)


def _row(series: str, key: int, box: str = "10, 20, 30, 40", rng: str = "10, 14",
         z: float = 5.0, noisy: int = 0, split: int = 1, size: str = "64, 48") -> str:  # fmt: skip
    return (
        f'{series}_{key:03d}.png,1,1,1,{key},"0, 0, 0, 0","{box}","1, 1","0.5, 0.5, 0.5",4,'
        f'{noisy},"{rng}","0.8, 0.8, {z}","{size}","-175, 275",F,50,{split}\n'
    )


def _png(path: Path, hu: int, w: int = 64, h: int = 48, bits: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(np.full((h, w), hu + 32768, np.uint16)).save(path)
    else:
        Image.fromarray(np.full((h, w), 7, np.uint8)).save(path)


def _layout(
    root: Path, rows: list[str], series: str = "000001_01_01", slices: range = range(10, 15)
) -> Path:
    """Slices ``s`` of ``series`` with constant HU ``10 * s``; ``DL_info.csv`` from ``rows``."""
    for s in slices:
        _png(root / "Images_png" / series / f"{s:03d}.png", 10 * s)
    (root / "DL_info.csv").write_text(HEADER + "".join(rows))
    return root


def test_channels_interpolate_to_2_mm_by_hand(tmp_path: Path) -> None:
    root = _layout(tmp_path, [_row("000001_01_01", 12)])
    ds = DeepLesionDataset(root, window="hu")
    s = ds[0]
    assert s.image.shape == (3, 48, 64) and s.image.dtype == torch.float32
    # t = 11.6: 0.4 * 110 + 0.6 * 120 = 116; t = 12.4: 0.6 * 120 + 0.4 * 130 = 124
    np.testing.assert_allclose(s.image[:, 0, 0].numpy(), [116.0, 120.0, 124.0], rtol=1e-6)
    assert s.boxes.tolist() == [[10.0, 20.0, 30.0, 40.0]] and s.labels.tolist() == [1]
    native = DeepLesionDataset(root, window="hu", num_neighbors=2, z_spacing=None)
    assert native[0].image[:, 0, 0].tolist() == [100.0, 110.0, 120.0, 130.0, 140.0]


def test_series_end_repeats_the_nearest_slice(tmp_path: Path) -> None:
    root = _layout(tmp_path, [_row("000001_01_01", 10), _row("000001_01_01", 14)])
    ds = DeepLesionDataset(root, window="hu", num_neighbors=2, z_spacing=None)
    assert ds[0].image[:, 0, 0].tolist() == [100.0, 100.0, 100.0, 110.0, 120.0]
    assert ds[1].image[:, 0, 0].tolist() == [120.0, 130.0, 140.0, 140.0, 140.0]
    assert ds.report["neighbour_slices_substituted"] == 4
    assert ds.report["samples_with_substituted_neighbours"] == 2


def test_windows_and_normalisation_by_hand(tmp_path: Path) -> None:
    root = _layout(tmp_path, [_row("000001_01_01", 12)])
    lp = DeepLesionDataset(root, window="lp", z_spacing=None)[0].image
    np.testing.assert_allclose(
        lp[:, 0, 0].numpy(), np.array([110, 120, 130]) / 4095 + 1024 / 4095, rtol=1e-6
    )
    ssmd = DeepLesionDataset(root, window="ssmd", z_spacing=None)[0].image
    np.testing.assert_allclose(ssmd[:, 0, 0].numpy(), np.array([110, 120, 130]) / 1100, rtol=1e-6)
    dicom = DeepLesionDataset(root, window="dicom", z_spacing=None)[0].image  # -175..275
    np.testing.assert_allclose(
        dicom[:, 0, 0].numpy(), (np.array([110, 120, 130]) + 175) / 450, rtol=1e-6
    )
    ds = DeepLesionDataset(root, window="hu", z_spacing=None)
    mean, std = ds.mean_std()
    assert mean == pytest.approx(120.0) and std == pytest.approx(np.std([110, 120, 130]))
    normed = DeepLesionDataset(root, window="hu", z_spacing=None, normalize=(mean, std))[0].image
    np.testing.assert_allclose(
        normed[:, 0, 0].numpy(), (np.array([110, 120, 130]) - mean) / std, rtol=1e-5
    )


def test_ids_in_sorted_file_name_order_and_lesions_grouped(tmp_path: Path) -> None:
    rows = [
        _row("000002_01_01", 11, rng="11, 11"),
        _row("000001_01_01", 13, box="1, 2, 3, 4"),
        _row("000001_01_01", 13, box="5, 6, 7, 8"),
        _row("000001_01_01", 10),
    ]
    root = _layout(tmp_path, rows)
    _png(root / "Images_png" / "000002_01_01" / "011.png", 0)
    ds = DeepLesionDataset(root)
    assert ds.file_names == [
        "Images_png/000001_01_01/010.png",
        "Images_png/000001_01_01/013.png",
        "Images_png/000002_01_01/011.png",
    ]
    assert [r.image_id for r in ds.records] == [1, 2, 3]
    assert ds.annotation(1)[0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert ds.report["lesions"] == 4 and ds.report["key_slices"] == 3


def test_noisy_keep_drop_ignore(tmp_path: Path) -> None:
    rows = [_row("000001_01_01", 12), _row("000001_01_01", 12, box="1, 1, 5, 5", noisy=1)]
    root = _layout(tmp_path, rows)
    assert DeepLesionDataset(root).annotation(0)[0].shape == (2, 4)
    drop = DeepLesionDataset(root, noisy="drop")
    assert drop.annotation(0)[0].shape == (1, 4) and drop.report["noisy_dropped"] == 1
    ign = DeepLesionDataset(root, noisy="ignore")
    assert ign.ignore_regions(0).tolist() == [[1, 1, 5, 5]] and ign.report["noisy_ignored"] == 1


def test_official_split_and_part(tmp_path: Path) -> None:
    rows = [_row("000001_01_01", k, split=1) for k in (10, 11, 12, 13)]
    rows += [
        _row("000002_01_01", 20, rng="20, 20", split=2),
        _row("000003_01_01", 30, rng="30, 30", split=3),
    ]
    root = _layout(tmp_path, rows)
    _png(root / "Images_png" / "000002_01_01" / "020.png", 0)
    _png(root / "Images_png" / "000003_01_01" / "030.png", 0)
    ds = DeepLesionDataset(root)
    parts = ds.official_parts()
    assert len(parts["train"]) == 4 and parts["val"] == ["Images_png/000002_01_01/020.png"]
    half = ds.official_split(labeled_ratio=0.5, seed=3)
    assert len(half.labeled) == 2 and set(half.labeled) <= set(half.train)
    assert set(half.labeled) <= set(ds.official_split(labeled_ratio=0.75, seed=3).labeled)
    assert len(DeepLesionDataset(root, part="test")) == 1
    every = DeepLesionDataset(root, slices="all")  # slice 14 of the train series is unlabeled
    assert len(every) == 7 and every.labeled_flags().count(False) == 1
    sp = every.official_split(1.0)
    assert "Images_png/000001_01_01/014.png" in sp.unlabeled and len(sp.labeled) == 4


def test_unlabeled_series_without_dl_info(tmp_path: Path) -> None:
    for s in range(3):
        _png(tmp_path / "Images_png" / "000009_01_01" / f"{s:03d}.png", s)
    with pytest.raises(DataError, match=r"no DL_info\.csv"):
        DeepLesionDataset(tmp_path)
    with pytest.raises(DataError, match="slice_interval"):
        DeepLesionDataset(tmp_path, slices="all")
    ds = DeepLesionDataset(tmp_path, slices="all", slice_interval=1.0, z_spacing=1.0, window="hu")
    assert ds.labeled_flags() == [False, False, False]
    assert ds[0].image[:, 0, 0].tolist() == [0.0, 0.0, 1.0]  # slice -1 repeats slice 0


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    # the key slice's PNG is missing
    root = _layout(tmp_path / "a", [_row("000001_01_01", 12)], slices=range(10, 12))
    with pytest.raises(DataError, match="does not exist") as e:
        DeepLesionDataset(root)
    assert e.value.field == "line 2: File_name"
    # an 8-bit key slice
    root = _layout(tmp_path / "b", [_row("000001_01_01", 12)])
    _png(root / "Images_png" / "000001_01_01" / "012.png", 0, bits=8)
    with pytest.raises(DataError, match="8-bit") as e:
        DeepLesionDataset(root)
    assert e.value.field == "image.mode"
    # an 8-bit neighbour, found when read
    root = _layout(tmp_path / "c", [_row("000001_01_01", 12)])
    _png(root / "Images_png" / "000001_01_01" / "013.png", 0, bits=8)
    with pytest.raises(DataError, match="8-bit PNG"):
        DeepLesionDataset(root)[0]
    # a slice on disk outside the rows' Slice_range
    root = _layout(tmp_path / "d", [_row("000001_01_01", 12, rng="11, 13")])
    with pytest.raises(DataError, match=r"slice\(s\) \[10, 14\] outside the Slice_range"):
        DeepLesionDataset(root)
    # the PNG is smaller than Image_size
    root = _layout(tmp_path / "e", [_row("000001_01_01", 12, size="128, 128")])
    with pytest.raises(DataError, match="Image_size"):
        DeepLesionDataset(root)
    # a stray file in a series folder
    root = _layout(tmp_path / "f", [_row("000001_01_01", 12)])
    (root / "Images_png" / "000001_01_01" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"only <slice>\.png"):
        DeepLesionDataset(root)
    # two rows of one slice disagree on the split
    root = _layout(tmp_path / "g", [_row("000001_01_01", 12), _row("000001_01_01", 12, split=2)])
    with pytest.raises(DataError, match="differs from line 2"):
        DeepLesionDataset(root)


def test_cli_convert_writes_coco_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _layout(tmp_path / "dl", [_row("000001_01_01", 12), _row("000001_01_01", 10)])
    out = tmp_path / "gt.json"
    assert main(["data", "convert", "--format", "deeplesion", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 samples (2 key slices" in text and "wrote 2 images and 2 boxes" in text
    back = CocoDataset(out, image_root=root)
    assert back.file_names == ["Images_png/000001_01_01/010.png", "Images_png/000001_01_01/012.png"]
    assert back.annotation(1)[0].tolist() == [[10.0, 20.0, 30.0, 40.0]]
    assert main(["data", "stats", "--format", "deeplesion", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["objects"] == 2 and stats["report"]["neighbour_slices_substituted"] == 1


@pytest.mark.realdata
def test_real_key_slices_subset() -> None:
    root = SHARED / "deeplesion_keyslices"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    ds = build_dataset("deeplesion", root, info_csv=root / "DL_info_subset.csv")
    rows = list(csv.DictReader((root / "DL_info_subset.csv").open()))
    assert len(ds) == len(rows) == 23
    order = sorted(rows, key=lambda r: r["File_name"])
    for i, r in enumerate(order):
        want = [float(v) for v in r["Bounding_boxes"].split(",")]
        np.testing.assert_allclose(ds.annotation(i)[0][0].numpy(), want, rtol=1e-6)
    assert ds.official_parts()["test"] and not ds.official_parts()["train"]
    s = DeepLesionDataset(root, info_csv=root / "DL_info_subset.csv", window="hu")[0]
    # no neighbours were released: every channel is the key slice
    assert torch.equal(s.image[0], s.image[1]) and torch.equal(s.image[1], s.image[2])
    hu = np.asarray(Image.open(root / ds.file_names[0])).astype(np.int32) - 32768
    np.testing.assert_array_equal(s.image[1].numpy(), hu)
    assert ds.report["series_without_rows"] == 15


@pytest.mark.realdata
def test_real_lung_pet_ct_boxes_and_neighbours_match_the_dicom() -> None:
    pet = SHARED / "lung_pet_ct_dx"
    if not pet.is_dir():
        pytest.skip(f"real data not found at {pet}")
    pytest.importorskip("pydicom")
    from ssmd.data.volumes import read_dicom_series

    ds = DeepLesionDataset(pet / "deeplesion_format", slices="all", z_spacing=5.0, window="hu")
    assert len(ds) == 21 and ds.labeled_flags().count(True) == 11
    drawn = {
        int(r["instance_number"]): [float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        for r in csv.DictReader((pet / "boxes_per_slice.csv").open())
        if r["drawn_on_kept_series"] == "1"
    }
    for i, key in enumerate(ds.keys):
        boxes = ds.annotation(i)[0].tolist()
        assert boxes == ([drawn[key.slice_index]] if key.slice_index in drawn else [])
    vol = read_dicom_series(next((pet / "dicom").iterdir()))
    n = vol.meta["instance_numbers"]
    i13 = ds.file_names.index("Images_png/900001_01_01/013.png")
    img = ds[i13].image  # 5 mm apart = the native slices 12, 13, 14
    for ch, inst in enumerate((12, 13, 14)):
        np.testing.assert_array_equal(img[ch].numpy(), vol.array[n.index(inst)])
