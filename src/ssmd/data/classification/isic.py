"""ISIC 2018 Task 3 layout: a folder of JPEGs plus ``ISIC2018_Task3_Training_GroundTruth.csv``.

The CSV has a column ``image`` and the one-hot columns ``MEL, NV, BCC, AKIEC, BKL, DF, VASC``.
An optional ``lesion_ids.csv`` (``image,lesion_id``) gives each image's HAM10000 lesion: splits
then keep all images of a lesion in one part (several images of one lesion in train and test
would leak the test set).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from ssmd.data.classification.base import ClassificationDataset, load_image_array
from ssmd.utils.errors import DataError

__all__ = ["ISIC_CLASSES", "load_isic2018"]

ISIC_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
GT_NAME = "ISIC2018_Task3_Training_GroundTruth.csv"
IMAGE_DIR = "ISIC2018_Task3_Training_Input"
LESION_NAME = "lesion_ids.csv"


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(path, "file", str(path), "CSV file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in required:
            if col not in header:
                raise DataError(path, col, header, "missing CSV column")
        return list(reader)


def read_ground_truth(path: Path) -> tuple[list[str], np.ndarray]:
    """Image ids and the ``(N, 7)`` one-hot matrix of the ground-truth CSV.

    Raises:
        DataError: missing column, a value that is not a number in ``{0, 1}``, a row that does
            not sum to 1, or a repeated image id (each names the file, field and value).
    """
    rows = _read_csv(path, ("image", *ISIC_CLASSES))
    ids: list[str] = []
    labels = np.zeros((len(rows), len(ISIC_CLASSES)), dtype=np.float32)
    seen: set[str] = set()
    for r, row in enumerate(rows):
        image = (row["image"] or "").strip()
        if not image or image in seen:
            raise DataError(path, f"row {r + 2}.image", image, "empty or repeated image id")
        seen.add(image)
        for c, name in enumerate(ISIC_CLASSES):
            raw = row[name]
            try:
                v = float(raw)
            except (TypeError, ValueError) as exc:
                raise DataError(path, f"{image}.{name}", raw, "not a number") from exc
            if v not in (0.0, 1.0):
                raise DataError(path, f"{image}.{name}", raw, "must be 0 or 1")
            labels[r, c] = v
        if labels[r].sum() != 1.0:
            raise DataError(
                path, f"{image}.labels", labels[r].tolist(), "one-hot row must sum to 1"
            )
        ids.append(image)
    return ids, labels


def load_isic2018(
    root: str | Path,
    image_size: int | None = 64,
    csv_path: str | Path | None = None,
    image_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> ClassificationDataset:
    """Load the ISIC 2018 Task 3 layout.

    Args:
        root: folder holding the CSV(s) and the image folder.
        image_size: resize every image to this side (``None``: keep, all must then agree).
        csv_path: ground-truth CSV (default ``root/ISIC2018_Task3_Training_GroundTruth.csv``).
        image_dir: JPEG folder (default ``root/ISIC2018_Task3_Training_Input``).
        cache_dir: if given, the decoded images are cached there as ``.npz`` (keyed by the
            CSV content and the size) so later runs skip JPEG decoding.

    Raises:
        DataError: missing file or column, bad label row, an image listed in the CSV with no
            JPEG, or a ``lesion_ids.csv`` that misses an image or names an unknown one.
    """
    root = Path(root)
    gt = Path(csv_path) if csv_path else root / GT_NAME
    folder = Path(image_dir) if image_dir else root / IMAGE_DIR
    ids, labels = read_ground_truth(gt)
    groups = list(ids)
    lesion_csv = root / LESION_NAME
    if lesion_csv.is_file():
        index = {name: i for i, name in enumerate(ids)}
        found = [False] * len(ids)
        for row in _read_csv(lesion_csv, ("image", "lesion_id")):
            image = row["image"].strip()
            if image not in index:
                raise DataError(lesion_csv, "image", image, f"unknown image (not in {gt.name})")
            groups[index[image]] = row["lesion_id"].strip()
            found[index[image]] = True
        if not all(found):
            raise DataError(lesion_csv, "image", ids[found.index(False)], "no lesion_id given")
    images = None
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1(
            gt.read_bytes() + f"{folder.resolve()}|{image_size}".encode()
        ).hexdigest()
        cache_file = Path(cache_dir) / f"isic2018_{image_size}_{key[:12]}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as z:
                images = z["images"]
    if images is None:
        if not folder.is_dir():
            raise DataError(folder, "folder", str(folder), "image folder not found")
        arrays = [load_image_array(folder / f"{i}.jpg", image_size, 3) for i in ids]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise DataError(folder, "image size", sorted(shapes)[:3], "differ: set image_size")
        images = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(tmp, images=images)
            tmp.replace(cache_file)
    return ClassificationDataset(
        images, labels, ids, ISIC_CLASSES, multi_label=False, groups=groups, source=gt
    )
