"""Classification loaders (MedMNIST, ISIC 2018, ChestX-ray14, synthetic) and their splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data.classification import build_classification_dataset, make_classification_split
from ssmd.data.classification.augment import BatchAugment
from ssmd.data.classification.chestxray14 import CXR14_CLASSES, load_chestxray14
from ssmd.data.classification.isic import ISIC_CLASSES, load_isic2018
from ssmd.data.classification.medmnist import load_medmnist
from ssmd.utils.errors import DataError

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


# ---------------------------------------------------------------- MedMNIST
def _write_npz(path: Path, labels_shape: tuple[int, ...] = (1,), k: int = 2) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{part}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{part}_labels"] = rng.integers(0, k, (n, *labels_shape)).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_medmnist_single_label(tmp_path: Path) -> None:
    ds = load_medmnist(_write_npz(tmp_path / "pneumoniamnist.npz"))
    assert len(ds) == 20 and ds.num_classes == 2 and not ds.multi_label
    assert ds.class_names == ["normal", "pneumonia"]
    assert ds.parts is not None and ds.parts.count("test") == 6
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and float(x.max()) <= 1.0
    assert float(y.sum()) == 1.0
    assert load_medmnist(tmp_path / "pneumoniamnist.npz", image_size=16)[0][0].shape == (1, 16, 16)


def test_medmnist_multi_label(tmp_path: Path) -> None:
    ds = load_medmnist(_write_npz(tmp_path / "chest.npz", labels_shape=(5,)))
    assert ds.multi_label and ds.num_classes == 5


def test_medmnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_medmnist(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="train_labels"):
        load_medmnist(tmp_path / "bad.npz")


# ---------------------------------------------------------------- ISIC 2018
def _write_isic(
    root: Path, rows: list[tuple[str, int]], lesions: dict[str, str] | None = None
) -> Path:
    (root / "ISIC2018_Task3_Training_Input").mkdir(parents=True)
    with (root / "ISIC2018_Task3_Training_GroundTruth.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", *ISIC_CLASSES])
        for image, cls in rows:
            w.writerow([image, *[f"{float(c == cls):.1f}" for c in range(7)]])
            Image.fromarray(np.full((20, 24, 3), 40 * cls, np.uint8)).save(
                root / "ISIC2018_Task3_Training_Input" / f"{image}.jpg"
            )
    if lesions is not None:
        with (root / "lesion_ids.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "lesion_id"])
            w.writerows(lesions.items())
    return root


def test_isic_loads_layout_and_lesions(tmp_path: Path) -> None:
    rows = [(f"ISIC_{i:07d}", i % 3) for i in range(6)]
    lesions = {f"ISIC_{i:07d}": f"HAM_{i // 2}" for i in range(6)}
    ds = load_isic2018(
        _write_isic(tmp_path, rows, lesions), image_size=16, cache_dir=tmp_path / "c"
    )
    assert len(ds) == 6 and ds.class_names == list(ISIC_CLASSES)
    assert ds[0][0].shape == (3, 16, 16)
    assert ds.class_indices().tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.groups[:2] == ["HAM_0", "HAM_0"]
    cached = load_isic2018(tmp_path, image_size=16, cache_dir=tmp_path / "c")
    assert np.array_equal(cached.images, ds.images)


def test_isic_missing_column(tmp_path: Path) -> None:
    _write_isic(tmp_path, [("ISIC_1", 0)])
    p = tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv"
    p.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF\nISIC_1,1,0,0,0,0,0\n")
    with pytest.raises(DataError, match="VASC") as err:
        load_isic2018(tmp_path)
    assert "GroundTruth.csv" in str(err.value)


def test_isic_row_not_one_hot(tmp_path: Path) -> None:
    _write_isic(tmp_path, [("ISIC_1", 0)])
    p = tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv"
    p.write_text("image," + ",".join(ISIC_CLASSES) + "\nISIC_1,1.0,1.0,0,0,0,0,0\n")
    with pytest.raises(DataError, match=r"ISIC_1\.labels.*sum to 1"):
        load_isic2018(tmp_path)
    p.write_text("image," + ",".join(ISIC_CLASSES) + "\nISIC_1,0.5,0.5,0,0,0,0,0\n")
    with pytest.raises(DataError, match=r"ISIC_1\.MEL.*'0.5'"):
        load_isic2018(tmp_path)


def test_isic_unknown_image_and_missing_jpeg(tmp_path: Path) -> None:
    _write_isic(tmp_path, [("ISIC_1", 0), ("ISIC_2", 1)], {"ISIC_1": "L1", "ISIC_9": "L9"})
    with pytest.raises(DataError, match=r"ISIC_9.*unknown image"):
        load_isic2018(tmp_path)
    (tmp_path / "lesion_ids.csv").unlink()
    (tmp_path / "ISIC2018_Task3_Training_Input" / "ISIC_2.jpg").unlink()
    with pytest.raises(DataError, match=r"ISIC_2\.jpg.*not found"):
        load_isic2018(tmp_path)


# ---------------------------------------------------------------- ChestX-ray14
CXR_HEADER = [
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
    "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
    "OriginalImagePixelSpacing[x", "y]",
]  # fmt: skip


def _write_cxr(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    img_dir = root / "images_001" / "images"
    img_dir.mkdir(parents=True)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CXR_HEADER)
        for name, findings, patient in rows:
            w.writerow([name, findings, 0, patient, 58, "M", "PA", 2682, 2749, 0.143, 0.143])
            Image.fromarray(np.full((40, 40), 100, np.uint8)).save(img_dir / name)
    return root


def test_chestxray14_fixture_in_official_format(tmp_path: Path) -> None:
    rows = [
        ("00000001_000.png", "Cardiomegaly", "1"),
        ("00000001_001.png", "Cardiomegaly|Emphysema", "1"),
        ("00000002_000.png", "No Finding", "2"),
        ("00000003_000.png", "Hernia|Effusion|Mass", "3"),
    ]
    ds = load_chestxray14(_write_cxr(tmp_path, rows), image_size=16)
    assert ds.multi_label and ds.num_classes == 14 and ds.in_channels == 1
    col = {c: i for i, c in enumerate(CXR14_CLASSES)}
    assert ds.labels[1, col["Cardiomegaly"]] == 1 and ds.labels[1, col["Emphysema"]] == 1
    assert ds.labels[1].sum() == 2 and ds.labels[2].sum() == 0 and ds.labels[3].sum() == 3
    assert ds.groups == ["1", "1", "2", "3"]
    split = make_classification_split(ds, seed=0, fractions=(0.5, 0.0, 0.5))
    # the two images of patient 1 stay together
    assert ("00000001_000.png" in split.train) == ("00000001_001.png" in split.train)


def test_chestxray14_errors(tmp_path: Path) -> None:
    _write_cxr(tmp_path, [("a.png", "Cardiomegaly|Fracture", "1")])
    with pytest.raises(DataError, match="Fracture"):
        load_chestxray14(tmp_path)
    (tmp_path / "Data_Entry_2017.csv").write_text(
        ",".join(CXR_HEADER) + "\nzzz.png,No Finding,0,1,58,M,PA,1,1,0.1,0.1\n"
    )
    with pytest.raises(DataError, match=r"zzz\.png.*unknown image"):
        load_chestxray14(tmp_path)
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Patient ID\n")
    with pytest.raises(DataError, match="Finding Labels"):
        load_chestxray14(tmp_path)


# ---------------------------------------------------------------- synthetic and splits
def test_synthetic_is_deterministic_and_multilabel() -> None:
    a = build_classification_dataset("synthetic_cls", image_size=16, n_images=30, seed=1)
    b = build_classification_dataset("synthetic_cls", image_size=16, n_images=30, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    m = build_classification_dataset("synthetic_cls", n_images=50, multi_label=True)
    assert m.multi_label and m.labels.sum(1).max() >= 2


def test_split_stratified_nested_and_group_safe() -> None:
    ds = build_classification_dataset("synthetic_cls", image_size=16, n_images=300, seed=0)
    ds.groups = [f"g{i // 3}" for i in range(len(ds))]
    s5 = make_classification_split(ds, seed=3, labeled_ratio=0.05)
    s20 = make_classification_split(ds, seed=3, labeled_ratio=0.2)
    assert s5.train == s20.train and s5.test == s20.test
    assert set(s5.labeled) < set(s20.labeled)  # nested
    classes = {ds.class_names[int(ds.labels[ds.index_of(n)].argmax())] for n in s5.labeled}
    assert classes == set(ds.class_names)  # every class has a labeled image
    part = {n: p for p in ("train", "val", "test") for n in getattr(s5, p)}
    for g in set(ds.groups):
        members = [ds.ids[i] for i in range(len(ds)) if ds.groups[i] == g]
        assert len({part[n] for n in members}) == 1
    assert make_classification_split(ds, seed=3, labeled_ratio=0.05) == s5
    assert make_classification_split(ds, seed=4, labeled_ratio=0.05).labeled != s5.labeled
    with pytest.raises(ValueError, match="labeled_ratio"):
        make_classification_split(ds, labeled_ratio=0.0)


def test_augment_is_seeded_and_shape_preserving() -> None:
    import torch

    x = torch.rand(4, 1, 12, 12)
    aug = BatchAugment(hflip=0.5, vflip=0.5, rot90=True, translate=2, noise=0.1)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_pneumoniamnist() -> None:
    path = SHARED / "medmnist" / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip(f"real PneumoniaMNIST not found at {path}")
    ds = load_medmnist(path)
    split = make_classification_split(ds, seed=0, labeled_ratio=0.1)
    assert (len(split.train), len(split.val), len(split.test)) == (3882, 524, 624)
    assert len(split.labeled) == pytest.approx(388, abs=2)


@pytest.mark.realdata
def test_real_ham10000_split_by_lesion() -> None:
    root = SHARED / "isic2018_task3"
    if not root.is_dir():
        pytest.skip(f"real HAM10000 (ISIC 2018 layout) not found at {root}")
    ds = load_isic2018(root, image_size=8)
    assert len(ds) == 5984 and ds.labels.sum(0)[1] == 4323  # NV
    split = make_classification_split(ds, seed=0, labeled_ratio=0.2)
    lesion = dict(zip(ds.ids, ds.groups, strict=True))
    train_l = {lesion[n] for n in split.train}
    assert not train_l & {lesion[n] for n in split.test}
    assert len(split.test) == pytest.approx(0.2 * len(ds), rel=0.02)
