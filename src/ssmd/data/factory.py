"""``build_dataset(format, root, **kw)``: the one place that turns a format name into a dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.datasets.busi import BUSIDataset
from ssmd.data.datasets.coco import CocoDataset
from ssmd.data.datasets.deeplesion import DeepLesionDataset
from ssmd.data.datasets.dsb2018 import DSB2018Dataset
from ssmd.data.datasets.folder import ImageFolderDataset
from ssmd.data.datasets.luna16 import Luna16Dataset
from ssmd.data.datasets.synthetic import SyntheticNucleiDataset
from ssmd.data.datasets.synthetic_ct import SyntheticCTDataset
from ssmd.data.datasets.synthetic_slices import SyntheticSlicesDataset
from ssmd.utils.registry import Registry

__all__ = ["DATASET_FORMATS", "build_dataset"]

DATASET_FORMATS: Registry[Callable[..., DetectionDataset]] = Registry("dataset format")
"""Format name -> ``builder(root, **kw)``; ``DATASET_FORMATS.names()`` lists them."""


def _need_root(fmt: str, root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(f"dataset format {fmt!r} needs a root path")
    return Path(root)


@DATASET_FORMATS.register("dsb2018")
def _dsb2018(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return DSB2018Dataset(_need_root("dsb2018", root), **kw)


@DATASET_FORMATS.register("busi")
def _busi(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return BUSIDataset(_need_root("busi", root), **kw)


@DATASET_FORMATS.register("coco")
def _coco(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return CocoDataset(_need_root("coco", root), **kw)


@DATASET_FORMATS.register("deeplesion")
def _deeplesion(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return DeepLesionDataset(_need_root("deeplesion", root), **kw)


@DATASET_FORMATS.register("luna16")
def _luna16(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return Luna16Dataset(_need_root("luna16", root), **kw)


@DATASET_FORMATS.register("images")
def _images(root: str | Path | None, **kw: Any) -> DetectionDataset:
    return ImageFolderDataset(_need_root("images", root), **kw)


@DATASET_FORMATS.register("synthetic")
def _synthetic(root: str | Path | None, **kw: Any) -> DetectionDataset:
    if root is not None and "cache_dir" in kw:
        raise ValueError("synthetic: give the cache folder as root or as cache_dir, not both")
    if root is not None:
        kw["cache_dir"] = root
    return SyntheticNucleiDataset(**kw)


@DATASET_FORMATS.register("synthetic_ct")
def _synthetic_ct(root: str | Path | None, **kw: Any) -> DetectionDataset:
    if root is not None:
        kw["cache_dir"] = root
    return SyntheticCTDataset(**kw)


@DATASET_FORMATS.register("synthetic_slices")
def _synthetic_slices(root: str | Path | None, **kw: Any) -> DetectionDataset:
    if root is not None:
        kw["cache_dir"] = root
    return SyntheticSlicesDataset(**kw)


def build_dataset(format: str, root: str | Path | None = None, **kw: Any) -> DetectionDataset:
    """Build a dataset by format name.

    Args:
        format: ``dsb2018`` (root = the folder of sample folders), ``coco`` (root = the
            JSON file; ``image_root=`` the image folder, default the JSON's folder),
            ``images`` (root = any folder of images), ``synthetic`` (root = cache
            folder, optional; ``n_images=``, ``image_size=``, ``seed=``, ``config=``),
            ``busi`` (root = the folder holding ``Dataset_BUSI_with_GT``, or that folder;
            ``multi_mask=``),
            ``deeplesion`` (root = the folder holding ``Images_png/``; ``info_csv=``,
            ``num_neighbors=``, ``z_spacing=``, ``window=``, ``slices=``, ``part=``),
            ``synthetic_slices`` (root = cache folder; CT slice stacks with a hidden truth,
            ``n_series=``, ``num_neighbors=``, ``unannotated_fraction=``),
            ``luna16`` (root = folder searched for ``<seriesuid>.mhd``; ``annotations=``
            the LUNA16 CSV; 3D: items are ``VolumeSample`` s with ``xyzxyz`` boxes).
        root: see ``format``.
        **kw: passed to the dataset class (e.g. ``transform=``, ``cache_dir=``).

    Raises:
        KeyError: unknown format (the message lists the known ones).
    """
    return DATASET_FORMATS.get(format)(root, **kw)
