"""BUSI breast ultrasound (Al-Dhabyani et al. 2020) in its release layout.

Layout::

    <root>/Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png        image
    <root>/Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N)_mask.png   lesion mask
    <root>/Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N)_mask_K.png extra masks

``root`` may be the folder holding ``Dataset_BUSI_with_GT`` or that folder itself;
``file_name`` s are relative to ``Dataset_BUSI_with_GT`` (``"benign/benign (1).png"``) either
way, so split manifests do not depend on how the folder was named.

Annotation (the boxes are ``xyxy`` absolute pixels with exclusive ``x2``/``y2``, the tight
extent of the nonzero mask pixels):

* **Image label** ``N / B / M`` (the paper's label set ``L = {N, B, M}``): the class
  folder, available as :meth:`BUSIDataset.image_label` and written by
  :func:`~ssmd.data.datasets.coco.to_coco_dict` as the image field ``image_label``
  (``"normal"``, ``"benign"``, ``"malignant"``).
* **Categories** ``benign`` (id 1) and ``malignant`` (id 2). Every box of an image has the
  image's class; normal images have no box (their masks must be all zero).
* **Multi-mask images** (15 benign images of the shared copy have ``_mask_1`` / ``_mask_2``):
  ``multi_mask="separate"`` (default) gives one box per mask file, in the order ``_mask``,
  ``_mask_1``, ``_mask_2``: the extra masks there are, with one exception, disjoint
  second lesions (``busi_summary`` lists masks lying inside another), and "one box per lesion
  mask" is what a detector should find.
  ``multi_mask="union"`` gives one box around all of an image's masks (the single-lesion
  reading of the data README). A mask file whose lesion has several connected pieces is
  still one box (its extent).

Every problem is a :class:`~ssmd.utils.errors.DataError` naming the file, the field and the
value, raised at construction (every mask is read then; BUSI is small): an image without
any mask file, a mask without its image, a mask of another size than its image, an empty
(all-zero) mask of a benign or malignant image, a nonzero mask of a normal image, a folder
that is not a class (``unknown class folder``), a class folder without images, a ``.png``
whose name does not follow ``<class> (N)[_mask[_K]].png`` or names another class than its
folder, and two files for the same image or mask (e.g. ``benign (1).png`` and
``benign (01).png``, or ``.png`` and ``.PNG``). Hidden entries and non-``.png`` files are
not read; they are listed in :attr:`BUSIDataset.ignored_entries` and logged. A class folder
that is absent is allowed (a subset of BUSI), an empty one is not.

Duplicates (pixel-identical and near-identical images, some across classes) are found by
:meth:`BUSIDataset.duplicates` (:mod:`ssmd.data.duplicates`); :func:`busi_split` keeps each
group on one side of the split and applies the conflicting-label rule.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, Transform, empty_annotation
from ssmd.data.duplicates import (
    DEFAULT_HASH_SIZE,
    DEFAULT_THRESHOLD,
    ConflictRule,
    DuplicateReport,
    find_duplicates,
)
from ssmd.data.io import PIL_ERRORS, image_array, image_size
from ssmd.data.splits import Split, make_split
from ssmd.utils.errors import DataError

__all__ = [
    "BUSI_FOLDER",
    "IMAGE_LABELS",
    "BUSIDataset",
    "MultiMask",
    "busi_split",
    "busi_summary",
    "format_busi_summary",
]

logger = logging.getLogger(__name__)

BUSI_FOLDER = "Dataset_BUSI_with_GT"
"""The release's top folder."""

IMAGE_LABELS = ("normal", "benign", "malignant")
"""Image-level labels ``N, B, M`` in the paper's order (index = class index of ``P_l(I)``)."""

MultiMask = Literal["separate", "union"]

_NAME = re.compile(r"^(?P<cls>.+) \((?P<n>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png$", re.I)


