"""The dataset base class every format implements.

A :class:`DetectionDataset` is a list of :class:`ImageRecord` (one per image, with a
stable integer id and the image's path relative to the dataset root) plus COCO-style
``categories``. ``dataset[i]`` returns a :class:`~ssmd.structures.sample.Sample` with the
image as ``Tensor[3, H, W]`` float32 in ``[0, 1]`` and ``xyxy`` absolute-pixel boxes
(the convention of :mod:`ssmd.structures.boxes`); :meth:`DetectionDataset.annotation`
gives the boxes alone, without decoding pixels where the format allows.

Image ids of folder formats are ``1..N`` in sorted order of ``file_name`` (the path
relative to the root, ``/``-separated, compared as plain strings), so the same folder
always gets the same ids on every machine. Formats that carry their own ids (COCO)
keep them.

Labels are ``1..K``: label ``k`` is ``categories[k - 1]``
(:attr:`DetectionDataset.label_to_category` maps labels to category ids).

Labeled/unlabeled is a per-index flag. An unlabeled sample still carries its ground
truth boxes (so pseudo-labels can be scored) but has ``is_labeled=False`` and must not
be used as supervision. :meth:`DetectionDataset.subset`, :meth:`~DetectionDataset.select`
and :func:`ssmd.data.splits.apply_split` return light views that share the parent's
caches.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ssmd.data.io import read_image
from ssmd.structures.sample import Sample
from ssmd.utils.errors import DataError

__all__ = [
    "DetectionDataset",
    "ImageRecord",
    "SubsetDataset",
    "Transform",
    "empty_annotation",
    "make_records",
]

Transform = Callable[[Sample], Sample]
"""A sample transform: takes and returns a :class:`Sample` (image and boxes together)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        image_id: integer id (COCO ``image_id``); ``1..N`` in sorted ``file_name`` order
            for folder formats.
        file_name: path relative to the dataset root, ``/``-separated; the key used by
            split manifests.
        width: image width in pixels.
        height: image height in pixels.
        path: absolute (or as-given) path of the image file.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    path: Path


def empty_annotation() -> tuple[Tensor, Tensor]:
    """``(Tensor[0, 4] float32, Tensor[0] int64)``: an image without objects."""
    return torch.zeros((0, 4), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64)


def make_records(
    root: Path, file_names: Iterable[str], sizes: Callable[[str], tuple[int, int]]
) -> list[ImageRecord]:
    """Records with ids ``1..N`` in sorted ``file_name`` order.

    Args:
        root: dataset root; ``path = root / file_name``.
        file_names: ``/``-separated paths relative to ``root``.
        sizes: ``file_name -> (width, height)``.
    """
    out = []
    for k, name in enumerate(sorted(file_names), start=1):
        w, h = sizes(name)
        out.append(ImageRecord(image_id=k, file_name=name, width=w, height=h, path=root / name))
    return out


