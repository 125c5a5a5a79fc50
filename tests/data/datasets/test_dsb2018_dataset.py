"""DSB2018 Kaggle layout: boxes = mask extents, image modes, every bad-input error, caching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.data import DSB2018Dataset
from ssmd.structures.boxes import boxes_from_masks
from ssmd.utils.errors import DataError


def _rgba(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    img[..., 3] = 255
    return img


def test_boxes_equal_mask_extents(dsb_tools) -> None:
    h, w = 20, 30
    masks = [
        dsb_tools.rect(h, w, 2, 5, 3, 9),  # rows 2..4, cols 3..8 -> [3, 2, 9, 5]
        dsb_tools.rect(h, w, 10, 20, 25, 30),  # touches bottom/right -> [25, 10, 30, 20]
    ]
    irregular = np.zeros((h, w), np.uint8)
    irregular[7, 11] = 1  # a binary 0/1 mask with two separate pixels
    irregular[12, 17] = 1
    masks.append(irregular)
    root = dsb_tools.make({"a": (_rgba(h, w), masks)})
    ds = DSB2018Dataset(root)
    boxes, labels = ds.annotation(0)
    expected = torch.tensor([[3, 2, 9, 5], [25, 10, 30, 20], [11, 7, 18, 13]], dtype=torch.float32)
    assert torch.equal(boxes, expected)
    assert labels.tolist() == [1, 1, 1]
    assert torch.equal(boxes_from_masks(ds.instance_masks(0)), expected)
    assert ds.categories == [{"id": 1, "name": "nucleus"}]


def test_ids_sorted_by_file_name_and_sample_fields(dsb_tools) -> None:
    img = _rgba()
    root = dsb_tools.make({"b": (img, []), "a": (img, []), "c10": (img, []), "c2": (img, [])})
    ds = DSB2018Dataset(root)
    assert ds.file_names == [
        "a/images/a.png",
        "b/images/b.png",
        "c10/images/c10.png",
        "c2/images/c2.png",
    ]
    assert [r.image_id for r in ds.records] == [1, 2, 3, 4]
    s = ds[1]
    assert s.image_id == 2 and s.path.endswith("b.png")
    assert s.image.shape == (3, 20, 30) and s.image.dtype == torch.float32
    assert s.orig_size == (20, 30)
    assert s.boxes.shape == (0, 4) and s.labels.shape == (0,)
    assert s.is_labeled  # an empty masks/ folder is an annotated image with 0 nuclei


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "I;16"])
def test_image_modes_give_3_channels_in_unit_range(dsb_tools, mode: str) -> None:
    h, w = 8, 12
    rgba = _rgba(h, w)
    rgba[..., 3] = 7  # alpha must be dropped, not used
    if mode == "RGBA":
        image, expect = rgba, rgba[..., :3].astype(np.float32) / 255
    elif mode == "RGB":
        image, expect = rgba[..., :3].copy(), rgba[..., :3].astype(np.float32) / 255
    elif mode == "L":
        image = rgba[..., 0].copy()
        expect = np.repeat(image[..., None].astype(np.float32) / 255, 3, axis=2)
    else:
        image = (rgba[..., 0].astype(np.uint16) * 257 + 3).astype(np.uint16)
        expect = np.repeat(image[..., None].astype(np.float32) / 65535, 3, axis=2)
    root = dsb_tools.make({"x": (image, [dsb_tools.rect(h, w, 1, 2, 1, 2)])})
    s = DSB2018Dataset(root)[0]
    assert s.image.shape == (3, h, w)
    torch.testing.assert_close(s.image, torch.from_numpy(expect.transpose(2, 0, 1).copy()))


def test_missing_masks_folder_is_unlabeled_with_zero_boxes(dsb_tools) -> None:
    root = dsb_tools.make(
        {"a": (_rgba(), [dsb_tools.rect(20, 30, 0, 2, 0, 2)]), "t": (_rgba(), None)}
    )
    ds = DSB2018Dataset(root)
    assert ds.num_unannotated == 1
    assert [ds.is_labeled(i) for i in range(2)] == [True, False]
    assert ds.annotation(1)[0].shape == (0, 4)
    assert ds[1].is_labeled is False


def _err(exc: pytest.ExceptionInfo[DataError]) -> str:
    return str(exc.value)


def test_missing_images_folder(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(), [])})
    (root / "b" / "masks").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root)
    assert "b" in e.value.path and "images" in e.value.field and "images" in _err(e)


def test_missing_image_file(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(), [])})
    os.rename(root / "a" / "images" / "a.png", root / "a" / "images" / "other.png")
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root)
    assert "a.png" in _err(e) and "images/<id>.png" in _err(e) and "other.png" in _err(e)


def test_corrupt_image(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(), [])})
    (root / "a" / "images" / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root)
    assert "a.png" in _err(e) and "'image'" in _err(e)


def test_truncated_image_fails_on_read(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(64, 64), [])})
    p = root / "a" / "images" / "a.png"
    p.write_bytes(p.read_bytes()[:200])  # header intact, pixel data cut
    ds = DSB2018Dataset(root)
    with pytest.raises(DataError) as e:
        ds[0]
    assert "a.png" in _err(e) and "'image'" in _err(e)


def test_mask_size_differs_from_image(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(20, 30), [dsb_tools.rect(20, 31, 0, 2, 0, 2)])})
    ds = DSB2018Dataset(root)
    with pytest.raises(DataError) as e:
        ds.annotation(0)
    assert "m000.png" in _err(e) and "mask.size" in _err(e) and "(31, 20)" in _err(e)


def test_empty_mask_file(dsb_tools) -> None:
    root = dsb_tools.make(
        {"a": (_rgba(), [dsb_tools.rect(20, 30, 0, 2, 0, 2), np.zeros((20, 30), np.uint8)])}
    )
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root, preload=True)
    assert "m001.png" in _err(e) and "mask.pixels" in _err(e)


def test_corrupt_mask_and_non_png_mask(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(), [dsb_tools.rect(20, 30, 0, 2, 0, 2)])})
    (root / "a" / "masks" / "m000.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root).annotation(0)
    assert "m000.png" in _err(e) and "'mask'" in _err(e)
    (root / "a" / "masks" / "m000.png").unlink()
    (root / "a" / "masks" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as e:
        DSB2018Dataset(root).annotation(0)
    assert "notes.txt" in _err(e) and "'masks'" in _err(e)


def test_empty_root_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no sample folders"):
        DSB2018Dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="not a directory"):
        DSB2018Dataset(tmp_path / "nope")


def test_stray_entries_are_listed_not_read(dsb_tools, caplog: pytest.LogCaptureFixture) -> None:
    root = dsb_tools.make({"a": (_rgba(), [])})
    (root / "labels.csv").write_text("x")
    (root / ".DS_Store").write_text("x")
    (root / "a" / "images" / "extra.png").write_bytes(b"")
    ds = DSB2018Dataset(root)
    assert ds.ignored_entries == [".DS_Store", "a/images/extra.png", "labels.csv"]
    assert "labels.csv" in caplog.text
    assert len(ds) == 1


def test_rgba_mask_uses_colour_not_alpha(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(10, 10), [])})
    m = np.zeros((10, 10, 4), np.uint8)
    m[..., 3] = 255  # opaque everywhere
    m[3:5, 6:8, 1] = 200
    Image.fromarray(m).save(root / "a" / "masks" / "c.png")
    assert DSB2018Dataset(root).annotation(0)[0].tolist() == [[6.0, 3.0, 8.0, 5.0]]


def test_in_memory_cache_reads_masks_once(dsb_tools) -> None:
    root = dsb_tools.make({"a": (_rgba(), [dsb_tools.rect(20, 30, 0, 2, 0, 2)])})
    ds = DSB2018Dataset(root)
    b1 = ds.annotation(0)[0]
    b1[0, 0] = 99  # callers get copies
    (root / "a" / "masks" / "m000.png").unlink()  # a second read would now give 0 boxes
    assert ds.annotation(0)[0].tolist() == [[0.0, 0.0, 2.0, 2.0]]
    assert ds.cache_misses == 1


def test_disk_cache_reused_and_invalidated_per_image(dsb_tools, tmp_path: Path) -> None:
    h, w = 20, 30
    root = dsb_tools.make(
        {
            "a": (_rgba(h, w), [dsb_tools.rect(h, w, 0, 2, 0, 2)]),
            "b": (_rgba(h, w), [dsb_tools.rect(h, w, 4, 9, 5, 7)]),
        }
    )
    cache = tmp_path / "cache"
    first = DSB2018Dataset(root, cache_dir=cache)
    assert (first.cache_hits, first.cache_misses) == (0, 2)
    cache_file = first.cache_file(cache)
    assert cache_file.is_file()
    second = DSB2018Dataset(root, cache_dir=cache)
    assert (second.cache_hits, second.cache_misses) == (2, 0)
    assert [second.annotation(i)[0].tolist() for i in range(2)] == [
        first.annotation(i)[0].tolist() for i in range(2)
    ]
    # add a mask to b: only b is re-read, and its new box appears
    Image.fromarray(dsb_tools.rect(h, w, 10, 12, 20, 25)).save(root / "b" / "masks" / "m001.png")
    third = DSB2018Dataset(root, cache_dir=cache)
    assert (third.cache_hits, third.cache_misses) == (1, 1)
    assert third.annotation(1)[0].tolist() == [[5.0, 4.0, 7.0, 9.0], [20.0, 10.0, 25.0, 12.0]]
    # a corrupt cache file is rebuilt, not trusted
    cache_file.write_text("{broken")
    fourth = DSB2018Dataset(root, cache_dir=cache)
    assert fourth.cache_misses == 2
    assert json.loads(cache_file.read_text())["format"] == "ssmd-dsb2018-boxes"


def test_subset_and_transform(dsb_tools) -> None:
    img = _rgba()
    root = dsb_tools.make({"a": (img, [dsb_tools.rect(20, 30, 0, 2, 0, 2)]), "b": (img, [])})
    ds = DSB2018Dataset(root, transform=lambda s: s.replace(image=s.image * 0))
    sub = ds.select(["b/images/b.png", "a/images/a.png"], labeled=["a/images/a.png"])
    assert [r.image_id for r in sub.records] == [2, 1]  # ids are kept
    assert [sub.is_labeled(i) for i in range(2)] == [False, True]
    assert sub[1].boxes.tolist() == [[0.0, 0.0, 2.0, 2.0]]
    assert float(sub[1].image.abs().sum()) == 0.0  # inherited transform applied
    raw = sub.with_transform(None)
    assert float(raw[1].image.sum()) > 0
    assert sub.subset([1]).parent is ds  # views of views read the root dataset
    with pytest.raises(DataError, match=r"zz\.png"):
        ds.select(["zz.png"])
