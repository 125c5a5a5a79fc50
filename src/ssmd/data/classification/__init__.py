"""Classification datasets (single- and multi-label) and their labeled/unlabeled splits.

One module per on-disk format: :mod:`.medmnist` (MedMNIST ``.npz``), :mod:`.isic`
(ISIC 2018 Task 3 folder + ground-truth CSV), :mod:`.chestxray14` (``Data_Entry_2017.csv``
+ image folder) and :mod:`.synthetic` (generated, no external data). Every loader returns a
:class:`ClassificationDataset`: images held in memory as ``uint8`` arrays at a fixed size,
a ``(N, K)`` float label matrix, and per-image ids and groups (lesion / patient) for splitting.
"""

from __future__ import annotations

from ssmd.data.classification.base import CLASSIFICATION_FORMATS, ClassificationDataset
from ssmd.data.classification.factory import build_classification_dataset
from ssmd.data.classification.splits import make_classification_split

__all__ = [
    "CLASSIFICATION_FORMATS",
    "ClassificationDataset",
    "build_classification_dataset",
    "make_classification_split",
]
