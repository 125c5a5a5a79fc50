"""Dataset formats, one module each, all returning :class:`~ssmd.structures.sample.Sample`."""

from __future__ import annotations

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, SubsetDataset, Transform
from ssmd.data.datasets.busi import BUSIDataset
from ssmd.data.datasets.coco import CocoDataset, to_coco_dict, write_coco
from ssmd.data.datasets.dsb2018 import DSB2018Dataset
from ssmd.data.datasets.folder import ImageFolderDataset
from ssmd.data.datasets.synthetic import (
    SyntheticConfig,
    SyntheticNucleiDataset,
    generate_image,
    write_dsb_layout,
)

__all__ = [
    "BUSIDataset",
    "CocoDataset",
    "DSB2018Dataset",
    "DetectionDataset",
    "ImageFolderDataset",
    "ImageRecord",
    "SubsetDataset",
    "SyntheticConfig",
    "SyntheticNucleiDataset",
    "Transform",
    "generate_image",
    "to_coco_dict",
    "write_coco",
    "write_dsb_layout",
]