def _mask_extent(path: Path, size: tuple[int, int], image: Path) -> tuple[list[int] | None, str]:
    """``([x1, y1, x2, y2] or None if all zero, PIL mode)`` of one mask file."""
    try:
        with Image.open(path) as im:
            if im.size != size:
                raise DataError(
                    path,
                    "mask.size",
                    tuple(im.size),
                    f"differs from the (width, height) {size} of image {image}",
                )
            mode = im.mode
            if mode in ("L", "1"):
                bbox = im.getbbox()  # C extent of nonzero pixels, exclusive right/lower
                return (None if bbox is None else [int(v) for v in bbox]), mode
    except FileNotFoundError as exc:
        raise DataError(path, "mask", str(path), "file does not exist") from exc
    except PIL_ERRORS as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(path, "mask", str(path), f"cannot decode mask ({exc})") from exc
    m = _mask_array(path)
    if not m.any():
        return None, mode
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1], mode


def _mask_array(path: Path) -> np.ndarray:
    """``bool[H, W]``: nonzero pixels of a mask (any channel but alpha)."""
    arr = image_array(path)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[:, :, :-1]  # drop alpha
        return np.asarray(arr.any(axis=2))
    return np.asarray(arr != 0)


class BUSIDataset(DetectionDataset):
    """BUSI images with lesion boxes and image labels (see the module docstring).

    Args:
        root: the folder holding ``Dataset_BUSI_with_GT``, or that folder itself.
        transform: applied to every sample.
        multi_mask: ``"separate"`` (one box per mask file) or ``"union"`` (one box per image).

    Attributes:
        base: the ``Dataset_BUSI_with_GT`` folder (file names are relative to it).
        ignored_entries: paths (relative to ``base``) present but not part of the layout.
    """

    format_name: ClassVar[str] = "busi"
    CATEGORIES: ClassVar[list[dict[str, Any]]] = [
        {"id": 1, "name": "benign"},
        {"id": 2, "name": "malignant"},
    ]

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        multi_mask: MultiMask = "separate",
    ) -> None:
        if multi_mask not in ("separate", "union"):
            raise ValueError(f"multi_mask = {multi_mask!r}: expected 'separate' or 'union'")
        self.multi_mask: MultiMask = multi_mask
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "root", str(self.root), "not a directory")
        self.base = self._find_base(self.root)
        self.ignored_entries: list[str] = []
        classes = self._class_folders()
        images: dict[str, tuple[str, Path]] = {}  # file_name -> (class, path)
        masks: dict[str, list[tuple[int, Path]]] = {}  # image file_name -> [(K, path)]
        for cls in classes:
            self._scan_class(cls, images, masks)
        self._labels: list[str] = []
        self._mask_paths: list[list[Path]] = []
        self._mask_boxes: list[list[list[int]]] = []
        records: list[ImageRecord] = []
        for k, name in enumerate(sorted(images), start=1):
            cls, path = images[name]
            if name not in masks:
                raise DataError(
                    path, "mask", f"{Path(name).stem}_mask.png", "image without any mask file"
                )
            w, h = image_size(path)
            mpaths = [p for _, p in sorted(masks[name])]
            boxes = []
            for mp in mpaths:
                box, _ = _mask_extent(mp, (w, h), path)
                if cls == "normal" and box is not None:
                    raise DataError(
                        mp,
                        "mask.pixels",
                        f"nonzero in {box}",
                        "a normal image's mask marks a lesion",
                    )
                if cls != "normal":
                    if box is None:
                        raise DataError(
                            mp,
                            "mask.pixels",
                            "all zero",
                            f"a {cls} image's mask has no lesion pixel",
                        )
                    boxes.append(box)
            records.append(ImageRecord(k, name, width=w, height=h, path=path))
            self._labels.append(cls)
            self._mask_paths.append(mpaths)
            self._mask_boxes.append(boxes)
        self.ignored_entries.sort()
        self._report: dict[str, Any] | None = None
        self._duplicates: DuplicateReport | None = None
        super().__init__(records, self.CATEGORIES, transform=transform, source=self.base)
        if self.ignored_entries:
            logger.warning(
                "%s: %d entries are not part of the BUSI layout and were not read: %s",
                self.base,
                len(self.ignored_entries),
                ", ".join(self.ignored_entries[:10]),
            )

    # ------------------------------------------------------------------ scanning
    @staticmethod
    def _find_base(root: Path) -> Path:
        if (root / BUSI_FOLDER).is_dir():
            return root / BUSI_FOLDER
        if any((root / c).is_dir() for c in IMAGE_LABELS):
            return root
        raise DataError(
            root,
            "root",
            str(root),
            f"holds neither {BUSI_FOLDER}/ nor class folders {', '.join(IMAGE_LABELS)}",
        )

    def _class_folders(self) -> list[str]:
        classes = []
        with os.scandir(self.base) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                self.ignored_entries.append(e.name)
            elif e.is_dir():
                if e.name not in IMAGE_LABELS:
                    raise DataError(
                        self.base / e.name,
                        "class folder",
                        e.name,
                        f"unknown class folder (expected {', '.join(IMAGE_LABELS)})",
                    )
                classes.append(e.name)
            else:
                self.ignored_entries.append(e.name)
        if not classes:
            raise DataError(
                self.base, "class folders", [], f"none of {', '.join(IMAGE_LABELS)} is present"
            )
        missing = [c for c in IMAGE_LABELS if c not in classes]
        if missing:
            logger.info("%s: no %s folder (a subset of BUSI)", self.base, ", ".join(missing))
        return classes

    def _scan_class(
        self,
        cls: str,
        images: dict[str, tuple[str, Path]],
        masks: dict[str, list[tuple[int, Path]]],
    ) -> None:
        folder = self.base / cls
        seen_images: dict[int, Path] = {}
        seen_masks: dict[tuple[int, int], Path] = {}
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = f"{cls}/{e.name}"
            if e.name.startswith(".") or (e.is_file() and not e.name.lower().endswith(".png")):
                self.ignored_entries.append(rel)
                continue
            if e.is_dir():
                raise DataError(folder / e.name, "entry", rel, "a folder inside a class folder")
            m = _NAME.match(e.name)
            if m is None:
                raise DataError(
                    folder / e.name,
                    "file name",
                    e.name,
                    f"not '{cls} (N).png', '{cls} (N)_mask.png' or '{cls} (N)_mask_K.png'",
                )
            if m["cls"] != cls:
                raise DataError(
                    folder / e.name,
                    "file name",
                    e.name,
                    f"names class {m['cls']!r} but lies in the {cls!r} folder",
                )
            n = int(m["n"])
            path = folder / e.name
            if m["mask"] is None:
                if n in seen_images:
                    raise DataError(
                        path,
                        "file name",
                        e.name,
                        f"a second file for image {n} (first: {seen_images[n].name})",
                    )
                seen_images[n] = path
                images[rel] = (cls, path)
            else:
                k = int(m["k"]) if m["k"] is not None else 0
                if (n, k) in seen_masks:
                    first = seen_masks[(n, k)].name
                    raise DataError(
                        path,
                        "file name",
                        e.name,
                        f"a second file for mask {k} of image {n} (first: {first})",
                    )
                seen_masks[(n, k)] = path
        if not seen_images:
            raise DataError(folder, "images", [], f"the {cls} class folder holds no images")
        for (n, k), path in seen_masks.items():
            image = seen_images.get(n)
            if image is None:
                raise DataError(path, "image", f"{cls} ({n}).png", "mask without its image")
            masks.setdefault(f"{cls}/{image.name}", []).append((k, path))

    # ------------------------------------------------------------------ annotation
    def image_label(self, i: int) -> str:
        """``"normal"``, ``"benign"`` or ``"malignant"``: the class folder of image ``i``."""
        return self._labels[self._check_index(i)]

    @property
    def image_labels(self) -> list[str]:
        """The image label of every image, in index order."""
        return list(self._labels)

    def image_fields(self, i: int) -> dict[str, Any]:
        return {"image_label": self.image_label(i)}

    def draw_split(
        self,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        labeled_ratio: float = 1.0,
        labeled_count: int | None = None,
    ) -> Split:
        """:func:`busi_split`: ``labeled_count`` strong images, else ``labeled_ratio`` of the
        abnormal training images; duplicates grouped, conflicting labels dropped."""
        return busi_split(
            self,
            seed=seed,
            fractions=fractions,
            strong=labeled_count if labeled_count is not None else float(labeled_ratio),
        )

    def image_class(self, i: int) -> int:
        """Index of the image label in :data:`IMAGE_LABELS`: normal 0, benign 1, malignant 2.

        This is also the region class of the detector (0 = background, then the category
        labels benign 1, malignant 2): a normal image is background everywhere.
        """
        return IMAGE_LABELS.index(self.image_label(i))

    def mask_paths(self, i: int) -> list[Path]:
        """The mask files of image ``i``: ``_mask``, then ``_mask_1``, ``_mask_2``, ..."""
        return list(self._mask_paths[self._check_index(i)])

    def instance_masks(self, i: int) -> Tensor:
        """The lesion masks of image ``i`` as ``Tensor[N, H, W]`` bool, in box order.

        ``N`` is the number of boxes (0 for normal images; 1 under ``multi_mask="union"``,
        the union of the masks).
        """
        i = self._check_index(i)
        rec = self.records[i]
        if self._labels[i] == "normal":
            return torch.zeros((0, rec.height, rec.width), dtype=torch.bool)
        masks = torch.stack([torch.from_numpy(_mask_array(p)) for p in self._mask_paths[i]])
        if self.multi_mask == "union":
            masks = masks.any(dim=0, keepdim=True)  # (1, H, W)
        return masks  # (N, H, W)

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        boxes = self._mask_boxes[i]
        if not boxes:
            return empty_annotation()
        t = torch.tensor(boxes, dtype=torch.float32)  # (N, 4) xyxy
        if self.multi_mask == "union":
            t = torch.cat([t[:, :2].min(dim=0).values, t[:, 2:].max(dim=0).values])[None]  # (1, 4)
        label = IMAGE_LABELS.index(self._labels[i])  # benign 1, malignant 2
        return t, torch.full((t.shape[0],), label, dtype=torch.int64)

    @property
    def report(self) -> dict[str, Any]:
        """:func:`busi_summary` with the duplicates at the default threshold (computed once).

        ``ssmd data convert / stats`` print it (:meth:`report_lines`); ``stats --json``
        includes it.
        """
        if self._report is None:
            self._duplicates = self.duplicates()
            self._report = busi_summary(self, self._duplicates)
        return self._report

    def report_lines(self) -> list[str]:
        """The report as lines of text: labels, masks, duplicate counts and conflicting groups."""
        report = self.report
        return format_busi_summary(report, self._duplicates).rstrip("\n").split("\n")

    def duplicates(
        self, threshold: int = DEFAULT_THRESHOLD, hash_size: int = DEFAULT_HASH_SIZE
    ) -> DuplicateReport:
        """Pixel- and near-identical groups of this dataset's images, labelled N / B / M."""
        return find_duplicates(
            {r.file_name: r.path for r in self.records},
            labels=dict(zip(self.file_names, self._labels, strict=True)),
            threshold=threshold,
            hash_size=hash_size,
        )


