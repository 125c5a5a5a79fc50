"""Plain image folder: recursive, sorted relative paths, ids 1..N, nothing silently skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data import ImageFolderDataset, build_dataset
from ssmd.utils.errors import DataError


def _img(path: Path, h: int = 6, w: int = 5, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), 100, np.uint8) if mode == "RGB" else np.full((h, w), 7, np.uint8)
    Image.fromarray(arr).save(path)


def test_lists_sorted_recursive_with_ids(tmp_path: Path) -> None:
    _img(tmp_path / "b.png")
    _img(tmp_path / "a" / "z.jpg", mode="L")
    _img(tmp_path / "a" / "Y.TIF", 3, 4)
    (tmp_path / "notes.txt").write_text("x")
    _img(tmp_path / ".hidden" / "c.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.file_names == ["a/Y.TIF", "a/z.jpg", "b.png"]
    assert [r.image_id for r in ds.records] == [1, 2, 3]
    assert ds.skipped_files == [".hidden/", "notes.txt"]
    assert (ds.records[0].width, ds.records[0].height) == (4, 3)
    s = ds[1]
    assert s.image.shape == (3, 6, 5) and s.boxes.shape == (0, 4) and s.is_labeled is False
    again = build_dataset("images", tmp_path)
    assert again.file_names == ds.file_names


def test_empty_folder_and_corrupt_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no image files"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad\.png.*'image'"):
        ImageFolderDataset(tmp_path)