class DetectionDataset(Dataset[Sample], abc.ABC):
    """Base class: images with ``xyxy`` boxes and labels ``1..K``.

    Subclasses fill ``records`` and ``categories`` and implement :meth:`_annotation`
    (and :meth:`_load_image` / :meth:`_ignore` when the default does not fit).

    Args:
        records: one :class:`ImageRecord` per image; ``file_name`` and ``image_id`` unique.
        categories: COCO-style ``[{"id": 1, "name": "nucleus"}, ...]`` in label order.
        transform: applied to every sample returned by ``__getitem__``.
        labeled: per-index flags; default all ``True``.
        source: file or folder the dataset was read from (for error messages).
    """

    format_name: ClassVar[str] = ""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        categories: Sequence[dict[str, Any]],
        transform: Transform | None = None,
        labeled: Sequence[bool] | None = None,
        source: str | Path = "",
    ) -> None:
        self.records: list[ImageRecord] = list(records)
        self.categories: list[dict[str, Any]] = [dict(c) for c in categories]
        self.transform = transform
        self.source = str(source)
        self._index: dict[str, int] = {}
        ids: set[int] = set()
        for i, rec in enumerate(self.records):
            if rec.file_name in self._index:
                raise DataError(
                    self.source, "file_name", rec.file_name, "duplicate image file name"
                )
            if rec.image_id in ids:
                raise DataError(self.source, "image_id", rec.image_id, "duplicate image id")
            self._index[rec.file_name] = i
            ids.add(rec.image_id)
        if labeled is None:
            self._labeled = [True] * len(self.records)
        else:
            self._labeled = [bool(v) for v in labeled]
            if len(self._labeled) != len(self.records):
                raise ValueError(
                    f"labeled has {len(self._labeled)} flags for {len(self.records)} images"
                )

    # ------------------------------------------------------------------ sizes and lookup
    def __len__(self) -> int:
        return len(self.records)

    def _check_index(self, i: int) -> int:
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n if n else i

    def index_of(self, file_name: str) -> int:
        """Index of the image whose ``file_name`` is given.

        Raises:
            DataError: no image has that file name.
        """
        try:
            return self._index[file_name]
        except KeyError:
            raise DataError(
                self.source, "file_name", file_name, "no image with this file name in the dataset"
            ) from None

    @property
    def file_names(self) -> list[str]:
        """``file_name`` of every image, in index order."""
        return [r.file_name for r in self.records]

    @property
    def num_classes(self) -> int:
        """``K``, the number of categories (labels are ``1..K``)."""
        return len(self.categories)

    @property
    def label_to_category(self) -> dict[int, int]:
        """Map from contiguous label ``1..K`` to the category ``id`` to write back."""
        return {k: int(c["id"]) for k, c in enumerate(self.categories, start=1)}

    # ------------------------------------------------------------------ labeled flags
    def is_labeled(self, i: int) -> bool:
        """Whether image ``i``'s boxes may be used as supervision."""
        return self._labeled[self._check_index(i)]

    def set_labeled(self, i: int, value: bool) -> None:
        """Mark image ``i`` labeled (``True``) or unlabeled (``False``), in place."""
        self._labeled[self._check_index(i)] = bool(value)

    def labeled_flags(self) -> list[bool]:
        """The per-index labeled flags (a copy)."""
        return list(self._labeled)

    # ------------------------------------------------------------------ data access
    def __getitem__(self, i: int) -> Sample:
        i = self._check_index(i)
        rec = self.records[i]
        image = self._load_image(i)  # (3, H, W)
        if (int(image.shape[1]), int(image.shape[2])) != (rec.height, rec.width):
            raise DataError(
                rec.path,
                "image.size",
                (int(image.shape[2]), int(image.shape[1])),
                f"decoded (width, height) differs from the record's ({rec.width}, {rec.height})",
            )
        boxes, labels = self.annotation(i)
        sample = Sample(
            image=image,
            boxes=boxes,
            labels=labels,
            image_id=rec.image_id,
            path=str(rec.path),
            is_labeled=self._labeled[i],
            orig_size=(rec.height, rec.width),
            ignore=self.ignore_regions(i),
            image_label=self.image_class(i),
        )
        return self.transform(sample) if self.transform is not None else sample

    def annotation(self, i: int) -> tuple[Tensor, Tensor]:
        """Ground truth of image ``i`` without decoding its pixels where possible.

        Returns:
            ``(boxes Tensor[N, 4] float32 xyxy absolute pixels, labels Tensor[N] int64 in 1..K)``,
            fresh tensors the caller may modify. Unlabeled images return their boxes too.
        """
        boxes, labels = self._annotation(self._check_index(i))
        return boxes.clone(), labels.clone()

    def ignore_regions(self, i: int) -> Tensor:
        """Regions to ignore in evaluation (COCO ``iscrowd``), ``Tensor[M, 4]`` xyxy."""
        return self._ignore(self._check_index(i))[0].clone()

    def ignore_annotation(self, i: int) -> tuple[Tensor, Tensor]:
        """Ignore regions with their labels: ``(Tensor[M, 4] xyxy, Tensor[M] int64)``."""
        boxes, labels = self._ignore(self._check_index(i))
        return boxes.clone(), labels.clone()

    @abc.abstractmethod
    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        """Boxes and labels of image ``i`` (every format implements this)."""

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return empty_annotation()

    def image_fields(self, i: int) -> dict[str, Any]:
        """Image-level fields of image ``i`` beyond its boxes (default none).

        Formats with image-level annotation return them here (BUSI:
        ``{"image_label": "normal" | "benign" | "malignant"}``);
        :func:`~ssmd.data.datasets.coco.to_coco_dict` writes them into the image entry.
        """
        self._check_index(i)
        return {}

    def image_class(self, i: int) -> int | None:
        """Image-level class index of image ``i`` (``Sample.image_label``), ``None`` if none.

        The index is that of the detector's ``K + 1`` region classes: ``0`` an image with no
        lesion (background everywhere), ``c`` an image whose lesions are of category label
        ``c`` (BUSI: normal 0, benign 1, malignant 2). Multiple-instance learning
        (:mod:`ssmd.methods.mil`) reads it from the weak images.
        """
        self._check_index(i)
        return None

    def _load_image(self, i: int) -> Tensor:
        """``Tensor[3, H, W]`` float32 in ``[0, 1]`` of image ``i`` (before ``transform``)."""
        return read_image(self.records[i].path)

    # ------------------------------------------------------------------ views
    def subset(
        self,
        indices: Sequence[int],
        labeled: Sequence[bool] | None = None,
        transform: Transform | str | None = "inherit",
    ) -> SubsetDataset:
        """A view on ``indices`` (image ids and caches are shared with this dataset).

        Args:
            indices: indices into this dataset, any order, no repeats.
            labeled: flags for the view; default: this dataset's flags.
            transform: the view's transform; ``"inherit"`` keeps this dataset's.
        """
        tf = self.transform if transform == "inherit" else transform
        if isinstance(tf, str):
            raise ValueError(f"transform must be a callable, None or 'inherit', got {tf!r}")
        return SubsetDataset(self, indices, labeled=labeled, transform=tf)

    def select(
        self,
        file_names: Sequence[str],
        labeled: Iterable[str] | None = None,
        transform: Transform | str | None = "inherit",
    ) -> SubsetDataset:
        """A view on the images named by ``file_names`` (in that order).

        Args:
            file_names: ``file_name`` of each image to keep.
            labeled: if given, exactly these file names are labeled in the view and the
                rest unlabeled; default: this dataset's flags.
            transform: as in :meth:`subset`.

        Raises:
            DataError: a name is not in the dataset (the message names it).
        """
        indices = [self.index_of(n) for n in file_names]
        flags = None
        if labeled is not None:
            keep = set(labeled)
            for name in keep:
                self.index_of(name)
            flags = [n in keep for n in file_names]
        return self.subset(indices, labeled=flags, transform=transform)

    def with_transform(self, transform: Transform | None) -> SubsetDataset:
        """A view on all images with a different transform."""
        return self.subset(range(len(self)), transform=transform)

    def __repr__(self) -> str:
        n_lab = sum(self._labeled)
        return (
            f"{type(self).__name__}(images={len(self)}, labeled={n_lab}, "
            f"categories={[c.get('name') for c in self.categories]}, source={self.source!r})"
        )


