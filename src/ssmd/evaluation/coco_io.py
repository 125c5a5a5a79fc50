"""Loading and validating COCO ground truth and COCO result lists for evaluation.

Shared by :mod:`ssmd.evaluation.coco_map` and :mod:`ssmd.evaluation.froc`. The
checks here run *before* pycocotools sees the data, so that bad input fails with a
:class:`~ssmd.utils.errors.DataError` naming the file, the field and the value,
instead of an ``AssertionError`` or ``KeyError`` deep inside pycocotools, or (worse)
a silently wrong number: pycocotools keys annotations by ``id``, so two GT
annotations with the same ``id`` would silently drop one of them.

Both loaders return *copies*: pycocotools writes into the annotation dicts it is
given (``ignore``, ``area``, ``segmentation``, ``id``), and the caller's data must
not change because it was evaluated.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmd.utils.errors import DataError

__all__ = [
    "GT_SOURCE",
    "PRED_SOURCE",
    "CocoGroundTruth",
    "load_coco_gt",
    "load_coco_results",
]

GT_SOURCE = "<ground-truth dict>"
"""The ``path`` that errors name when the ground truth was passed as a dict."""

PRED_SOURCE = "<predictions list>"
"""The ``path`` that errors name when the predictions were passed as a list."""


@dataclass(frozen=True)
class CocoGroundTruth:
    """A validated COCO ground-truth dataset.

    Attributes:
        dataset: a COCO dict (``images``, ``annotations``, ``categories``) whose
            annotation dicts are copies, each with ``iscrowd`` and ``area`` filled in.
        source: the file it came from, or :data:`GT_SOURCE`.
        image_ids: the image ids in file order.
        category_ids: the category ids in file order.
    """

    dataset: dict[str, Any]
    source: str
    image_ids: tuple[Any, ...]
    category_ids: tuple[int, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_image_id(value: Any) -> bool:
    # COCO image ids are ints; pycocotools also works with string ids.
    return _is_int(value) or isinstance(value, str)


def _check_bbox(bbox: Any, source: str, field: str) -> list[float]:
    """Validate a COCO ``[x, y, w, h]`` box: 4 finite reals with ``w, h >= 0``."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise DataError(source, field, bbox, "must be a list [x, y, w, h] of 4 numbers")
    if not all(_is_real(v) for v in bbox):
        raise DataError(source, field, bbox, "every coordinate of [x, y, w, h] must be a number")
    values = [float(v) for v in bbox]
    if not all(math.isfinite(v) for v in values):
        raise DataError(source, field, bbox, "coordinates must be finite (no NaN or inf)")
    if values[2] < 0 or values[3] < 0:
        raise DataError(source, field, bbox, "width and height must be >= 0 (COCO xywh, not xyxy?)")
    return values


