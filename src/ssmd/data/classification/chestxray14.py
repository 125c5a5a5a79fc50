"""ChestX-ray14 layout: ``Data_Entry_2017.csv`` plus an image folder (multi-label).

``Finding Labels`` joins the findings of an image with ``|``; ``No Finding`` is the all-zero
label. Images are looked up by ``Image Index`` under the image folder (the official release
spreads them over ``images_001/images/ ... images_012/images/``: every PNG below the folder is
indexed). ``Patient ID`` is the group a split never cuts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ssmd.data.classification.base import ClassificationDataset, load_image_array
from ssmd.utils.errors import DataError

__all__ = ["CXR14_CLASSES", "load_chestxray14"]

CXR14_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
CSV_NAME = "Data_Entry_2017.csv"
NO_FINDING = "No Finding"


def load_chestxray14(
    root: str | Path,
    image_size: int | None = 64,
    csv_path: str | Path | None = None,
    image_dir: str | Path | None = None,
) -> ClassificationDataset:
    """Load the ChestX-ray14 layout as a multi-label dataset (grey, 1 channel).

    Args:
        root: folder holding ``Data_Entry_2017.csv`` and the images.
        image_size: resize to this side (the originals are 1024 px).
        csv_path: the CSV (default ``root/Data_Entry_2017.csv``).
        image_dir: where the PNGs are (searched recursively; default ``root``).

    Raises:
        DataError: missing file or column, an unknown finding, a repeated image or an image
            listed in the CSV that is not found.
    """
    root = Path(root)
    path = Path(csv_path) if csv_path else root / CSV_NAME
    folder = Path(image_dir) if image_dir else root
    if not path.is_file():
        raise DataError(path, "file", str(path), "CSV file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in ("Image Index", "Finding Labels", "Patient ID"):
            if col not in header:
                raise DataError(path, col, header, "missing CSV column")
        rows = list(reader)
    files = {p.name: p for p in folder.rglob("*.png")} if folder.is_dir() else {}
    column = {c: i for i, c in enumerate(CXR14_CLASSES)}
    ids: list[str] = []
    groups: list[str] = []
    labels = np.zeros((len(rows), len(CXR14_CLASSES)), dtype=np.float32)
    arrays = []
    for r, row in enumerate(rows):
        name = row["Image Index"].strip()
        if name in ids:
            raise DataError(path, f"row {r + 2}.Image Index", name, "repeated image")
        for finding in (f.strip() for f in row["Finding Labels"].split("|")):
            if finding == NO_FINDING:
                continue
            if finding not in column:
                raise DataError(
                    path,
                    f"{name}.Finding Labels",
                    finding,
                    f"unknown finding; known: {CXR14_CLASSES}",
                )
            labels[r, column[finding]] = 1.0
        if name not in files:
            raise DataError(
                path, f"row {r + 2}.Image Index", name, f"unknown image: not found under {folder}"
            )
        arrays.append(load_image_array(files[name], image_size, 1))
        ids.append(name)
        groups.append(row["Patient ID"].strip())
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(folder, "image size", sorted(shapes)[:3], "differ: set image_size")
    images = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 1), np.uint8)
    return ClassificationDataset(
        images, labels, ids, CXR14_CLASSES, multi_label=True, groups=groups, source=path
    )
