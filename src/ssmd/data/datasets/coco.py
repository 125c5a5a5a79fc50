"""COCO detection JSON: read with full validation, and write any dataset.

Reading: ``bbox`` ``[x, y, w, h]`` becomes ``xyxy`` absolute pixels (the convention of
:mod:`ssmd.structures.boxes`); the addition is done in float64 and the result stored
as float32. Annotations with ``iscrowd=1`` are ignore regions
(:attr:`~ssmd.structures.sample.Sample.ignore`), not boxes. Category ids are mapped to
contiguous labels ``1..K`` in increasing id order (``categories`` keeps that order, so
:attr:`~ssmd.data.datasets.base.DetectionDataset.label_to_category` maps back).
Image ids are kept as written; records are ordered by ``file_name``. ``segmentation``
and ``area`` are not read (``area`` is recomputed as ``w * h`` on writing).

Every problem raises :class:`~ssmd.utils.errors.DataError` with the JSON file, the
field path (e.g. ``annotations[12].bbox``) and the value: missing top-level lists, a
missing or wrongly typed field, a negative, zero-size or out-of-image box, a category
or image id that is not declared, duplicate image / annotation / category ids, duplicate
file names, and (by default) an image file that does not exist.

Writing (:func:`to_coco_dict`, :func:`write_coco`) exports any
:class:`~ssmd.data.datasets.base.DetectionDataset`: images with ``id``, ``file_name``,
``width``, ``height``; annotations numbered ``1..M`` in image order, boxes then ignore
regions, with ``bbox`` ``xywh``, ``area``, ``iscrowd``. Integral coordinates are written
as JSON integers, others as the exact float value of the stored float32, so reading a
written file gives bit-identical boxes, labels, ignore regions, ids and file names.
Unlabeled images are written with their ground truth (the labeled flag is split state,
not data). Image-level fields of a format
(:meth:`~ssmd.data.datasets.base.DetectionDataset.image_fields`, e.g. BUSI's
``image_label``) are added to its image entries; reading ignores them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, Transform, empty_annotation
from ssmd.data.io import atomic_write_json
from ssmd.structures.boxes import xywh_to_xyxy, xyxy_to_xywh
from ssmd.utils.errors import DataError

__all__ = ["CocoDataset", "parse_coco", "to_coco_dict", "write_coco"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Parsed:
    """Result of :func:`parse_coco`."""

    def __init__(self) -> None:
        self.categories: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        # per image id: lists of (xywh, label) for boxes and for crowd regions
        self.boxes: dict[int, list[tuple[list[float], int]]] = {}
        self.crowd: dict[int, list[tuple[list[float], int]]] = {}


def _field(path: Path, obj: dict[str, Any], key: str, where: str, check: str) -> Any:
    if key not in obj:
        raise DataError(path, f"{where}.{key}", None, "missing field")
    v = obj[key]
    ok = {
        "int": _is_int(v),
        "pos_int": _is_int(v) and v > 0,
        "str": isinstance(v, str) and v != "",
    }[check]
    if not ok:
        want = {"int": "an integer", "pos_int": "a positive integer", "str": "a non-empty string"}
        raise DataError(path, f"{where}.{key}", v, f"must be {want[check]}")
    return v


def parse_coco(data: Any, path: str | Path = "<dict>") -> _Parsed:
    """Validate a COCO detection dict and collect images, categories and annotations.

    Args:
        data: the decoded JSON.
        path: the file it came from, named in every error.

    Raises:
        DataError: see the module docstring for the checks.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise DataError(path, "<root>", type(data).__name__, "a COCO file must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(path, key, None, "missing top-level list")
        if not isinstance(data[key], list):
            raise DataError(path, key, type(data[key]).__name__, "must be a list")
    out = _Parsed()

    label_of: dict[int, int] = {}
    cats: dict[int, dict[str, Any]] = {}
    for k, c in enumerate(data["categories"]):
        where = f"categories[{k}]"
        if not isinstance(c, dict):
            raise DataError(path, where, c, "must be an object")
        cid = _field(path, c, "id", where, "int")
        _field(path, c, "name", where, "str")
        if cid in cats:
            raise DataError(path, f"{where}.id", cid, "duplicate category id")
        cats[cid] = dict(c)
    for label, cid in enumerate(sorted(cats), start=1):
        label_of[cid] = label
        out.categories.append(cats[cid])

    sizes: dict[int, tuple[int, int]] = {}
    names: set[str] = set()
    if not data["images"]:
        raise DataError(path, "images", [], "no images")
    for k, im in enumerate(data["images"]):
        where = f"images[{k}]"
        if not isinstance(im, dict):
            raise DataError(path, where, im, "must be an object")
        iid = _field(path, im, "id", where, "int")
        name = _field(path, im, "file_name", where, "str")
        w = _field(path, im, "width", where, "pos_int")
        h = _field(path, im, "height", where, "pos_int")
        if iid in sizes:
            raise DataError(path, f"{where}.id", iid, "duplicate image id")
        if name in names:
            raise DataError(path, f"{where}.file_name", name, "duplicate file name")
        sizes[iid] = (w, h)
        names.add(name)
        out.images.append(im)
        out.boxes[iid] = []
        out.crowd[iid] = []

    ann_ids: set[int] = set()
    for k, a in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(a, dict):
            raise DataError(path, where, a, "must be an object")
        aid = _field(path, a, "id", where, "int")
        if aid in ann_ids:
            raise DataError(path, f"{where}.id", aid, "duplicate annotation id")
        ann_ids.add(aid)
        iid = _field(path, a, "image_id", where, "int")
        if iid not in sizes:
            raise DataError(path, f"{where}.image_id", iid, "no image with this id in 'images'")
        cid = _field(path, a, "category_id", where, "int")
        if cid not in label_of:
            raise DataError(
                path, f"{where}.category_id", cid, f"not in 'categories' (ids {sorted(cats)})"
            )
        if "bbox" not in a:
            raise DataError(path, f"{where}.bbox", None, "missing field")
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            raise DataError(path, f"{where}.bbox", bbox, "must be a list of 4 finite numbers")
        x, y, bw, bh = bbox
        w, h = sizes[iid]
        if bw <= 0 or bh <= 0:
            raise DataError(path, f"{where}.bbox", bbox, "width and height must be > 0")
        if x < 0 or y < 0:
            raise DataError(path, f"{where}.bbox", bbox, "negative coordinate")
        if x + bw > w or y + bh > h:
            raise DataError(
                path, f"{where}.bbox", bbox, f"extends beyond the image (width {w}, height {h})"
            )
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1) or not isinstance(crowd, int):
            raise DataError(path, f"{where}.iscrowd", crowd, "must be 0 or 1")
        (out.crowd if crowd else out.boxes)[iid].append(([x, y, bw, bh], label_of[cid]))
    return out


