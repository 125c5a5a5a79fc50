"""BUSI layout: hand-computed boxes and labels, image labels in COCO, bad input, real BUSI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.data import build_dataset, dataset_stats
from ssmd.data.datasets.busi import BUSI_FOLDER, BUSIDataset, busi_split, busi_summary
from ssmd.data.datasets.coco import CocoDataset, to_coco_dict, write_coco
from ssmd.utils.errors import DataError

REPO = Path(__file__).resolve().parents[3]
BUSI_ROOT = REPO.parent / "shared" / "data" / "busi"


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_busi(root: Path, scale: int = 1) -> Path:
    """A 5-image BUSI layout; returns the folder holding ``Dataset_BUSI_with_GT``.

    At ``scale=1`` (12 x 16 px; every coordinate times ``scale`` otherwise):
    benign (1): one lesion rows 2..5, cols 3..8 -> box [3, 2, 9, 6]
    benign (2): two masks: [1, 1, 4, 3] and [10, 6, 14, 9]
    malignant (1): one lesion [0, 4, 7, 10]
    normal (1), normal (2): all-zero masks
    """
    base = root / BUSI_FOLDER
    h, w = 12 * scale, 16 * scale

    def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return _rect(h, w, y0 * scale, y1 * scale, x0 * scale, x1 * scale)

    _save(base / "benign" / "benign (1).png", _image(h, w, 1))
    _save(base / "benign" / "benign (1)_mask.png", rect(2, 6, 3, 9))
    _save(base / "benign" / "benign (2).png", _image(h, w, 2))
    _save(base / "benign" / "benign (2)_mask.png", rect(1, 3, 1, 4))
    _save(base / "benign" / "benign (2)_mask_1.png", rect(6, 9, 10, 14))
    _save(base / "malignant" / "malignant (1).png", _image(h, w, 3))
    _save(base / "malignant" / "malignant (1)_mask.png", rect(4, 10, 0, 7))
    for k in (1, 2):
        _save(base / "normal" / f"normal ({k}).png", _image(h, w, 10 + k))
        _save(base / "normal" / f"normal ({k})_mask.png", np.zeros((h, w), np.uint8))
    return root


@pytest.fixture
def busi(tmp_path: Path) -> Path:
    return make_busi(tmp_path / "busi")


def test_boxes_labels_and_image_labels_by_hand(busi: Path) -> None:
    ds = BUSIDataset(busi)
    assert ds.file_names == [
        "benign/benign (1).png",
        "benign/benign (2).png",
        "malignant/malignant (1).png",
        "normal/normal (1).png",
        "normal/normal (2).png",
    ]
    assert [r.image_id for r in ds.records] == [1, 2, 3, 4, 5]
    assert ds.categories == [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
    assert ds.image_labels == ["benign", "benign", "malignant", "normal", "normal"]
    expect = {
        0: ([[3, 2, 9, 6]], [1]),
        1: ([[1, 1, 4, 3], [10, 6, 14, 9]], [1, 1]),
        2: ([[0, 4, 7, 10]], [2]),
        3: ([], []),
        4: ([], []),
    }
    for i, (boxes, labels) in expect.items():
        b, lab = ds.annotation(i)
        assert b.reshape(-1, 4).tolist() == boxes and lab.tolist() == labels
    s = ds[1]
    assert s.image.shape == (3, 12, 16) and s.boxes.tolist() == expect[1][0]
    assert ds.image_fields(3) == {"image_label": "normal"}
    assert [p.name for p in ds.mask_paths(1)] == ["benign (2)_mask.png", "benign (2)_mask_1.png"]
    masks = ds.instance_masks(1)
    assert masks.shape == (2, 12, 16) and int(masks[1].sum()) == 3 * 4
    assert ds.instance_masks(3).shape == (0, 12, 16)


def test_union_gives_one_box_around_all_masks(busi: Path) -> None:
    ds = BUSIDataset(busi, multi_mask="union")
    b, lab = ds.annotation(1)
    assert b.tolist() == [[1, 1, 14, 9]] and lab.tolist() == [1]
    assert ds.instance_masks(1).shape == (1, 12, 16)
    assert ds.annotation(0)[0].tolist() == [[3, 2, 9, 6]]
    with pytest.raises(ValueError, match="multi_mask"):
        BUSIDataset(busi, multi_mask="largest")  # type: ignore[arg-type]


def test_root_may_be_the_release_folder_and_factory(busi: Path) -> None:
    a = BUSIDataset(busi)
    b = build_dataset("busi", busi / BUSI_FOLDER)
    assert a.file_names == b.file_names and b.format_name == "busi"


def test_coco_export_keeps_image_label_and_round_trips_boxes(busi: Path, tmp_path: Path) -> None:
    ds = BUSIDataset(busi)
    d = to_coco_dict(ds)
    assert [im["image_label"] for im in d["images"]] == ds.image_labels
    assert d["categories"] == [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
    assert [a["category_id"] for a in d["annotations"]] == [1, 1, 1, 2]
    assert to_coco_dict(ds.subset([3, 2]))["images"][1]["image_label"] == "malignant"
    out = write_coco(ds, tmp_path / "gt.json")
    back = CocoDataset(out, image_root=ds.base)
    for i in range(len(ds)):
        assert torch.equal(back.annotation(i)[0], ds.annotation(i)[0])
        assert torch.equal(back.annotation(i)[1], ds.annotation(i)[1])


def test_summary_counts(busi: Path) -> None:
    ds = BUSIDataset(busi)
    s = busi_summary(ds)
    assert s["image_labels"] == {"normal": 2, "benign": 2, "malignant": 1}
    assert s["mask_files"] == 6 and s["multi_mask_images"] == ["benign/benign (2).png"]
    assert s["masks_inside_another_mask"] == [] and s["masks_with_several_pieces"] == {}
    st = dataset_stats(ds)
    assert st["objects"] == 4 and st["objects_per_category"] == {"benign": 3, "malignant": 1}


def test_nested_and_multi_piece_masks_are_reported(busi: Path) -> None:
    base = busi / BUSI_FOLDER / "benign"
    inner = _rect(12, 16, 2, 4, 4, 6)  # inside the (1) mask [3, 2, 9, 6]
    _save(base / "benign (1)_mask_1.png", inner)
    two = _rect(12, 16, 0, 2, 0, 2) | _rect(12, 16, 8, 10, 8, 10)
    _save(base / "benign (2)_mask_1.png", two)
    ds = BUSIDataset(busi)
    s = busi_summary(ds)
    assert s["masks_inside_another_mask"] == ["benign/benign (1)_mask_1.png"]
    assert s["masks_with_several_pieces"] == {"benign/benign (2)_mask_1.png": 2}
    assert ds.annotation(1)[0].tolist()[1] == [0, 0, 10, 10]  # one box over both pieces


def test_stray_files_are_listed_not_dropped_silently(
    busi: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (busi / BUSI_FOLDER / "README.txt").write_text("x")
    (busi / BUSI_FOLDER / "benign" / ".DS_Store").write_text("x")
    (busi / BUSI_FOLDER / "benign" / "notes.csv").write_text("x")
    with caplog.at_level(logging.WARNING):
        ds = BUSIDataset(busi)
    assert ds.ignored_entries == ["README.txt", "benign/.DS_Store", "benign/notes.csv"]
    assert "not part of the BUSI layout" in caplog.text and len(ds) == 5


# ---------------------------------------------------------------------- bad input
def _err(root: Path, *match: str) -> DataError:
    with pytest.raises(DataError) as info:
        BUSIDataset(root)
    for m in match:
        assert m in str(info.value), str(info.value)
    return info.value


def test_image_without_its_mask(busi: Path) -> None:
    (busi / BUSI_FOLDER / "malignant" / "malignant (1)_mask.png").unlink()
    e = _err(busi, "malignant (1).png", "image without any mask file")
    assert e.field == "mask"


def test_mask_without_its_image(busi: Path) -> None:
    _save(busi / BUSI_FOLDER / "benign" / "benign (7)_mask.png", np.zeros((12, 16), np.uint8))
    _err(busi, "benign (7)_mask.png", "mask without its image")


def test_mask_of_another_size(busi: Path) -> None:
    _save(busi / BUSI_FOLDER / "benign" / "benign (2)_mask_1.png", _rect(10, 16, 1, 3, 1, 3))
    e = _err(busi, "benign (2)_mask_1.png", "mask.size", "(16, 10)", "(16, 12)")
    assert e.value == (16, 10)


def test_unknown_class_folder(busi: Path) -> None:
    (busi / BUSI_FOLDER / "suspicious").mkdir()
    _err(busi, "suspicious", "unknown class folder")


def test_empty_class_folder_and_empty_root(busi: Path, tmp_path: Path) -> None:
    (busi / BUSI_FOLDER / "normal" / "normal (1).png").unlink()
    (busi / BUSI_FOLDER / "normal" / "normal (1)_mask.png").unlink()
    (busi / BUSI_FOLDER / "normal" / "normal (2).png").unlink()
    (busi / BUSI_FOLDER / "normal" / "normal (2)_mask.png").unlink()
    _err(busi, "normal", "holds no images")
    empty = tmp_path / "empty"
    (empty / BUSI_FOLDER).mkdir(parents=True)
    _err(empty, "class folders", "none of normal, benign, malignant")
    (tmp_path / "other").mkdir()
    _err(tmp_path / "other", f"neither {BUSI_FOLDER}/ nor class folders")


def test_duplicate_file_names(busi: Path) -> None:
    folder = busi / BUSI_FOLDER / "benign"
    _save(folder / "benign (01).png", _image(12, 16, 5))
    _err(busi, "benign (1).png", "a second file for image 1", "benign (01).png")
    (folder / "benign (01).png").unlink()
    _save(folder / "benign (2)_MASK.png", _rect(12, 16, 1, 3, 1, 4))
    _err(busi, "a second file for mask 0 of image 2")


def test_badly_named_and_misplaced_files(busi: Path) -> None:
    folder = busi / BUSI_FOLDER / "benign"
    _save(folder / "benign 3.png", _image(12, 16, 5))
    _err(busi, "benign 3.png", "file name")
    (folder / "benign 3.png").unlink()
    _save(folder / "malignant (9).png", _image(12, 16, 5))
    _err(busi, "names class 'malignant' but lies in the 'benign' folder")


def test_mask_content_must_match_the_class(busi: Path) -> None:
    base = busi / BUSI_FOLDER
    _save(base / "benign" / "benign (2)_mask_1.png", np.zeros((12, 16), np.uint8))
    _err(busi, "benign (2)_mask_1.png", "has no lesion pixel")
    _save(base / "benign" / "benign (2)_mask_1.png", _rect(12, 16, 6, 9, 10, 14))
    _save(base / "normal" / "normal (2)_mask.png", _rect(12, 16, 0, 1, 0, 1))
    _err(busi, "normal (2)_mask.png", "a normal image's mask marks a lesion")


# ---------------------------------------------------------------------- splits
def test_busi_split_drops_conflicting_copies_and_keeps_groups_together(tmp_path: Path) -> None:
    root = make_busi(tmp_path / "b")
    base = root / BUSI_FOLDER
    # malignant (2) is a pixel copy of benign (1) (conflicting labels); benign (3) is a
    # slightly brighter copy of benign (2) (near-identical, same label)
    img = np.asarray(Image.open(base / "benign" / "benign (1).png"))
    _save(base / "malignant" / "malignant (2).png", img)
    _save(base / "malignant" / "malignant (2)_mask.png", _rect(12, 16, 0, 3, 0, 3))
    img2 = np.asarray(Image.open(base / "benign" / "benign (2).png")).astype(np.int16)
    _save(base / "benign" / "benign (3).png", np.clip(img2 + 3, 0, 255).astype(np.uint8))
    _save(base / "benign" / "benign (3)_mask.png", _rect(12, 16, 1, 3, 1, 4))
    ds = BUSIDataset(root)
    rep = ds.duplicates()
    assert [g.members for g in rep.groups] == [
        ("benign/benign (1).png", "malignant/malignant (2).png"),
        ("benign/benign (2).png", "benign/benign (3).png"),
    ]
    assert [g.conflicting for g in rep.groups] == [True, False]
    assert rep.groups[0].pixel_identical and not rep.groups[1].pixel_identical
    for seed in range(6):
        s = busi_split(ds, seed=seed, fractions=(0.5, 0.25, 0.25), strong=0, duplicates=rep)
        assert s.excluded == ["benign/benign (1).png", "malignant/malignant (2).png"]
        sides = {n: p for p in ("train", "val", "test") for n in s.part(p)}  # type: ignore[arg-type]
        assert sides["benign/benign (2).png"] == sides["benign/benign (3).png"]
        assert len(sides) == 5 and s.labeled == []
    kept = busi_split(ds, seed=0, conflicts="keep", duplicates=rep)
    assert kept.excluded == [] and len(kept.train) + len(kept.val) + len(kept.test) == 7
    with pytest.raises(ValueError, match="conflicting-label rule"):
        busi_split(ds, conflicts="vote", duplicates=rep)  # type: ignore[arg-type]


def test_busi_split_strong_counts(busi: Path) -> None:
    ds = BUSIDataset(busi)
    all_strong = busi_split(ds, seed=0, fractions=(0.6, 0.2, 0.2))  # 3 train images
    abnormal_train = [n for n in all_strong.train if not n.startswith("normal")]
    assert all_strong.labeled == sorted(abnormal_train)
    assert busi_split(ds, seed=0, fractions=(0.6, 0.2, 0.2), strong=0).labeled == []
    with pytest.raises(ValueError, match="labeled_count"):
        busi_split(ds, seed=0, fractions=(0.6, 0.2, 0.2), strong=4)


def test_samples_carry_the_image_label_as_a_region_class(busi: Path) -> None:
    ds = BUSIDataset(busi)
    got = {ds.file_names[i]: ds[i].image_label for i in range(len(ds))}
    assert got == {
        "benign/benign (1).png": 1,
        "benign/benign (2).png": 1,
        "malignant/malignant (1).png": 2,
        "normal/normal (1).png": 0,
        "normal/normal (2).png": 0,
    }
    view = ds.subset([2, 4])
    assert [view.image_class(0), view.image_class(1)] == [ds.image_class(2), ds.image_class(4)]


def test_config_split_of_busi_is_busi_split(busi: Path) -> None:
    from ssmd.config import load_config
    from ssmd.tasks.detection import build_data

    cfg = load_config(
        None,
        [
            "data.format=busi",
            f"data.root={busi}",
            "split.train=0.6",
            "split.val=0.2",
            "split.test=0.2",
            "split.labeled_count=1",
        ],
    )
    split = build_data(cfg).split
    ds = BUSIDataset(busi)
    assert split.to_dict() == busi_split(ds, 0, (0.6, 0.2, 0.2), strong=1).to_dict()
    assert len(split.labeled) == 1 and not split.labeled[0].startswith("normal")


# ---------------------------------------------------------------------- real BUSI
@pytest.fixture
def busi_real() -> Path:
    if not (BUSI_ROOT / BUSI_FOLDER).is_dir():
        pytest.skip(f"real BUSI data not found at {BUSI_ROOT}")
    return BUSI_ROOT


@pytest.mark.realdata
def test_real_busi_counts_and_mask_extents(busi_real: Path) -> None:
    ds = BUSIDataset(busi_real)
    assert len(ds) == 624 and ds.ignored_entries == []
    s = busi_summary(ds)
    assert s["image_labels"] == {"normal": 106, "benign": 350, "malignant": 168}
    assert s["mask_files"] == 640 and len(s["multi_mask_images"]) == 15
    st = dataset_stats(ds)
    assert st["objects"] == 366 + 168
    assert st["objects_per_category"] == {"benign": 366, "malignant": 168}
    # independent check of a sample: numpy extent of each mask file
    rng = np.random.default_rng(0)
    for i in sorted(rng.choice(len(ds), size=20, replace=False).tolist()):
        boxes, _ = ds.annotation(i)
        if ds.image_label(i) == "normal":
            assert boxes.shape == (0, 4)
            continue
        for box, p in zip(boxes.tolist(), ds.mask_paths(i), strict=True):
            m = np.asarray(Image.open(p)) > 0
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert box == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], p


@pytest.mark.realdata
def test_real_busi_duplicates_and_split(busi_real: Path, tmp_path: Path) -> None:
    ds = BUSIDataset(busi_real)
    rep = ds.duplicates()
    assert rep.identical_pairs == [("benign/benign (433).png", "malignant/malignant (145).png")]
    assert (len(rep.groups), rep.duplicated_images, len(rep.conflicting)) == (99, 223, 7)
    assert len(rep.excluded("drop")) == 16
    split = busi_split(ds, seed=0, strong=10, duplicates=rep)
    assert len(split.labeled) == 10 and len(split.excluded) == 16
    assert (len(split.train), len(split.val), len(split.test)) == (426, 61, 121)
    side = {n: p for p in ("train", "val", "test") for n in split.part(p)}  # type: ignore[arg-type]
    for g in rep.groups:
        if not g.conflicting:
            assert len({side[m] for m in g.members}) == 1, g.members
    path = split.to_json(tmp_path / "split.json")
    assert json.loads(path.read_text())["excluded"] == split.excluded
