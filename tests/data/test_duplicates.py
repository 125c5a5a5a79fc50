"""Duplicate detection: dHash bits and Hamming distances by hand, groups, conflicts, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data.duplicates import (
    DEFAULT_THRESHOLD,
    dhash,
    find_duplicates,
    hamming_distances,
    pixel_digest,
)
from ssmd.utils.errors import DataError


def test_dhash_bits_by_hand() -> None:
    # already (hash_size + 1) x hash_size, so the resize keeps the pixels
    a = np.array([[1, 5, 3], [9, 2, 2]], dtype=np.uint8)
    assert dhash(a, hash_size=2).tolist() == [True, False, False, False]
    # same pixels as RGB, or as a PIL image: same bits
    rgb = np.repeat(a[:, :, None], 3, axis=2)
    assert dhash(rgb, 2).tolist() == dhash(Image.fromarray(a), 2).tolist()
    # a 16-bit image scaled by its maximum hashes like its 8-bit version
    assert dhash(a.astype(np.uint16) * 256, 2).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="hash_size"):
        dhash(a, 1)


def test_hamming_distances_by_hand() -> None:
    h = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=bool)
    assert hamming_distances(h).tolist() == [[0, 1, 4], [1, 0, 3], [4, 3, 0]]
    assert hamming_distances(h[:1], h[2:]).tolist() == [[4]]
    with pytest.raises(ValueError, match="different byte lengths"):
        hamming_distances(np.zeros((1, 8), bool), np.zeros((1, 16), bool))


def test_pixel_digest_sees_pixels_not_files(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(a).save(tmp_path / "a.png", compress_level=0)
    Image.fromarray(a).save(tmp_path / "b.png", compress_level=9)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    rep = find_duplicates({"a": tmp_path / "a.png", "b": tmp_path / "b.png"}, threshold=-1)
    assert rep.identical_pairs == [("a", "b")] and rep.groups[0].pixel_identical
    assert pixel_digest(a) != pixel_digest(a.astype(np.uint16))  # dtype is part of it


def _write(tmp_path: Path, name: str, arr: np.ndarray) -> Path:
    p = tmp_path / name
    Image.fromarray(arr).save(p)
    return p


def _scene(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A smooth random image (blobs), so resizing and small edits keep its structure."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 30)
        img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (img * 255).astype(np.uint8)


def test_groups_near_copies_and_flags_conflicts(tmp_path: Path) -> None:
    base = _scene(0)
    recrop = np.asarray(Image.fromarray(base[2:-2, 3:-3]).resize((128, 96)))  # re-export
    marked = base.copy()
    marked[5:8, 5:30] = 255  # a burned-in caliper line
    images = {
        "b1": _write(tmp_path, "b1.png", base),
        "m1": _write(tmp_path, "m1.png", base),  # pixel copy, other label
        "b2": _write(tmp_path, "b2.png", recrop),
        "b3": _write(tmp_path, "b3.png", marked),
        "u1": _write(tmp_path, "u1.png", _scene(1)),
        "u2": _write(tmp_path, "u2.png", _scene(2)),
    }
    d = hamming_distances(
        np.stack([dhash(np.asarray(Image.open(images[k]))) for k in ("b1", "b2", "b3", "u1")])
    )
    assert d[0, 1] <= DEFAULT_THRESHOLD and d[0, 2] <= DEFAULT_THRESHOLD
    assert d[0, 3] > DEFAULT_THRESHOLD
    labels = {"b1": "benign", "m1": "malignant", "b2": "benign", "b3": "benign"}
    labels |= {"u1": "benign", "u2": "normal"}
    rep = find_duplicates(images, labels=labels)
    assert [g.members for g in rep.groups] == [("b1", "b2", "b3", "m1")]
    g = rep.groups[0]
    assert g.conflicting and not g.pixel_identical
    assert g.labels == ("benign", "benign", "benign", "malignant")
    assert rep.identical_pairs == [("b1", "m1")]
    assert rep.excluded("drop") == ["b1", "b2", "b3", "m1"] and rep.excluded("keep") == []
    assert rep.split_groups() == [["b1", "b2", "b3", "m1"]]
    d = rep.to_dict()
    assert (d["groups"], d["conflicting_groups"], d["images_in_groups"]) == (1, 1, 4)
    assert "1 groups with conflicting labels (4 images)" in rep.format()
    # pixel-identical only
    only = find_duplicates(images, labels=labels, threshold=-1)
    assert [g.members for g in only.groups] == [("b1", "m1")]
    # no labels: nothing can conflict
    assert find_duplicates(images).conflicting == []


def test_blocks_do_not_change_the_result(tmp_path: Path) -> None:
    images = {f"i{k}": _write(tmp_path, f"i{k}.png", _scene(k % 4)) for k in range(9)}
    a = find_duplicates(images, block=2)
    b = find_duplicates(images, block=512)
    assert a.groups == b.groups and len(a.groups) == 4


def test_bad_input(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.png", _scene(0))
    with pytest.raises(DataError, match="does not exist"):
        find_duplicates({"a": p, "b": tmp_path / "missing.png"})
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        find_duplicates({"a": p, "bad": tmp_path / "bad.png"})
    with pytest.raises(ValueError, match="listed twice"):
        find_duplicates([("a", p), ("a", p)])
    with pytest.raises(ValueError, match="no label for image 'a'"):
        find_duplicates({"a": p}, labels={})
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates({"a": p}, threshold=256)
    with pytest.raises(ValueError, match="conflicting-label rule"):
        find_duplicates({"a": p}).excluded("vote")  # type: ignore[arg-type]
