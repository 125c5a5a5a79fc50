"""2018 Data Science Bowl (BBBC038) nuclei in the Kaggle folder layout.

Layout::

    <root>/<id>/images/<id>.png       the image (RGBA/RGB/grey, 8- or 16-bit)
    <root>/<id>/masks/<mask>.png      one binary mask per nucleus (nonzero = nucleus)

Each nucleus becomes one box, the tight extent of its mask's nonzero pixels in
``xyxy`` absolute pixels with exclusive ``x2``/``y2`` (:func:`ssmd.structures.boxes.boxes_from_masks`;
for 8-bit single-channel masks PIL's C ``getbbox`` computes the identical extent without
a numpy round trip). Boxes are ordered by sorted mask file name. Every box has label
``1``, category ``{"id": 1, "name": "nucleus"}``.

Decisions where the layout is ambiguous:

* A sample folder **without** a ``masks`` folder is a test-style image (as in Kaggle's
  ``stage1_test``): it is recorded with 0 boxes and marked **unlabeled**
  (``is_labeled=False``), because "no annotation" is not "no nuclei". The count is in
  :attr:`DSB2018Dataset.num_unannotated` and logged.
* A ``masks`` folder with no files is an annotated image with 0 nuclei (labeled).
* Hidden entries (names starting with ``.``) and files that are not part of the layout
  (e.g. a stray ``.csv`` in the root, extra files in ``images/``) are not read; they are
  listed in :attr:`DSB2018Dataset.ignored_entries` and logged, never silently dropped.
  A non-``.png`` file inside ``masks/`` is an error: it would be an annotation we
  cannot read.
* Errors (:class:`~ssmd.utils.errors.DataError`, naming file, field and value): missing
  ``images`` folder or ``images/<id>.png``, an unreadable image or mask, a mask whose
  size differs from its image, a mask with no nonzero pixel.

Reading ~29k mask PNGs is the slow part, so boxes are cached: in memory after the first
read of an image, and, when ``cache_dir`` is given, in one JSON file per dataset root
keyed per image by the names, mtimes and sizes of its mask files and image file. A
changed, added or removed mask invalidates only that image's entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, Transform, empty_annotation
from ssmd.data.io import PIL_ERRORS, atomic_write_json, image_array, image_size
from ssmd.structures.boxes import boxes_from_masks
from ssmd.utils.errors import DataError

__all__ = ["DSB2018Dataset", "mask_box"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "ssmd-dsb2018-boxes"
_CACHE_VERSION = 1


def mask_box(path: Path, size: tuple[int, int], image_path: Path | str = "") -> list[int]:
    """Tight ``xyxy`` box ``[x1, y1, x2, y2]`` (exclusive ``x2``/``y2``) of one mask file.

    Args:
        path: the mask PNG.
        size: ``(width, height)`` the mask must have (its image's size).
        image_path: the image, named in the size-mismatch error.

    Raises:
        DataError: unreadable mask, size mismatch, or no nonzero pixel.
    """
    bbox: tuple[int, int, int, int] | None
    try:
        with Image.open(path) as im:
            if im.size != size:
                raise DataError(
                    path,
                    "mask.size",
                    tuple(im.size),
                    f"differs from the (width, height) {size} of image {image_path}",
                )
            if im.mode in ("L", "1"):
                bbox = im.getbbox()  # C extent of nonzero pixels, exclusive right/lower
                if bbox is None:
                    raise DataError(path, "mask.pixels", "all zero", "mask has no nonzero pixel")
                return [int(v) for v in bbox]
    except FileNotFoundError as exc:
        raise DataError(path, "mask", str(path), "file does not exist") from exc
    except PIL_ERRORS as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(path, "mask", str(path), f"cannot decode mask ({exc})") from exc
    arr = image_array(path)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[:, :, :-1]  # drop alpha
        arr = np.asarray(arr.any(axis=2))  # (H, W)
    if not arr.any():
        raise DataError(path, "mask.pixels", "all zero", "mask has no nonzero pixel")
    box = boxes_from_masks(torch.from_numpy(np.ascontiguousarray(arr != 0))[None])  # (1, 4)
    return [int(v) for v in box[0].tolist()]


def _stat_key(entries: Sequence[tuple[str, int, int]]) -> str:
    h = hashlib.sha1()
    for name, mtime, size in entries:
        h.update(f"{name}\0{mtime}\0{size}\n".encode())
    return h.hexdigest()


class DSB2018Dataset(DetectionDataset):
    """Nuclei from a DSB 2018 / BBBC038 Kaggle-layout folder (see the module docstring).

    Args:
        root: folder holding one sub-folder per image (e.g. ``stage1_train``).
        transform: applied to every sample.
        cache_dir: if given, boxes are read from / written to a JSON cache there and all
            annotations are loaded at construction (``preload`` implied).
        preload: read every image's masks now instead of on first access.

    Attributes:
        ignored_entries: paths (relative to ``root``) present but not part of the layout.
        cache_hits: images whose boxes came from the disk cache.
        cache_misses: images whose masks were decoded.
    """

    format_name: ClassVar[str] = "dsb2018"
    CATEGORIES: ClassVar[list[dict[str, Any]]] = [{"id": 1, "name": "nucleus"}]

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        cache_dir: str | Path | None = None,
        preload: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "root", str(self.root), "not a directory")
        self.ignored_entries: list[str] = []
        self._ids: list[str] = []
        self._annotated: list[bool] = []
        records: list[ImageRecord] = []
        sample_dirs = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_dir():
                    self.ignored_entries.append(e.name)
                else:
                    sample_dirs.append(e.name)
        if not sample_dirs:
            raise DataError(self.root, "root", str(self.root), "no sample folders <id>/ found")
        for k, sid in enumerate(sorted(sample_dirs), start=1):
            sdir = self.root / sid
            images_dir = sdir / "images"
            if not images_dir.is_dir():
                raise DataError(sdir, "images", str(images_dir), "missing images/ folder")
            image_path = images_dir / f"{sid}.png"
            with os.scandir(images_dir) as it:
                names = {e.name for e in it}
            if image_path.name not in names:
                raise DataError(
                    images_dir,
                    "images/<id>.png",
                    image_path.name,
                    f"image file missing (folder holds {sorted(names)[:5]})",
                )
            self.ignored_entries += [f"{sid}/images/{n}" for n in sorted(names - {image_path.name})]
            for extra in sorted(os.listdir(sdir)):
                if extra not in ("images", "masks"):
                    self.ignored_entries.append(f"{sid}/{extra}")
            w, h = image_size(image_path)
            records.append(
                ImageRecord(k, f"{sid}/images/{sid}.png", width=w, height=h, path=image_path)
            )
            self._ids.append(sid)
            self._annotated.append((sdir / "masks").is_dir())
        self.ignored_entries.sort()
        super().__init__(
            records, self.CATEGORIES, transform=transform, labeled=self._annotated, source=self.root
        )
        if self.ignored_entries:
            logger.warning(
                "%s: %d entries are not part of the DSB layout and were not read: %s",
                self.root,
                len(self.ignored_entries),
                ", ".join(self.ignored_entries[:10]),
            )
        if self.num_unannotated:
            logger.warning(
                "%s: %d images have no masks/ folder; recorded with 0 boxes and marked unlabeled",
                self.root,
                self.num_unannotated,
            )
        self._boxes: dict[int, Tensor] = {}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache_hits = 0
        self.cache_misses = 0
        if self.cache_dir is not None:
            self._load_with_cache(self.cache_dir)
        elif preload:
            self.preload()

    @property
    def num_unannotated(self) -> int:
        """Images without a ``masks/`` folder (recorded unlabeled, 0 boxes)."""
        return sum(1 for a in self._annotated if not a)

    def is_annotated(self, i: int) -> bool:
        """Whether image ``i`` has a ``masks/`` folder."""
        return self._annotated[self._check_index(i)]

    def mask_paths(self, i: int) -> list[Path]:
        """The mask files of image ``i`` in box order (sorted names); empty if unannotated.

        Raises:
            DataError: a non-``.png`` file in ``masks/``.
        """
        i = self._check_index(i)
        if not self._annotated[i]:
            return []
        mdir = self.root / self._ids[i] / "masks"
        out = []
        with os.scandir(mdir) as it:
            names = sorted(e.name for e in it)
        for name in names:
            if name.startswith("."):
                continue
            if not name.lower().endswith(".png"):
                raise DataError(mdir / name, "masks", name, "not a .png mask file")
            out.append(mdir / name)
        return out

    def instance_masks(self, i: int) -> Tensor:
        """All masks of image ``i`` as ``Tensor[N, H, W]`` bool, in box order."""
        rec = self.records[self._check_index(i)]
        masks = []
        for p in self.mask_paths(i):
            arr = image_array(p)
            if arr.shape[:2] != (rec.height, rec.width):
                raise DataError(
                    p, "mask.size", arr.shape[:2][::-1], f"differs from image {rec.path}"
                )
            if arr.ndim == 3:
                if arr.shape[2] in (2, 4):
                    arr = arr[:, :, :-1]  # drop alpha
                arr = np.asarray(arr.any(axis=2))  # (H, W)
            masks.append(torch.from_numpy(np.ascontiguousarray(arr != 0)))
        if not masks:
            return torch.zeros((0, rec.height, rec.width), dtype=torch.bool)
        return torch.stack(masks)  # (N, H, W)

    def _compute_boxes(self, i: int) -> Tensor:
        rec = self.records[i]
        boxes = [mask_box(p, (rec.width, rec.height), rec.path) for p in self.mask_paths(i)]
        self.cache_misses += 1
        if not boxes:
            return torch.zeros((0, 4), dtype=torch.float32)
        return torch.tensor(boxes, dtype=torch.float32)  # (N, 4)

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        boxes = self._boxes.get(i)
        if boxes is None:
            boxes = self._compute_boxes(i)
            self._boxes[i] = boxes
        if boxes.shape[0] == 0:
            return empty_annotation()
        return boxes, torch.ones((boxes.shape[0],), dtype=torch.int64)

    def preload(self) -> None:
        """Read the masks of every image not yet in the in-memory cache."""
        for i in range(len(self)):
            self._annotation(i)

    # ------------------------------------------------------------------ disk cache
    def cache_file(self, cache_dir: str | Path) -> Path:
        """The JSON box cache of this root under ``cache_dir``."""
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:16]
        return Path(cache_dir) / f"dsb2018-{digest}.json"

    def _fingerprint(self, i: int) -> str:
        rec = self.records[i]
        st = rec.path.stat()
        entries = [(rec.file_name, st.st_mtime_ns, st.st_size)]
        if self._annotated[i]:
            mdir = self.root / self._ids[i] / "masks"
            with os.scandir(mdir) as it:
                for e in sorted(it, key=lambda e: e.name):
                    s = e.stat()
                    entries.append((e.name, s.st_mtime_ns, s.st_size))
        else:
            entries.append(("<no masks folder>", 0, 0))
        return _stat_key(entries)

    def _load_with_cache(self, cache_dir: Path) -> None:
        path = self.cache_file(cache_dir)
        cached: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("format") == _CACHE_FORMAT and data.get("version") == _CACHE_VERSION:
                    cached = dict(data["entries"])
                else:
                    logger.warning("%s: box cache of another format/version; rebuilding", path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("%s: unreadable box cache (%s); rebuilding", path, exc)
        entries: dict[str, Any] = {}
        changed = False
        for i, rec in enumerate(self.records):
            key = self._fingerprint(i)
            hit = cached.get(rec.file_name)
            if isinstance(hit, dict) and hit.get("key") == key:
                raw = hit["boxes"]
                self._boxes[i] = torch.tensor(raw, dtype=torch.float32).reshape(-1, 4)  # (N, 4)
                self.cache_hits += 1
                entries[rec.file_name] = hit
            else:
                boxes = self._compute_boxes(i)
                self._boxes[i] = boxes
                entries[rec.file_name] = {"key": key, "boxes": boxes.to(torch.int64).tolist()}
                changed = True
        if changed or set(cached) != set(entries):
            atomic_write_json(
                path,
                {
                    "format": _CACHE_FORMAT,
                    "version": _CACHE_VERSION,
                    "root": str(self.root.resolve()),
                    "entries": entries,
                },
            )