def _to_xyxy(items: list[tuple[list[float], int]]) -> tuple[Tensor, Tensor]:
    if not items:
        return empty_annotation()
    xywh = torch.tensor([b for b, _ in items], dtype=torch.float64)  # (N, 4)
    boxes = xywh_to_xyxy(xywh).to(torch.float32)  # (N, 4) xyxy
    labels = torch.tensor([lab for _, lab in items], dtype=torch.int64)
    return boxes, labels


class CocoDataset(DetectionDataset):
    """A COCO detection JSON plus the folder its ``file_name`` entries are relative to.

    Args:
        json_path: the annotation file.
        image_root: folder of the images; default: the JSON file's folder.
        transform: applied to every sample.
        check_files: raise at construction if an image file is missing.
    """

    format_name: ClassVar[str] = "coco"

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path | None = None,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        self.json_path = Path(json_path)
        self.image_root = Path(image_root) if image_root is not None else self.json_path.parent
        if self.json_path.is_dir():
            found = sorted(q.name for q in self.json_path.glob("*.json"))[:5]
            hint = f" (JSON files in it: {', '.join(found)})" if found else ""
            raise DataError(
                self.json_path, "file", str(self.json_path),
                f"is a folder; the coco format needs the COCO JSON file{hint}",
            )  # fmt: skip
        try:
            text = self.json_path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DataError(self.json_path, "file", str(self.json_path), "does not exist") from exc
        except UnicodeDecodeError as exc:
            raise DataError(
                self.json_path, "file", str(self.json_path), "not a text (UTF-8 JSON) file"
            ) from exc
        except OSError as exc:
            raise DataError(
                self.json_path, "file", str(self.json_path), f"cannot be read: {exc.strerror}"
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                self.json_path, "json", f"line {exc.lineno} column {exc.colno}", exc.msg
            ) from exc
        parsed = parse_coco(data, self.json_path)
        order = sorted(range(len(parsed.images)), key=lambda k: parsed.images[k]["file_name"])
        records = []
        self._boxes: list[tuple[Tensor, Tensor]] = []
        self._crowd: list[tuple[Tensor, Tensor]] = []
        for k in order:
            im = parsed.images[k]
            rec = ImageRecord(
                image_id=im["id"],
                file_name=im["file_name"],
                width=im["width"],
                height=im["height"],
                path=self.image_root / im["file_name"],
            )
            if check_files and not rec.path.is_file():
                raise DataError(
                    self.json_path, f"images[{k}].file_name", im["file_name"],
                    f"image file {rec.path} does not exist",
                )  # fmt: skip
            records.append(rec)
            self._boxes.append(_to_xyxy(parsed.boxes[rec.image_id]))
            self._crowd.append(_to_xyxy(parsed.crowd[rec.image_id]))
        super().__init__(records, parsed.categories, transform=transform, source=self.json_path)

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return self._boxes[i]

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return self._crowd[i]


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _annotations_of(
    boxes: Tensor, labels: Tensor, cat_ids: dict[int, int], crowd: int, where: str
) -> list[dict[str, Any]]:
    out = []
    xywh = xyxy_to_xywh(boxes.to(torch.float64))  # (N, 4), exact for float32 input
    for b, lab in zip(xywh.tolist(), labels.tolist(), strict=True):
        if lab not in cat_ids:
            raise ValueError(f"{where}: label {lab} has no category (labels 1..{len(cat_ids)})")
        bbox = [_num(v) for v in b]
        out.append(
            {
                "image_id": 0,
                "category_id": cat_ids[lab],
                "bbox": bbox,
                "area": _num(b[2] * b[3]),
                "iscrowd": crowd,
            }
        )
    return out


