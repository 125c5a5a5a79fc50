"""ISIC 2018 Task 3 layouts: a folder of JPEGs plus its ground-truth CSV.

The challenge released three parts, each as an image folder and a ground-truth CSV:
``ISIC2018_Task3_<Part>_Input/`` and ``ISIC2018_Task3_<Part>_GroundTruth.csv`` for ``<Part>``
= ``Training``, ``Validation`` and ``Test`` (:data:`ISIC_PARTS`). The CSV may sit next to the
image folder or inside the ``ISIC2018_Task3_<Part>_GroundTruth/`` folder its zip unpacks to.
``root`` may be the folder holding one part, that part's image folder or its CSV; a folder
holding several parts is refused with the paths that pick one (reading the Training part when
the Test part was meant would score a model on its own training images). The part that was
read is the dataset's ``source`` (the CSV path), which ``ssmd evaluate`` prints.

The CSV has a column ``image`` and the one-hot columns ``MEL, NV, BCC, AKIEC, BKL, DF, VASC``.
An optional ``lesion_ids.csv`` (``image,lesion_id``) next to the part gives each image's
HAM10000 lesion: splits then keep all images of a lesion in one part (several images of one
lesion in train and test would leak the test set). For the Training part it must list every
image and only those; the Validation and Test parts are scored, not split, so there it is
optional and may also list other parts' images (a lesion file for the whole of HAM10000):
only the rows of this part's images are used, and an image without a row is its own group.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmd.data.classification.base import ClassificationDataset, load_image_array
from ssmd.utils.errors import DataError

__all__ = ["ISIC_CLASSES", "ISIC_PARTS", "IsicLayout", "find_isic_layout", "load_isic2018"]

ISIC_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC_PARTS = ("Training", "Validation", "Test")
"""The parts of the official ISIC 2018 Task 3 release, each with its own layout."""
GT_NAME = "ISIC2018_Task3_Training_GroundTruth.csv"
IMAGE_DIR = "ISIC2018_Task3_Training_Input"
LESION_NAME = "lesion_ids.csv"


def _gt_name(part: str) -> str:
    return f"ISIC2018_Task3_{part}_GroundTruth.csv"


def _input_name(part: str) -> str:
    return f"ISIC2018_Task3_{part}_Input"


@dataclass(frozen=True)
class IsicLayout:
    """Where one part of the ISIC 2018 Task 3 release lies.

    Attributes:
        part: ``Training``, ``Validation`` or ``Test``.
        csv: its ground-truth CSV.
        images: its JPEG folder.
        base: the folder holding the part (where ``lesion_ids.csv`` is looked for).
    """

    part: str
    csv: Path
    images: Path
    base: Path


def _part_of(name: str, suffix: str) -> str | None:
    for part in ISIC_PARTS:
        if name == f"ISIC2018_Task3_{part}_{suffix}":
            return part
    return None


def _csv_in(base: Path, part: str) -> Path | None:
    name = _gt_name(part)
    for candidate in (base / name, base / Path(name).stem / name):
        if candidate.is_file():
            return candidate
    return None


def find_isic_layout(root: str | Path) -> IsicLayout:
    """The one ISIC 2018 Task 3 part at ``root`` (module docstring).

    Raises:
        DataError: ``root`` does not exist, holds no part's CSV (naming the files looked
            for), or holds several parts (naming the folders that pick one).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder", str(root), "not found")
    part: str | None = None
    base, images = root, None
    if root.is_file():  # the ground-truth CSV itself
        part = _part_of(root.stem, "GroundTruth")
        if part is None:
            raise DataError(
                root, "file", root.name,
                "not an ISIC 2018 Task 3 ground-truth CSV (ISIC2018_Task3_<Part>_GroundTruth.csv)",
            )  # fmt: skip
        base = root.parent.parent if _part_of(root.parent.name, "GroundTruth") else root.parent
        return IsicLayout(part, root, base / _input_name(part), base)
    if (part := _part_of(root.name, "Input")) is not None:  # the image folder
        base, images = root.parent, root
    elif (part := _part_of(root.name, "GroundTruth")) is not None:  # the unzipped CSV folder
        base = root.parent
    if part is None:
        found = [q for q in ISIC_PARTS if _csv_in(root, q) is not None]
        if not found:
            inputs = [q for q in ISIC_PARTS if (root / _input_name(q)).is_dir()]
            also = (
                f"; found {_input_name(inputs[0])}/ but not its {_gt_name(inputs[0])}"
                if inputs
                else ""
            )
            raise DataError(
                root / GT_NAME, "file", str(root / GT_NAME),
                "CSV file not found: an ISIC 2018 Task 3 folder holds one of "
                + ", ".join(_gt_name(q) for q in ISIC_PARTS)
                + " (or the ..._GroundTruth/ folder with it)" + also,
            )  # fmt: skip
        if len(found) > 1:
            picks = ", ".join(str(root / _input_name(q)) for q in found)
            raise DataError(
                root, "layout", "/".join(found),
                f"holds several ISIC 2018 Task 3 parts; give the image folder of the one to read: {picks}",
            )  # fmt: skip
        part = found[0]
    csv_path = _csv_in(base, part)
    if csv_path is None:
        wanted = base / _gt_name(part)
        raise DataError(
            wanted, "file", str(wanted),
            f"CSV file not found (the {part} ground truth; also looked in "
            f"{base / Path(_gt_name(part)).stem}/)",
        )  # fmt: skip
    return IsicLayout(part, csv_path, images or base / _input_name(part), base)


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
    """Load one part of the ISIC 2018 Task 3 release (Training, Validation or Test).

    Args:
        root: the folder holding one part (its CSV and image folder), that part's image
            folder, or its CSV (module docstring); with ``csv_path`` given, the folder of
            ``lesion_ids.csv`` only.
        image_size: resize every image to this side (``None``: keep, all must then agree).
        csv_path: ground-truth CSV (default: found under ``root``).
        image_dir: JPEG folder (default: the part's ``ISIC2018_Task3_<Part>_Input``).
        cache_dir: if given, the decoded images are cached there as ``.npz`` (keyed by the
            CSV content and the size) so later runs skip JPEG decoding.

    Returns:
        The dataset; its ``source`` is the ground-truth CSV that was read (it names the part).

    Raises:
        DataError: no part or several parts at ``root``, missing file or column, bad label
            row, an image listed in the CSV with no JPEG, or (Training part) a
            ``lesion_ids.csv`` that misses an image or names an unknown one.
    """
    root = Path(root)
    if csv_path:
        gt = Path(csv_path)
        part = _part_of(gt.stem, "GroundTruth") or "Training"
        base = root
        folder = Path(image_dir) if image_dir else root / _input_name(part)
    else:
        layout = find_isic_layout(root)
        gt, part, base = layout.csv, layout.part, layout.base
        folder = Path(image_dir) if image_dir else layout.images
    ids, labels = read_ground_truth(gt)
    groups = list(ids)
    lesion_csv = base / LESION_NAME
    if lesion_csv.is_file():
        strict = part == "Training"
        index = {name: i for i, name in enumerate(ids)}
        found = [False] * len(ids)
        for row in _read_csv(lesion_csv, ("image", "lesion_id")):
            image = (row["image"] or "").strip()
            if image not in index:
                if not strict:
                    continue  # a lesion file for the whole release also lists other parts
                raise DataError(lesion_csv, "image", image, f"unknown image (not in {gt.name})")
            groups[index[image]] = (row["lesion_id"] or "").strip()
            found[index[image]] = True
        if strict and not all(found):
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