def busi_split(
    dataset: BUSIDataset,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    strong: int | float | None = None,
    conflicts: ConflictRule = "drop",
    duplicates: DuplicateReport | None = None,
    threshold: int = DEFAULT_THRESHOLD,
) -> Split:
    """Test / val by image and strong / weak training images, duplicate-aware.

    The split's ``labeled`` images are the **strong** ones (boxes and image label, the
    paper's DXLoc), ``unlabeled`` the **weak** ones (image label only, DX; their boxes are
    still in the dataset, for scoring, but must not be used). Only benign and malignant
    images can be strong (the paper's strong sets hold no normal image); normal training
    images are always weak. Every duplicate group lies on one side of every part
    (:func:`~ssmd.data.splits.make_split` with ``groups``).

    Args:
        dataset: the BUSI images.
        seed: the split seed.
        fractions: ``(train, val, test)`` of the images left after the conflict rule.
        strong: an ``int`` number of strong images (``0``: all weak; 10 and 50 as the
            paper's rows), a ``float`` fraction of the abnormal training images, or
            ``None`` / ``1.0``: all abnormal training images strong (the 800-strong row).
        conflicts: ``"drop"`` (default): images of a group whose labels differ are in no
            part (:attr:`Split.excluded`); ``"keep"``: they stay, grouped
            (:meth:`~ssmd.data.duplicates.DuplicateReport.excluded` gives the reasons).
        duplicates: a report already computed (default: :meth:`BUSIDataset.duplicates`).
        threshold: near-identical threshold when ``duplicates`` is computed here.

    Raises:
        ValueError: a bad count / fraction / rule (the message names the value).
    """
    report = duplicates if duplicates is not None else dataset.duplicates(threshold=threshold)
    excluded = report.excluded(conflicts)
    abnormal = [
        n
        for n, lab in zip(dataset.file_names, dataset.image_labels, strict=True)
        if lab != "normal"
    ]
    if strong is None:
        strong = 1.0
    if isinstance(strong, bool):
        raise ValueError(f"strong = {strong!r}: give a number of images or a fraction")
    count = strong if isinstance(strong, int) else None
    ratio = float(strong) if count is None else 1.0
    split = make_split(
        dataset,
        seed=seed,
        fractions=fractions,
        labeled_ratio=ratio,
        labeled_count=count,
        labeled_eligible=abnormal,
        groups=report.split_groups(),
        exclude=excluded,
    )
    split.validate()
    return split


