"""ssmd.data.checks: every image and mask decoded fully, findings name file/field/value, cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ssmd.data.checks import FileCheckCache, check_dataset, default_cache_file
from ssmd.data.datasets.coco import CocoDataset
from ssmd.data.datasets.dsb2018 import DSB2018Dataset

DsbTools = Any  # the dsb_tools fixture of tests/data/conftest.py


def _image(seed: int, h: int = 32, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _truncate(path: Path, keep: int = 200) -> None:
    data = path.read_bytes()
    assert len(data) > keep  # the test must really cut pixels off
    path.write_bytes(data[:keep])


def _three(dsb_tools: DsbTools) -> Path:
    r = dsb_tools.rect
    return dsb_tools.make(
        {
            "a": (_image(0), [r(32, 40, 2, 10, 3, 12), r(32, 40, 15, 30, 20, 38)]),
            "b": (_image(1), [r(32, 40, 5, 9, 5, 9)]),
            "c": (_image(2), [r(32, 40, 0, 4, 0, 4)]),
        }
    )


def test_a_clean_folder_passes_with_class_counts(dsb_tools: DsbTools) -> None:
    root = _three(dsb_tools)
    rep = check_dataset(DSB2018Dataset(root))
    assert rep.ok, rep.format_text()
    assert (rep.images, rep.masks, rep.labeled) == (3, 4, 3)
    assert rep.objects_per_category == {"nucleus": 4}
    assert rep.images_per_category == {"nucleus": 3}
    assert rep.duplicates is not None and rep.duplicates.groups == []
    assert "OK" in rep.format_text()


def test_a_png_truncated_to_200_bytes_fails_naming_the_file(dsb_tools: DsbTools) -> None:
    root = _three(dsb_tools)
    bad = root / "b" / "images" / "b.png"
    _truncate(bad)
    ds = DSB2018Dataset(root)  # the header survives: building the dataset does not notice
    assert ds.records[1].width == 40
    rep = check_dataset(ds)
    assert not rep.ok
    assert [(f.path, f.field) for f in rep.errors] == [(str(bad), "image")]
    assert str(bad) in rep.format_text() and "FAILED: 1 errors" in rep.format_text()


def test_a_truncated_mask_and_an_all_zero_mask_are_errors(dsb_tools: DsbTools) -> None:
    r = dsb_tools.rect
    big = np.zeros((32, 40), np.uint8)
    big[:, :] = np.random.default_rng(3).integers(1, 255, (32, 40), dtype=np.uint8)
    root = dsb_tools.make(
        {
            "a": (_image(0), [big]),
            "b": (_image(1), [np.zeros((32, 40), np.uint8)]),
            "c": (_image(2), [r(32, 40, 0, 4, 0, 4)]),
        }
    )
    _truncate(root / "a" / "masks" / "m000.png")
    rep = check_dataset(DSB2018Dataset(root))
    errors = {(Path(f.path).parent.parent.name, f.field) for f in rep.errors}
    assert errors == {("a", "mask"), ("b", "mask.pixels")}
    assert ("mask.pixels", "warning") in {(f.field, f.level) for f in rep.warnings}


def test_a_mask_of_another_size_is_named(dsb_tools: DsbTools) -> None:
    root = dsb_tools.make({"a": (_image(0), [dsb_tools.rect(30, 40, 1, 5, 1, 5)])})
    rep = check_dataset(DSB2018Dataset(root))
    bad = [f for f in rep.errors if f.field == "mask.size"]
    assert bad and bad[0].value == (40, 30) and bad[0].path.endswith("m000.png")


def test_duplicates_and_blank_images_are_warnings(dsb_tools: DsbTools) -> None:
    r = dsb_tools.rect
    same = _image(7)
    root = dsb_tools.make(
        {
            "a": (same, [r(32, 40, 1, 5, 1, 5)]),
            "b": (same.copy(), [r(32, 40, 1, 5, 1, 5)]),
            "c": (np.full((32, 40, 3), 9, np.uint8), [r(32, 40, 1, 5, 1, 5)]),
        }
    )
    rep = check_dataset(DSB2018Dataset(root))
    assert rep.ok
    assert rep.duplicates is not None
    assert [g.members for g in rep.duplicates.groups] == [("a/images/a.png", "b/images/b.png")]
    assert rep.duplicates.groups[0].pixel_identical
    fields = {(f.path.split("/")[0] if "/" in f.path else f.path, f.field) for f in rep.warnings}
    assert ("a", "image") in fields
    blank = [f for f in rep.warnings if f.field == "image.values"]
    assert len(blank) == 1 and blank[0].path.endswith("c.png")


def test_the_cache_skips_unchanged_files_and_rereads_changed_ones(
    dsb_tools: DsbTools, tmp_path: Path
) -> None:
    root = _three(dsb_tools)
    cache_file = tmp_path / "cache.json"
    first = check_dataset(DSB2018Dataset(root), FileCheckCache(cache_file))
    assert (first.decoded, first.cached) == (7, 0)  # 3 images + 4 masks
    assert json.loads(cache_file.read_text())["format"] == "ssmd-data-check"
    again = DSB2018Dataset(root)

    def no_decoding(i: int) -> None:
        raise AssertionError("boxes of unchanged masks come from the cache")

    again._compute_boxes = no_decoding  # type: ignore[method-assign,assignment]
    second = check_dataset(again, FileCheckCache(cache_file))
    assert (second.decoded, second.cached) == (0, 7)
    assert second.to_dict()["objects_per_category"] == first.to_dict()["objects_per_category"]
    bad = root / "c" / "images" / "c.png"
    _truncate(bad)
    os.utime(bad, ns=(1, 1))  # a new mtime even on coarse file-system clocks
    third = check_dataset(DSB2018Dataset(root), FileCheckCache(cache_file))
    assert third.decoded == 1 and [f.path for f in third.errors] == [str(bad)]


def test_default_cache_file_follows_ssmd_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSMD_CACHE_DIR", str(tmp_path))
    p = default_cache_file(tmp_path / "x", "dsb2018")
    assert p.parent == tmp_path / "data-check" and p.name.startswith("dsb2018-")


def test_coco_size_mismatch_and_class_imbalance(tmp_path: Path) -> None:
    Image.fromarray(_image(0)).save(tmp_path / "a.png")
    Image.fromarray(_image(1)).save(tmp_path / "b.png")
    anns = [
        {"id": k + 1, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3, 3], "iscrowd": 0}
        for k in range(11)
    ]
    anns.append({"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 1, 3, 3], "iscrowd": 0})
    gt = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 41, "height": 32},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 32},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "big"}, {"id": 2, "name": "rare"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rep = check_dataset(CocoDataset(tmp_path / "gt.json"))
    assert [(Path(f.path).name, f.field, f.value) for f in rep.errors] == [
        ("a.png", "image.size", (40, 32))
    ]
    assert rep.objects_per_category == {"big": 11, "rare": 1}
    assert any(f.field == "categories" and f.value == "rare" for f in rep.warnings)
    assert rep.empty_labeled == ["a.png"]


def test_busi_normal_masks_agree_with_no_object_and_labels_are_counted(tmp_path: Path) -> None:
    from ssmd.data.datasets.busi import BUSIDataset

    base = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "normal"):
        (base / cls).mkdir(parents=True)
    lesion = np.zeros((32, 40), np.uint8)
    lesion[4:12, 5:20] = 255
    same = _image(5)[:, :, 0]
    Image.fromarray(same).save(base / "benign" / "benign (1).png")
    Image.fromarray(lesion).save(base / "benign" / "benign (1)_mask.png")
    Image.fromarray(same.copy()).save(base / "normal" / "normal (1).png")  # a copy, relabeled
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(base / "normal" / "normal (1)_mask.png")
    rep = check_dataset(BUSIDataset(tmp_path))
    assert rep.ok and rep.masks == 2
    assert not [f for f in rep.findings if f.field == "mask.pixels"]  # normal: no object, agreed
    assert rep.empty_labeled == ["normal/normal (1).png"]
    assert rep.image_labels == {"benign": 1, "normal": 1}
    assert rep.duplicates is not None and [g.conflicting for g in rep.duplicates.groups] == [True]
    conflict = [f for f in rep.warnings if "differ" in f.message]
    assert len(conflict) == 1 and "normal/normal (1).png" in conflict[0].message


def test_a_folder_of_unlabeled_images_has_no_balance_warnings(tmp_path: Path) -> None:
    from ssmd.data.datasets.folder import ImageFolderDataset

    for k in range(2):
        Image.fromarray(_image(k)).save(tmp_path / f"{k}.png")
    _truncate_target = tmp_path / "1.png"
    _truncate(_truncate_target)
    rep = check_dataset(ImageFolderDataset(tmp_path))
    assert rep.labeled == 0 and rep.warnings == []
    assert [(f.path, f.field) for f in rep.errors] == [(str(_truncate_target), "image")]
