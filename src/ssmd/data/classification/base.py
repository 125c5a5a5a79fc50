"""The in-memory classification dataset every loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssmd.utils.errors import DataError

__all__ = ["CLASSIFICATION_FORMATS", "ClassificationDataset", "load_image_array"]

CLASSIFICATION_FORMATS = ("medmnist", "isic2018", "chestxray14", "synthetic_cls")
"""Names accepted by :func:`ssmd.data.classification.build_classification_dataset`."""


def load_image_array(path: str | Path, size: int | None, channels: int) -> np.ndarray:
    """Read an image file as ``uint8`` ``(H, W, C)``, resized to ``size x size`` if given.

    Args:
        path: image file (any format Pillow reads).
        size: output side in pixels (bilinear; ``None`` keeps the file's size).
        channels: 1 (grey) or 3 (RGB).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file", str(p), "image file not found")
    try:
        with Image.open(p) as raw:
            im: Image.Image = raw.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise DataError(p, "image", p.name, f"not a readable image: {exc}") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


class ClassificationDataset:
    """Images, labels and ids of a classification set, held in memory.

    ``dataset[i]`` is ``(image, label)``: a float ``Tensor[C, H, W]`` in ``[0, 1]`` and a float
    ``Tensor[K]`` — one-hot for single-label tasks, a 0/1 vector for multi-label ones.

    Args:
        images: ``uint8`` array ``(N, H, W, C)``.
        labels: ``(N, K)`` array of 0/1.
        ids: one unique id per image (file stem or ``"<part>_<index>"``); splits store these.
        class_names: the ``K`` class names.
        multi_label: ``True`` for multi-label (sigmoid) tasks, else single-label (softmax).
        groups: per-image group (lesion / patient id) that a split must never cut; defaults
            to the ids (each image its own group).
        parts: per-image predefined part (``"train"``/``"val"``/``"test"``) when the format has
            an official split (MedMNIST), else ``None``.
        source: file or folder it came from (for messages).

    Raises:
        DataError: inconsistent lengths, duplicate ids, or a single-label row that is not
            one-hot.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        ids: Sequence[str],
        class_names: Sequence[str],
        multi_label: bool,
        groups: Sequence[str] | None = None,
        parts: Sequence[str] | None = None,
        source: str | Path = "<memory>",
    ) -> None:
        self.source = str(source)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(source, "images", images.shape, "expected a uint8 array (N, H, W, C)")
        n = images.shape[0]
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (n, len(class_names)):
            raise DataError(source, "labels", labels.shape, f"expected ({n}, {len(class_names)})")
        if len(ids) != n or len(set(ids)) != n:
            raise DataError(source, "ids", len(ids), f"need {n} unique ids")
        if not multi_label:
            sums = labels.sum(axis=1)
            bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    source, f"labels[{ids[i]}]", labels[i].tolist(), "one-hot row must sum to 1"
                )
        self.images = images
        self.labels = labels
        self.ids = [str(s) for s in ids]
        self.class_names = [str(c) for c in class_names]
        self.multi_label = bool(multi_label)
        self.groups = [str(g) for g in groups] if groups is not None else list(self.ids)
        if len(self.groups) != n:
            raise DataError(source, "groups", len(self.groups), f"need {n} groups")
        self.parts = [str(p) for p in parts] if parts is not None else None
        self._index = {name: i for i, name in enumerate(self.ids)}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """``K``."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Image channels ``C``."""
        return int(self.images.shape[3])

    def index_of(self, image_id: str) -> int:
        """Position of ``image_id``.

        Raises:
            DataError: unknown id.
        """
        if image_id not in self._index:
            raise DataError(self.source, "image", image_id, "not an image of this dataset")
        return self._index[image_id]

    def class_indices(self) -> np.ndarray:
        """Integer class per image (single-label) — the argmax of the one-hot rows."""
        return np.asarray(self.labels.argmax(axis=1), dtype=np.int64)

    def tensors(self, indices: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """A batch: images ``Tensor[B, C, H, W]`` in ``[0, 1]`` and labels ``Tensor[B, K]``."""
        idx = np.asarray(indices, dtype=np.int64)
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float().div_(255.0)  # (B,C,H,W)
        return x, torch.from_numpy(self.labels[idx])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.tensors([i])
        return x[0], y[0]
