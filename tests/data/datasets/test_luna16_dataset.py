"""Luna16Dataset: real LIDC slabs, hand-made scans with outside/unknown/clipped nodules, 3D JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmd.data import build_dataset, make_split
from ssmd.data.datasets.luna16 import (
    Luna16Dataset,
    VolumeSample,
    to_volume_json,
    volume_stats,
)
from ssmd.data.splits import apply_split
from ssmd.data.volumes import Volume, write_metaimage
from ssmd.utils.errors import DataError

pytest.importorskip("SimpleITK")

LIDC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "lidc_subvolumes"
UID_0001 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


def _scans(root: Path) -> Path:
    """Two 10x10x10 scans (1 x 1 x 2 mm) in LUNA16-like subset folders, and a CSV."""
    for sub, uid, origin in (
        ("subset0", "1.1", (0.0, 0.0, 0.0)),
        ("subset1", "2.2", (100.0, 0.0, 0.0)),
    ):
        a = np.full((10, 10, 10), -1000, np.int16)
        a[3, 5, 4] = 100  # voxel (x 4, y 5, z 3)
        write_metaimage(Volume(a, (1.0, 1.0, 2.0), origin), root / sub / f"{uid}.mhd")
    (root / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        "1.1,4,5,6,4\n"  # inside: box (2.5, 3.5, 2.5, 6.5, 7.5, 4.5)
        "1.1,-3,5,6,4\n"  # centre outside scan 1.1
        "2.2,100,5,6,4\n"  # inside but clipped at x = 0
        "9.9,0,0,0,5\n"  # no such scan
    )
    return root


def test_boxes_and_report_by_hand(tmp_path: Path) -> None:
    root = _scans(tmp_path)
    ds = Luna16Dataset(root, annotations=root / "annotations.csv")
    assert ds.file_names == ["subset0/1.1.mhd", "subset1/2.2.mhd"]
    assert [r.image_id for r in ds.records] == [1, 2]
    boxes, labels = ds.annotation(0)
    assert boxes.tolist() == [[2.5, 3.5, 2.5, 6.5, 7.5, 4.5]] and labels.tolist() == [1]
    assert ds.annotation(1)[0].tolist() == [[0.0, 3.5, 2.5, 2.5, 7.5, 4.5]]
    r = ds.report
    assert (r["annotation_rows"], r["boxes"], r["clipped"]) == (4, 2, 1)
    assert r["unknown_series"] == {"9.9": 1}
    assert [(o["line"], o["seriesuid"], o["center_voxel"]) for o in r["outside"]] == [
        (3, "1.1", [-3.0, 5.0, 3.0])
    ]
    text = "\n".join(ds.report_lines())
    assert "1 nodule(s) with the centre outside" in text and "line 3" in text
    assert "1 row(s) for 1 seriesuid(s) with no .mhd" in text
    with pytest.raises(DataError, match=r"no 9\.9\.mhd under") as e:
        Luna16Dataset(root, annotations=root / "annotations.csv", unknown_series="error")
    assert e.value.field == "line 5: seriesuid"


def test_items_are_volume_samples_also_in_views(tmp_path: Path) -> None:
    root = _scans(tmp_path)
    ds = build_dataset("luna16", root, annotations=root / "annotations.csv")
    s = ds[0]
    assert isinstance(s, VolumeSample) and s.spatial_dims == 3
    assert s.image.shape == (1, 10, 10, 10) and s.image.dtype == torch.float32
    assert float(s.image[0, 3, 5, 4]) == 100.0 and s.spacing == (1.0, 1.0, 2.0)
    split = make_split(ds, seed=0, fractions=(0.5, 0.5, 0.0))
    view = apply_split(ds, split, "train")
    item = view[0]
    assert isinstance(item, VolumeSample) and item.boxes.shape[1] == 6
    assert isinstance(view.subset([0])[0], VolumeSample)


def test_resampled_items_recompute_boxes_from_world(tmp_path: Path) -> None:
    root = _scans(tmp_path)
    ds = Luna16Dataset(root, annotations=root / "annotations.csv", spacing=1.0, window="luna16")
    s = ds[0]
    assert s.image.shape == (1, 20, 10, 10) and float(s.image.max()) <= 1.0
    # centre (4, 5, 6) mm -> voxel (4, 5, 6) on the 1 mm grid; half size 2 voxels
    assert s.boxes.tolist() == [[2.5, 3.5, 4.5, 6.5, 7.5, 8.5]]


def test_unlabeled_without_annotations_and_bad_folders(tmp_path: Path) -> None:
    root = _scans(tmp_path)
    ds = Luna16Dataset(root)
    assert ds.labeled_flags() == [False, False] and ds.annotation(0)[0].shape == (0, 6)
    (root / "subset1" / "1.1.mhd").write_text((root / "subset0" / "1.1.mhd").read_text())
    with pytest.raises(DataError, match="one file per scan"):
        Luna16Dataset(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"holds no \.mhd"):
        Luna16Dataset(empty)
    raw = root / "subset0" / "1.1.zraw"
    raw.write_bytes(raw.read_bytes()[:-3])
    (root / "subset1" / "1.1.mhd").unlink()
    with pytest.raises(DataError, match="CompressedDataSize"):
        Luna16Dataset(root)


def test_volume_json_and_stats(tmp_path: Path) -> None:
    root = _scans(tmp_path)
    ds = Luna16Dataset(root, annotations=root / "annotations.csv")
    data = json.loads(json.dumps(to_volume_json(ds)))
    assert [im["depth"] for im in data["images"]] == [10, 10]
    ann = data["annotations"][0]
    assert ann["bbox"] == [2.5, 3.5, 2.5, 4, 4, 2]  # x, y, z, w, h, d voxels
    assert ann["area"] == 32 and ann["center_mm"] == [4.0, 5.0, 6.0] and ann["diameter_mm"] == 4.0
    st = volume_stats(ds)
    assert st["objects"] == 2 and st["objects_per_scan"] == {"0": 0, "1": 2, "2": 0, ">=3": 0}
    assert st["diameter_mm"]["4-6"] == 2 and st["spacing_z_mm"] == {"2": 2}


@pytest.mark.realdata
def test_real_lidc_slabs() -> None:
    if not LIDC.is_dir():
        pytest.skip(f"real data not found at {LIDC}")
    ds = Luna16Dataset(LIDC / "mhd", annotations=LIDC / "annotations_luna16.csv")
    assert len(ds) == 2 and ds.records[0].file_name == f"{UID_0001}.mhd"
    (p,) = ds.nodules(0)
    assert np.round(p.center_voxel, 2).tolist() == [316.03, 367.0, 6.65]  # the listed indices
    box = ds.annotation(0)[0][0].tolist()
    half = 23.35064438 / 2 / np.array([0.703125, 0.703125, 2.5])
    np.testing.assert_allclose(box[:3], np.array(p.center_voxel) + 0.5 - half, atol=1e-4)
    assert ds.annotation(1)[0].shape == (0, 6)  # LIDC-IDRI-0002: no LUNA16 nodule
    assert ds.report["outside"] == [] and ds.report["clipped"] == 0
    s = ds[0]
    assert s.image.shape == (1, 16, 512, 512)
    assert float(s.image[0, 7, 367, 316]) == 91.0  # hu_at_centre


def test_cli_convert_and_stats_report_outside_and_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ssmd.cli.main import main

    root = _scans(tmp_path)
    out = tmp_path / "gt.json"
    args = ["--format", "luna16", str(root), "--annotations", str(root / "annotations.csv")]
    assert main(["data", "convert", *args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 annotation rows -> 2 boxes (1 clipped" in text
    assert "line 3: 1.1 centre voxel (-3.00, 5.00, 3.00)" in text
    assert "wrote 2 images and 2 boxes" in text
    data = json.loads(out.read_text())
    assert len(data["annotations"]) == 2 and data["info"]["spatial_dims"] == 3
    assert main(["data", "stats", *args]) == 0
    assert "scans: 2 (2 labeled)" in capsys.readouterr().out
    bad = tmp_path / "images"
    bad.mkdir()
    assert main(["data", "stats", "--format", "images", str(bad), "--annotations", "x.csv"]) == 2
    assert "--annotations applies to --format luna16 or deeplesion" in capsys.readouterr().err
