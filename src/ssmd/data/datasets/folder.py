"""A plain folder of images without annotations (format name ``images``), for prediction.

Every file under ``root`` (recursively) whose suffix is ``.png``, ``.jpg``, ``.jpeg``,
``.tif`` or ``.tiff`` (any case) is an image. ``file_name`` is the ``/``-separated path
relative to ``root``; ids are ``1..N`` in sorted ``file_name`` order (plain string
order), so ``ssmd predict`` on the same folder always numbers images the same way.

Hidden files and folders (names starting with ``.``) and files with other suffixes are
not read; they are listed in :attr:`ImageFolderDataset.skipped_files` and logged.
All images have 0 boxes and are unlabeled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, Transform, empty_annotation, make_records
from ssmd.data.io import IMAGE_SUFFIXES, image_size
from ssmd.utils.errors import DataError

__all__ = ["ImageFolderDataset", "list_images"]

logger = logging.getLogger(__name__)


def list_images(root: str | Path) -> tuple[list[str], list[str]]:
    """Image files under ``root`` and the files that were skipped.

    Returns:
        ``(images, skipped)``: sorted ``/``-separated paths relative to ``root``.
    """
    root = Path(root)
    images: list[str] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        hidden = [d for d in dirnames if d.startswith(".")]
        skipped += [(rel_dir / d).as_posix() + "/" for d in hidden]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            rel = (rel_dir / f).as_posix()
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES):
                images.append(rel)
            else:
                skipped.append(rel)
    return sorted(images), sorted(skipped)


class ImageFolderDataset(DetectionDataset):
    """Every image under ``root``, no annotations (see the module docstring).

    Args:
        root: the folder.
        transform: applied to every sample.
        categories: categories to report (e.g. those a model predicts); default
            ``[{"id": 1, "name": "object"}]``.
    """

    format_name: ClassVar[str] = "images"

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        categories: list[dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "root", str(self.root), "not a directory")
        names, self.skipped_files = list_images(self.root)
        if not names:
            raise DataError(
                self.root, "root", str(self.root), f"no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        if self.skipped_files:
            logger.warning(
                "%s: %d files are not images and were not read: %s",
                self.root,
                len(self.skipped_files),
                ", ".join(self.skipped_files[:10]),
            )
        records = make_records(self.root, names, lambda n: image_size(self.root / n))
        super().__init__(
            records,
            categories if categories is not None else [{"id": 1, "name": "object"}],
            transform=transform,
            labeled=[False] * len(records),
            source=self.root,
        )

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return empty_annotation()