def to_coco_dict(dataset: DetectionDataset, indices: Sequence[int] | None = None) -> dict[str, Any]:
    """Export ``dataset`` (any format) as a COCO detection dict.

    Args:
        dataset: the dataset; boxes come from :meth:`~DetectionDataset.annotation`, so no
            pixels are decoded.
        indices: images to export (default all), in this order.

    Returns:
        ``{"images", "annotations", "categories"}`` (see the module docstring).
    """
    cat_ids = dataset.label_to_category
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in indices if indices is not None else range(len(dataset)):
        rec = dataset.records[i]
        images.append(
            {
                "id": rec.image_id,
                "file_name": rec.file_name,
                "width": rec.width,
                "height": rec.height,
                # image-level fields (e.g. BUSI's image_label); never the four above
                **{
                    k: v
                    for k, v in dataset.image_fields(i).items()
                    if k not in ("id", "file_name", "width", "height")
                },
            }
        )
        boxes, labels = dataset.annotation(i)
        ign_boxes, ign_labels = dataset.ignore_annotation(i)
        anns = _annotations_of(boxes, labels, cat_ids, 0, rec.file_name)
        anns += _annotations_of(ign_boxes, ign_labels, cat_ids, 1, rec.file_name)
        for a in anns:
            a["id"] = len(annotations) + 1
            a["image_id"] = rec.image_id
            annotations.append(
                {k: a[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd")}
            )
    return {"images": images, "annotations": annotations, "categories": list(dataset.categories)}


def write_coco(
    dataset: DetectionDataset,
    path: str | Path,
    indices: Sequence[int] | None = None,
    indent: int | None = None,
) -> Path:
    """Write :func:`to_coco_dict` of ``dataset`` to ``path`` (atomically); returns ``path``."""
    path = Path(path)
    atomic_write_json(path, to_coco_dict(dataset, indices), indent=indent)
    return path
