"""MedMNIST ``.npz`` files: ``train_images``, ``train_labels``, ``val_*``, ``test_*``.

Any 2D MedMNIST set works. ``*_labels`` of shape ``(N, 1)`` hold class indices (a single-label
task, e.g. PneumoniaMNIST: 0 normal, 1 pneumonia); shape ``(N, K)`` with ``K > 1`` holds 0/1
columns (multi-label, e.g. ChestMNIST). The official train/val/test parts are kept as the
dataset's predefined ``parts``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ssmd.data.classification.base import ClassificationDataset
from ssmd.utils.errors import DataError

__all__ = ["load_medmnist"]

_PARTS = ("train", "val", "test")
_KNOWN_NAMES = {"pneumoniamnist": ["normal", "pneumonia"]}


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` ``uint8`` images to ``size x size``."""
    out = np.empty((images.shape[0], size, size, images.shape[3]), dtype=np.uint8)
    for i, im in enumerate(images):
        pil = Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im)
        arr = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        out[i] = arr[:, :, None] if arr.ndim == 2 else arr
    return out


def load_medmnist(
    path: str | Path, image_size: int | None = None, class_names: Sequence[str] | None = None
) -> ClassificationDataset:
    """Load a MedMNIST ``.npz`` file.

    Args:
        path: the ``.npz`` file.
        image_size: resize to this side (``None``: keep the file's, e.g. 28).
        class_names: names of the ``K`` classes (default: known names, else ``"0".."K-1"``).

    Raises:
        DataError: missing file, missing key, inconsistent shapes or a label out of range.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file", str(p), "MedMNIST .npz file not found")
    try:
        npz = np.load(p)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(p, "file", p.name, f"not a readable .npz file: {exc}") from exc
    with npz:
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        ids: list[str] = []
        parts: list[str] = []
        for part in _PARTS:
            for key in (f"{part}_images", f"{part}_labels"):
                if key not in npz.files:
                    raise DataError(p, key, sorted(npz.files), "missing key")
            x = np.asarray(npz[f"{part}_images"])
            y = np.asarray(npz[f"{part}_labels"])
            if x.ndim == 3:
                x = x[:, :, :, None]  # (N, H, W) -> (N, H, W, 1)
            if x.ndim != 4 or x.dtype != np.uint8:
                raise DataError(p, f"{part}_images", x.shape, "expected uint8 (N, H, W[, C])")
            if y.ndim == 1:
                y = y[:, None]
            if y.shape[0] != x.shape[0]:
                raise DataError(
                    p, f"{part}_labels", y.shape, f"{x.shape[0]} images but {y.shape[0]} labels"
                )
            images.append(x)
            labels.append(y.astype(np.int64))
            ids.extend(f"{part}_{i:06d}" for i in range(x.shape[0]))
            parts.extend([part] * x.shape[0])
    all_x = np.concatenate(images)
    raw = np.concatenate(labels)
    multi_label = raw.shape[1] > 1
    if multi_label:
        bad = np.argwhere((raw != 0) & (raw != 1))
        if bad.size:
            r, c = (int(v) for v in bad[0])
            raise DataError(p, f"labels[{ids[r]}][{c}]", int(raw[r, c]), "must be 0 or 1")
        onehot = raw.astype(np.float32)
    else:
        k = int(raw.max()) + 1
        if raw.min() < 0:
            r = int(np.argmin(raw[:, 0]))
            raise DataError(p, f"labels[{ids[r]}]", int(raw[r, 0]), "class index < 0")
        onehot = np.eye(k, dtype=np.float32)[raw[:, 0]]
    k = onehot.shape[1]
    names = (
        list(class_names) if class_names else _KNOWN_NAMES.get(p.stem, [str(i) for i in range(k)])
    )
    if len(names) != k:
        raise DataError(p, "class_names", names, f"expected {k} names")
    if image_size is not None and image_size != all_x.shape[1]:
        all_x = _resize(all_x, int(image_size))
    return ClassificationDataset(all_x, onehot, ids, names, multi_label, parts=parts, source=p)
