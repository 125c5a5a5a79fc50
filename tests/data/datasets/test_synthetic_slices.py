"""Synthetic CT slice stacks: hidden truth vs annotation, neighbour channels, split, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssmd.data.datasets.synthetic_slices import SyntheticSlicesConfig, SyntheticSlicesDataset
from ssmd.data.volumes.intensity import apply_window

SMALL = SyntheticSlicesConfig(num_slices=10, image_size=64, lesion_radius=(4.0, 8.0))


def _ds(tmp: Path, **kw: object) -> SyntheticSlicesDataset:
    args: dict[str, object] = {"n_series": 8, "config": SMALL, "cache_dir": tmp, "seed": 3}
    args.update(kw)
    return SyntheticSlicesDataset(**args)  # type: ignore[arg-type]


def test_deterministic_and_cached(tmp_path: Path) -> None:
    a = _ds(tmp_path / "a")
    b = _ds(tmp_path / "b")
    files = sorted((tmp_path / "a").rglob("*.npz"))
    assert len(files) == 8
    i = a.index_of(a.official_split().labeled[0])
    assert torch.equal(a[i].image, b[i].image)
    assert torch.equal(a[i].boxes, b[i].boxes)
    mtime = files[0].stat().st_mtime
    c = _ds(tmp_path / "a")  # read back, not regenerated
    assert files[0].stat().st_mtime == mtime and torch.equal(c[i].image, a[i].image)
    assert not torch.equal(_ds(tmp_path / "d", seed=4)[i].image, a[i].image)


def test_channels_are_neighbour_slices_repeated_at_the_ends(tmp_path: Path) -> None:
    ds = _ds(tmp_path, num_neighbors=2)
    hu = ds._volume(0)
    first = ds.index_of("series_000/000.png")
    img = ds[first].image  # (5, H, W): slices -2, -1, 0, 1, 2 -> 0, 0, 0, 1, 2
    assert img.shape == (5, 64, 64)
    expect = [0, 0, 0, 1, 2]
    for c, z in enumerate(expect):
        assert np.allclose(img[c].numpy(), apply_window(hu[z], (-200.0, 300.0)))
    assert ds.plan(first).substituted == 2


def test_annotation_is_the_key_lesions_of_train_and_complete_elsewhere(tmp_path: Path) -> None:
    ds = _ds(tmp_path, n_series=12, unannotated_fraction=0.5)
    n_train = sum(
        len(m["key_slices"]) for s, m in enumerate(ds._meta) if ds.series_part[s] == "train"
    )
    assert ds.unannotated_fraction == round(0.5 * n_train) / n_train
    missing = 0
    for i in range(len(ds)):
        s, z = ds.slices[i]
        boxes, _ = ds.annotation(i)
        hidden, ids = ds.hidden_annotation(i)
        if not ds.is_key_slice(i):
            assert len(boxes) == 0 and not ds.is_labeled(i)
            continue
        assert ds.is_labeled(i) and len(boxes) >= 1
        if ds.series_part[s] == "train":
            ann = ds.annotated_lesions(i)
            assert all(int(ds._meta[s]["key_slices"][j]) == z and ds.annotated[s][j] for j in ann)
            missing += len(ids) - len(ann)
        else:  # val / test: every visible lesion
            assert torch.equal(boxes, hidden)
        # every annotated box is one of the hidden-truth boxes
        assert all(any(torch.equal(b, h) for h in hidden) for b in boxes)
    assert missing == ds.report()["missing_boxes_on_train_key_slices"]


def test_key_slice_has_the_largest_cross_section(tmp_path: Path) -> None:
    ds = _ds(tmp_path)
    m = ds._meta[0]
    areas = (m["boxes"][..., 2] - m["boxes"][..., 0]) * (m["boxes"][..., 3] - m["boxes"][..., 1])
    for li, z in enumerate(m["key_slices"]):
        visible = np.nonzero(m["visible"][li])[0]
        assert len(visible) >= 1 and m["visible"][li, z]
        # the lesion spans several slices and its box shrinks away from the key slice
        assert areas[li, z] >= areas[li, visible].max() * 0.8


def test_official_split_is_by_series(tmp_path: Path) -> None:
    ds = _ds(tmp_path)
    split = ds.official_split()
    split.check_dataset(ds)
    series = {p: {n.split("/")[0] for n in getattr(split, p)} for p in ("train", "val", "test")}
    assert not (series["train"] & series["val"]) and not (series["train"] & series["test"])
    assert all(ds.is_key_slice(ds.index_of(n)) for n in split.labeled + split.val + split.test)
    assert not any(ds.is_key_slice(ds.index_of(n)) for n in split.unlabeled + split.excluded)
    assert len(split.train) + len(split.val) + len(split.test) + len(split.excluded) == len(ds)


def test_key_only_mode_and_bad_arguments(tmp_path: Path) -> None:
    ds = _ds(tmp_path, slices="key")
    assert all(ds.is_key_slice(i) for i in range(len(ds)))
    assert ds.neighbour_index(0, 1) is None or ds.is_key_slice(ds.neighbour_index(0, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_series"):
        _ds(tmp_path, n_series=2)
    with pytest.raises(ValueError, match="unannotated_fraction"):
        _ds(tmp_path, unannotated_fraction=1.0)
    with pytest.raises(ValueError, match="num_slices"):
        SyntheticSlicesConfig(num_slices=2)
