"""Boxes (one convention: ``xyxy``, absolute pixels) and typed samples/batches."""

from __future__ import annotations

from ssmd.structures.boxes import (
    BOX_FORMAT,
    box_area,
    box_iou,
    boxes_from_masks,
    clip_boxes,
    cxcywh_to_xyxy,
    nondegenerate,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from ssmd.structures.sample import Batch, Sample, collate

__all__ = [
    "BOX_FORMAT",
    "Batch",
    "Sample",
    "box_area",
    "box_iou",
    "boxes_from_masks",
    "clip_boxes",
    "collate",
    "cxcywh_to_xyxy",
    "nondegenerate",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]