class SubsetDataset(DetectionDataset):
    """A view on some images of a parent dataset (see :meth:`DetectionDataset.subset`).

    Views of views resolve to the root dataset, so caches are shared and access is
    one lookup deep.
    """

    format_name: ClassVar[str] = "subset"
    _parent: DetectionDataset
    _indices: list[int]

    def __init__(
        self,
        parent: DetectionDataset,
        indices: Sequence[int],
        labeled: Sequence[bool] | None = None,
        transform: Transform | None = None,
    ) -> None:
        idx = [parent._check_index(int(i)) for i in indices]
        if len(set(idx)) != len(idx):
            raise ValueError("subset indices contain repeats")
        if labeled is None:
            labeled = [parent.is_labeled(i) for i in idx]
        if isinstance(parent, SubsetDataset):
            idx = [parent._indices[i] for i in idx]
            parent = parent._parent
        self._parent = parent
        self._indices = idx
        super().__init__(
            [parent.records[i] for i in idx],
            parent.categories,
            transform=transform,
            labeled=labeled,
            source=parent.source,
        )

    @property
    def parent(self) -> DetectionDataset:
        """The root dataset this view reads from."""
        return self._parent

    @property
    def parent_indices(self) -> list[int]:
        """Index in :attr:`parent` of each image of the view."""
        return list(self._indices)

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return self._parent._annotation(self._indices[i])

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return self._parent._ignore(self._indices[i])

    def image_fields(self, i: int) -> dict[str, Any]:
        return self._parent.image_fields(self._indices[self._check_index(i)])

    def image_class(self, i: int) -> int | None:
        return self._parent.image_class(self._indices[self._check_index(i)])

    def _load_image(self, i: int) -> Tensor:
        return self._parent._load_image(self._indices[i])