def busi_summary(dataset: BUSIDataset, duplicates: DuplicateReport | None = None) -> dict[str, Any]:
    """Image labels, mask files, multi-mask images and (optionally) duplicates of ``dataset``."""
    labels = Counter(dataset.image_labels)
    multi = []
    nested = []
    pieces: dict[str, int] = {}
    for i, rec in enumerate(dataset.records):
        paths = dataset.mask_paths(i)
        if dataset.image_label(i) == "normal":
            continue
        arrays = [_mask_array(p) for p in paths]
        for p, a in zip(paths, arrays, strict=True):
            n = int(ndimage.label(a)[1])
            if n > 1:
                pieces[f"{rec.file_name.split('/')[0]}/{p.name}"] = n
        if len(paths) > 1:
            multi.append(rec.file_name)
            for j, a in enumerate(arrays):
                if any(k != j and not (a & ~b).any() for k, b in enumerate(arrays)):
                    nested.append(f"{rec.file_name.split('/')[0]}/{paths[j].name}")
    out: dict[str, Any] = {
        "image_labels": {c: labels.get(c, 0) for c in IMAGE_LABELS},
        "mask_files": sum(len(dataset.mask_paths(i)) for i in range(len(dataset))),
        "multi_mask": dataset.multi_mask,
        "multi_mask_images": multi,
        "masks_inside_another_mask": nested,
        "masks_with_several_pieces": pieces,
        "ignored_entries": list(dataset.ignored_entries),
    }
    if duplicates is not None:
        out["duplicates"] = duplicates.to_dict()
    return out


def format_busi_summary(summary: dict[str, Any], duplicates: DuplicateReport | None = None) -> str:
    """:func:`busi_summary` as a short markdown report (plus the duplicate groups if given)."""
    lab = summary["image_labels"]
    lines = [
        "image labels: " + ", ".join(f"{c} {lab[c]}" for c in IMAGE_LABELS),
        f"mask files: {summary['mask_files']}; images with several masks: "
        f"{len(summary['multi_mask_images'])} (multi_mask={summary['multi_mask']}: "
        + (
            "one box per mask file)"
            if summary["multi_mask"] == "separate"
            else "one box per image)"
        ),
        f"masks lying inside another mask of their image: "
        f"{', '.join(summary['masks_inside_another_mask']) or 'none'}",
        f"masks with several connected pieces (one box each): "
        f"{len(summary['masks_with_several_pieces'])}",
    ]
    if summary["ignored_entries"]:
        lines.append(f"not read: {', '.join(summary['ignored_entries'])}")
    text = "\n".join(lines) + "\n"
    if duplicates is not None:
        text += "\n" + duplicates.format()
    return text
