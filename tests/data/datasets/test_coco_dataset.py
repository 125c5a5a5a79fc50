"""COCO JSON: xywh -> xyxy, iscrowd -> ignore, contiguous labels, validation, exact round trip."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.data import CocoDataset, DSB2018Dataset, to_coco_dict, write_coco
from ssmd.utils.errors import DataError


def _coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 7, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 3, "file_name": "a.png", "width": 20, "height": 10},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 5,
                "bbox": [1, 2, 3, 4],
                "area": 12,
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [10.5, 0.25, 2.5, 5.0]},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 40, 30], "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 9, "bbox": [0, 0, 20, 10], "iscrowd": 0},
        ],
        "categories": [
            {"id": 9, "name": "mitosis"},
            {"id": 5, "name": "nucleus", "supercategory": "cell"},
        ],
    }


def _write(tmp_path: Path, data: Any, images: bool = True) -> Path:
    if images:
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "b.png")
        Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "a.png")
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(data))
    return p


def test_read_boxes_labels_ignore(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _coco()))
    assert ds.file_names == ["a.png", "b.png"]  # records sorted by file name
    assert [r.image_id for r in ds.records] == [3, 7]  # COCO ids kept
    assert ds.categories[0]["id"] == 5 and ds.categories[1]["id"] == 9  # label order = id order
    assert ds.label_to_category == {1: 5, 2: 9}
    boxes, labels = ds.annotation(1)
    assert boxes.tolist() == [[1.0, 2.0, 4.0, 6.0], [10.5, 0.25, 13.0, 5.25]]
    assert labels.tolist() == [1, 2]
    assert ds.ignore_regions(1).tolist() == [[0.0, 0.0, 40.0, 30.0]]
    s = ds[1]
    assert s.ignore.tolist() == [[0.0, 0.0, 40.0, 30.0]] and s.boxes.shape == (2, 4)
    assert s.image.shape == (3, 30, 40)
    assert ds.annotation(0)[1].tolist() == [2]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    ds = CocoDataset(_write(tmp_path, _coco()))
    out = write_coco(ds, tmp_path / "out.json")
    again = CocoDataset(out, image_root=tmp_path)
    assert again.file_names == ds.file_names
    assert [r.image_id for r in again.records] == [r.image_id for r in ds.records]
    assert again.categories == ds.categories
    for i in range(len(ds)):
        for a, b in zip(ds.annotation(i), again.annotation(i), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(ds.ignore_annotation(i), again.ignore_annotation(i), strict=True):
            assert torch.equal(a, b)
    assert to_coco_dict(again) == json.loads(out.read_text())
    ann = json.loads(out.read_text())["annotations"]
    assert ann[0] == {
        "id": 1,
        "image_id": 3,
        "category_id": 9,
        "bbox": [0, 0, 20, 10],
        "area": 200,
        "iscrowd": 0,
    }
    assert ann[-1]["iscrowd"] == 1 and ann[-1]["category_id"] == 5


def test_round_trip_exact_for_non_representable_floats(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"] = [
        {"id": 1, "image_id": 7, "category_id": 5, "bbox": [0.1, 0.7, 10.3, 3.3]},
        {"id": 2, "image_id": 7, "category_id": 5, "bbox": [1 / 3, 2 / 3, 11.1, 0.01]},
    ]
    ds = CocoDataset(_write(tmp_path, data))
    again = CocoDataset(write_coco(ds, tmp_path / "o.json"), image_root=tmp_path)
    assert torch.equal(ds.annotation(1)[0], again.annotation(1)[0])


def test_export_any_dataset_dsb(dsb_tools, tmp_path: Path) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    root = dsb_tools.make({"s1": (img, [dsb_tools.rect(20, 30, 2, 5, 3, 9)]), "s0": (img, [])})
    dsb = DSB2018Dataset(root)
    d = to_coco_dict(dsb)
    assert d["images"] == [
        {"id": 1, "file_name": "s0/images/s0.png", "width": 30, "height": 20},
        {"id": 2, "file_name": "s1/images/s1.png", "width": 30, "height": 20},
    ]
    assert d["annotations"] == [
        {"id": 1, "image_id": 2, "category_id": 1, "bbox": [3, 2, 6, 3], "area": 18, "iscrowd": 0}
    ]
    back = CocoDataset(write_coco(dsb, tmp_path / "dsb.json"), image_root=root)
    assert back.file_names == dsb.file_names
    assert torch.equal(back.annotation(1)[0], dsb.annotation(1)[0])


def _mutate(fn: Any) -> dict[str, Any]:
    d = copy.deepcopy(_coco())
    fn(d)
    return d


BAD_CASES = [
    ("images", lambda d: d.pop("images"), "images"),
    ("annotations", lambda d: d.pop("annotations"), "annotations"),
    ("categories", lambda d: d.pop("categories"), "categories"),
    ("not list", lambda d: d.update(images={}), "images"),
    ("missing image field", lambda d: d["images"][0].pop("width"), "images[0].width"),
    ("image id type", lambda d: d["images"][1].update(id="3"), "images[1].id"),
    ("bool id", lambda d: d["images"][1].update(id=True), "images[1].id"),
    ("zero height", lambda d: d["images"][0].update(height=0), "images[0].height"),
    ("duplicate image id", lambda d: d["images"][1].update(id=7), "images[1].id"),
    (
        "duplicate file name",
        lambda d: d["images"][1].update(file_name="b.png"),
        "images[1].file_name",
    ),
    ("missing bbox", lambda d: d["annotations"][1].pop("bbox"), "annotations[1].bbox"),
    ("bbox type", lambda d: d["annotations"][1].update(bbox="1,2,3,4"), "annotations[1].bbox"),
    ("bbox len", lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), "annotations[1].bbox"),
    (
        "bbox nan",
        lambda d: d["annotations"][1].update(bbox=[1, 2, float("nan"), 3]),
        "annotations[1].bbox",
    ),
    (
        "negative xy",
        lambda d: d["annotations"][0].update(bbox=[-1, 2, 3, 4]),
        "annotations[0].bbox",
    ),
    ("zero size", lambda d: d["annotations"][0].update(bbox=[1, 2, 0, 4]), "annotations[0].bbox"),
    ("inverted", lambda d: d["annotations"][0].update(bbox=[5, 2, -3, 4]), "annotations[0].bbox"),
    ("outside", lambda d: d["annotations"][3].update(bbox=[5, 0, 16, 10]), "annotations[3].bbox"),
    (
        "unknown category",
        lambda d: d["annotations"][2].update(category_id=4),
        "annotations[2].category_id",
    ),
    ("unknown image", lambda d: d["annotations"][2].update(image_id=99), "annotations[2].image_id"),
    ("annotation id", lambda d: d["annotations"][2].pop("id"), "annotations[2].id"),
    ("duplicate ann id", lambda d: d["annotations"][2].update(id=1), "annotations[2].id"),
    ("iscrowd", lambda d: d["annotations"][0].update(iscrowd=2), "annotations[0].iscrowd"),
    ("category name", lambda d: d["categories"][0].pop("name"), "categories[0].name"),
    ("duplicate category", lambda d: d["categories"][1].update(id=9), "categories[1].id"),
    ("no images", lambda d: d.update(images=[], annotations=[]), "images"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_validation_errors_name_file_and_field(
    tmp_path: Path, case: str, mutate: Any, field: str
) -> None:
    path = _write(tmp_path, _mutate(mutate))
    with pytest.raises(DataError) as e:
        CocoDataset(path)
    assert e.value.field == field, case
    assert "gt.json" in str(e.value) and repr(field) in str(e.value)


def test_bad_json_and_missing_image_file(tmp_path: Path) -> None:
    p = tmp_path / "gt.json"
    p.write_text('{"images": [')
    with pytest.raises(DataError, match=r"gt\.json.*'json'"):
        CocoDataset(p)
    path = _write(tmp_path, _coco(), images=False)
    with pytest.raises(DataError, match=r"images\[1\]\.file_name.*a\.png"):
        CocoDataset(path)
    assert len(CocoDataset(path, check_files=False)) == 2


def test_decoded_size_must_match_record(tmp_path: Path) -> None:
    data = _coco()
    data["images"][1]["width"] = 21
    data["annotations"] = []
    ds = CocoDataset(_write(tmp_path, data))
    with pytest.raises(DataError, match=r"a\.png.*image\.size"):
        ds[0]


def test_a_folder_as_the_coco_file_is_a_data_error(tmp_path: Path) -> None:
    """Issue 24: ``data.format=coco data.root=<a folder>`` was an IsADirectoryError traceback."""
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(
        DataError,
        match=r"is a folder; the coco format needs the COCO JSON file \(JSON files in it: train\.json\)",
    ):
        CocoDataset(tmp_path)
