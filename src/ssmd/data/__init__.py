"""Datasets (one module per format), splits, transforms and dataset statistics.

Boxes everywhere are ``xyxy`` absolute pixels (:mod:`ssmd.structures.boxes`).
"""

from __future__ import annotations

from ssmd.data.datasets import (
    CocoDataset,
    DetectionDataset,
    DSB2018Dataset,
    ImageFolderDataset,
    ImageRecord,
    SubsetDataset,
    SyntheticConfig,
    SyntheticNucleiDataset,
    to_coco_dict,
    write_coco,
    write_dsb_layout,
)
from ssmd.data.factory import DATASET_FORMATS, build_dataset
from ssmd.data.splits import Split, apply_split, make_split
from ssmd.data.stats import dataset_stats, format_stats

__all__ = [
    "DATASET_FORMATS",
    "CocoDataset",
    "DSB2018Dataset",
    "DetectionDataset",
    "ImageFolderDataset",
    "ImageRecord",
    "Split",
    "SubsetDataset",
    "SyntheticConfig",
    "SyntheticNucleiDataset",
    "apply_split",
    "build_dataset",
    "dataset_stats",
    "format_stats",
    "make_split",
    "to_coco_dict",
    "write_coco",
    "write_dsb_layout",
]
