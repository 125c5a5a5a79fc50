"""Build a classification dataset from a format name and a source."""

from __future__ import annotations

from typing import Any

from ssmd.data.classification.base import CLASSIFICATION_FORMATS, ClassificationDataset
from ssmd.data.classification.chestxray14 import load_chestxray14
from ssmd.data.classification.isic import load_isic2018
from ssmd.data.classification.medmnist import load_medmnist
from ssmd.data.classification.synthetic import make_synthetic_classification

__all__ = ["build_classification_dataset"]


def build_classification_dataset(
    fmt: str, root: Any = None, image_size: int | None = None, **kwargs: Any
) -> ClassificationDataset:
    """The dataset of format ``fmt`` at ``root``.

    Args:
        fmt: one of :data:`CLASSIFICATION_FORMATS`.
        root: ``.npz`` file (medmnist), folder (isic2018, chestxray14); unused for synthetic_cls.
        image_size: resize side (synthetic_cls: the generated side).
        **kwargs: format-specific options (``cache_dir`` for isic2018; ``n_images``,
            ``num_classes``, ``multi_label``, ``seed`` for synthetic_cls).

    Raises:
        ValueError: unknown format or a missing root.
    """
    if fmt == "synthetic_cls":
        return make_synthetic_classification(image_size=int(image_size or 32), **kwargs)
    if fmt not in CLASSIFICATION_FORMATS:
        raise ValueError(f"data.format = {fmt!r}: expected one of {CLASSIFICATION_FORMATS}")
    if root in (None, ""):
        raise ValueError(f"data.root is required for data.format = {fmt!r}")
    if fmt == "medmnist":
        return load_medmnist(root, image_size=image_size, **kwargs)
    if fmt == "isic2018":
        return load_isic2018(root, image_size=image_size, **kwargs)
    return load_chestxray14(root, image_size=image_size, **kwargs)
