"""dataset_stats / format_stats and the build_dataset factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data import DATASET_FORMATS, build_dataset, dataset_stats, format_stats


def test_stats_hand_counted(dsb_tools) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    big = np.zeros((40, 30, 3), np.uint8)
    root = dsb_tools.make(
        {
            "a": (img, [dsb_tools.rect(20, 30, 0, 4, 0, 4), dsb_tools.rect(20, 30, 0, 10, 0, 10)]),
            "b": (img, []),
            "c": (big, [dsb_tools.rect(40, 30, 0, 40, 0, 30)]),
        }
    )
    st = dataset_stats(build_dataset("dsb2018", root))
    assert st["images"] == 3 and st["objects"] == 3 and st["labeled_images"] == 3
    assert st["objects_per_image"] == {"min": 0, "mean": 1.0, "median": 1.0, "max": 2}
    assert (
        st["objects_per_image_histogram"]["0"] == 1
        and st["objects_per_image_histogram"]["1-9"] == 2
    )
    # sizes sqrt(w*h): 4, 10, sqrt(1200)=34.6
    assert st["box_size_histogram"] == {
        "0-8": 1,
        "8-16": 1,
        "16-32": 0,
        "32-64": 1,
        "64-128": 0,
        ">=128": 0,
    }
    assert st["box_size_coco"] == {"small": 2, "medium": 1, "large": 0}
    assert st["image_sizes"] == {"30x20": 2, "30x40": 1}
    assert st["objects_per_category"] == {"nucleus": 3}
    json.dumps(st)  # JSON-ready
    text = format_stats(st)
    assert "images: 3 (3 labeled)" in text and "| 30x20 | 2 |" in text


def test_factory_formats(tmp_path: Path) -> None:
    names = DATASET_FORMATS.names()
    # formats are added by several modules at once: check the core ones and the order
    assert {"busi", "coco", "dsb2018", "images", "synthetic"} <= set(names)
    assert names == sorted(names)
    with pytest.raises(KeyError, match="known: " + ", ".join(names)):
        build_dataset("voc", tmp_path)
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset("dsb2018")
    syn = build_dataset("synthetic", tmp_path / "cache", n_images=2, image_size=32, seed=0)
    assert len(syn) == 2 and syn.format_name == "synthetic"
    assert str(syn.source).startswith(str(tmp_path / "cache"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "gt.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
                "annotations": [],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    coco = build_dataset("coco", tmp_path / "gt.json", image_root=tmp_path)
    assert coco.file_names == ["x.png"]