def _load_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    try:
        with p.open() as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(p, what, str(p), "file not found") from None
    except IsADirectoryError:
        raise DataError(p, what, str(p), "is a folder, not a JSON file") from None
    except json.JSONDecodeError as e:
        raise DataError(p, what, str(p), f"not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise DataError(p, what, str(p), "not a text (UTF-8 JSON) file") from None
    except OSError as e:
        raise DataError(p, what, str(p), f"cannot be read: {e.strerror}") from None


def load_coco_gt(gt: Mapping[str, Any] | str | Path) -> CocoGroundTruth:
    """Validate a COCO ground-truth dict (or JSON file) and return a safe copy.

    Checks that ``images``, ``annotations`` and ``categories`` are lists; that image,
    category and annotation ids are present and unique; that an image's ``width`` and
    ``height``, when given, are positive integers; that every annotation names
    a known image and category and has a valid ``[x, y, w, h]`` bbox. Fills
    ``iscrowd = 0`` when absent (pycocotools would raise ``KeyError``) and
    ``area = w * h`` when absent (box datasets have no segmentation area; pycocotools
    uses ``area`` only for the small/medium/large ranges).

    Args:
        gt: a COCO dict or the path of a COCO JSON file.

    Returns:
        The validated copy with its source and id lists.

    Raises:
        DataError: naming the file, the field (e.g. ``annotations[3].bbox``) and the value.
    """
    if isinstance(gt, (str, Path)):
        source = str(gt)
        data = _load_json(gt, "ground truth")
    else:
        source = GT_SOURCE
        data = gt
    if not isinstance(data, Mapping):
        raise DataError(
            source, "<root>", type(data).__name__, "COCO ground truth must be a JSON object"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(source, key, None, f"COCO ground truth needs a {key!r} list")
        if not isinstance(data[key], list):
            raise DataError(source, key, type(data[key]).__name__, "must be a list")

    image_ids: list[Any] = []
    seen_images: set[Any] = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, Mapping) or "id" not in img:
            raise DataError(source, f"images[{i}].id", None, "every image needs an 'id'")
        iid = img["id"]
        if not _is_image_id(iid):
            raise DataError(source, f"images[{i}].id", iid, "image id must be an int (or str)")
        if iid in seen_images:
            raise DataError(source, f"images[{i}].id", iid, "duplicate image id")
        for key in ("width", "height"):  # optional for box AP, but never a non-number
            if key in img and not (_is_int(img[key]) and img[key] > 0):
                raise DataError(
                    source, f"images[{i}].{key}", img[key], "must be a positive integer"
                )
        seen_images.add(iid)
        image_ids.append(iid)

    category_ids: list[int] = []
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise DataError(source, f"categories[{i}].id", None, "every category needs an 'id'")
        cid = cat["id"]
        if not _is_int(cid):
            raise DataError(source, f"categories[{i}].id", cid, "category id must be an int")
        if cid in category_ids:
            raise DataError(source, f"categories[{i}].id", cid, "duplicate category id")
        category_ids.append(int(cid))
    known_cats = set(category_ids)

    annotations: list[dict[str, Any]] = []
    seen_ann_ids: set[Any] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, Mapping):
            raise DataError(source, f"annotations[{i}]", ann, "every annotation must be an object")
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise DataError(
                    source, f"annotations[{i}].{key}", None, f"missing required field {key!r}"
                )
        aid = ann["id"]
        if not _is_int(aid):
            raise DataError(source, f"annotations[{i}].id", aid, "annotation id must be an int")
        if aid in seen_ann_ids:
            raise DataError(
                source,
                f"annotations[{i}].id",
                aid,
                "duplicate annotation id (pycocotools would drop one)",
            )
        seen_ann_ids.add(aid)
        if ann["image_id"] not in seen_images:
            raise DataError(
                source, f"annotations[{i}].image_id", ann["image_id"], "no image with this id"
            )
        if not _is_int(ann["category_id"]) or ann["category_id"] not in known_cats:
            raise DataError(
                source,
                f"annotations[{i}].category_id",
                ann["category_id"],
                "not one of the categories' ids",
            )
        x, y, w, h = _check_bbox(ann["bbox"], source, f"annotations[{i}].bbox")
        copy = dict(ann)
        copy["bbox"] = [x, y, w, h]
        crowd = copy.setdefault("iscrowd", 0)
        if crowd not in (0, 1, True, False):
            raise DataError(source, f"annotations[{i}].iscrowd", crowd, "must be 0 or 1")
        copy["iscrowd"] = int(crowd)
        area = copy.setdefault("area", w * h)
        if not _is_real(area) or not math.isfinite(float(area)) or float(area) < 0:
            raise DataError(source, f"annotations[{i}].area", area, "must be a finite number >= 0")
        annotations.append(copy)

    dataset: dict[str, Any] = {
        "images": [dict(img) for img in data["images"]],
        "annotations": annotations,
        "categories": [dict(cat) for cat in data["categories"]],
    }
    if "info" in data:
        dataset["info"] = data["info"]
    return CocoGroundTruth(dataset, source, tuple(image_ids), tuple(category_ids))


def load_coco_results(
    results: Sequence[Mapping[str, Any]] | str | Path, gt: CocoGroundTruth
) -> list[dict[str, Any]]:
    """Validate a COCO detection result list (or JSON file) against ``gt``; return copies.

    Every entry needs ``image_id`` (an image of ``gt``), ``category_id`` (a category
    of ``gt``), ``bbox`` (``[x, y, w, h]``, finite, ``w, h >= 0``) and ``score`` (a
    finite number). Each returned dict holds only those four keys, so that
    pycocotools' ``loadRes`` (which writes ``area``, ``id``, ``segmentation`` into
    each entry) cannot touch the caller's list.

    Raises:
        DataError: naming the file, the field (e.g. ``[12].bbox``) and the value.
    """
    if isinstance(results, (str, Path)):
        source = str(results)
        data = _load_json(results, "predictions")
    else:
        source = PRED_SOURCE
        data = results
    if not isinstance(data, (list, tuple)):
        raise DataError(
            source, "<root>", type(data).__name__, "COCO results must be a list of objects"
        )
    images = set(gt.image_ids)
    cats = set(gt.category_ids)
    out: list[dict[str, Any]] = []
    for i, r in enumerate(data):
        if not isinstance(r, Mapping):
            raise DataError(source, f"[{i}]", r, "every result must be an object")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in r:
                raise DataError(source, f"[{i}].{key}", None, f"missing required field {key!r}")
        iid = r["image_id"]
        if not _is_image_id(iid):
            raise DataError(source, f"[{i}].image_id", iid, "image id must be an int (or str)")
        if iid not in images:
            raise DataError(source, f"[{i}].image_id", iid, f"no image with this id in {gt.source}")
        cid = r["category_id"]
        if not _is_int(cid):
            raise DataError(source, f"[{i}].category_id", cid, "category id must be an int")
        if cid not in cats:
            raise DataError(
                source, f"[{i}].category_id", cid, f"unknown category (not in {gt.source})"
            )
        bbox = _check_bbox(r["bbox"], source, f"[{i}].bbox")
        score = r["score"]
        if not _is_real(score) or not math.isfinite(float(score)):
            raise DataError(source, f"[{i}].score", score, "score must be a finite number")
        if _is_int(iid):
            iid = int(iid)  # numpy ints -> int, so ids compare and serialise like the GT's
        out.append({"image_id": iid, "category_id": int(cid), "bbox": bbox, "score": float(score)})
    return out
