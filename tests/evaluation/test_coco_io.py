"""Validation of COCO ground truth before pycocotools sees it: image sizes (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ssmd.evaluation import coco_ap
from ssmd.evaluation.coco_io import load_coco_gt
from ssmd.utils.errors import DataError


def _gt(**image: Any) -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10, **image}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}],
        "categories": [{"id": 1, "name": "nucleus"}],
    }


@pytest.mark.parametrize(
    ("field", "value"), [("width", "abc"), ("height", 0), ("width", 12.5), ("height", True)]
)
def test_image_size_that_is_not_a_positive_integer_is_refused(
    tmp_path: Path, field: str, value: Any
) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_gt(**{field: value})))
    with pytest.raises(DataError) as err:
        load_coco_gt(path)
    assert err.value.path == str(path) and err.value.field == f"images[0].{field}"
    assert err.value.value == value and "positive integer" in str(err.value)
    with pytest.raises(DataError, match=rf"images\[0\]\.{field}"):
        coco_ap(str(path), [])


def test_image_size_may_be_absent_for_box_ap() -> None:
    gt = _gt()
    del gt["images"][0]["width"], gt["images"][0]["height"]
    assert load_coco_gt(gt).image_ids == (1,)


def test_a_folder_given_as_ground_truth_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, not a JSON file"):
        load_coco_gt(tmp_path)
