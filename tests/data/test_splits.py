"""Splits: deterministic by seed, nested labeled sets, exact manifest round trip, validation."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssmd.data import Split, apply_split, make_split
from ssmd.data.datasets.base import DetectionDataset, ImageRecord, empty_annotation
from ssmd.utils.errors import DataError

NAMES = [f"img_{k:03d}.png" for k in range(100)]


class _Names(DetectionDataset):
    """A dataset of named images without pixels (splits only need names)."""

    def __init__(self, names: list[str], labeled: list[bool] | None = None) -> None:
        records = [ImageRecord(k + 1, n, 4, 4, Path(n)) for k, n in enumerate(sorted(names))]
        super().__init__(records, [{"id": 1, "name": "x"}], labeled=labeled, source="names")

    def _annotation(self, i: int):  # type: ignore[no-untyped-def]
        return empty_annotation()


def test_sizes_partition_and_hand_computed_order() -> None:
    s = make_split(NAMES, seed=0, fractions=(0.8, 0.1, 0.1), labeled_ratio=0.1)
    assert (len(s.train), len(s.val), len(s.test)) == (80, 10, 10)
    assert len(s.labeled) == 8 and len(s.unlabeled) == 72
    assert set(s.train) | set(s.val) | set(s.test) == set(NAMES)
    assert set(s.labeled) | set(s.unlabeled) == set(s.train)
    # the documented algorithm, re-implemented here
    rng = np.random.Generator(np.random.PCG64(0))
    perm = rng.permutation(100)
    names = sorted(NAMES)
    train = [names[k] for k in perm[:80]]
    assert s.train == sorted(train)
    assert s.val == sorted(names[k] for k in perm[80:90])
    assert s.labeled == sorted(train[k] for k in rng.permutation(80)[:8])


def test_deterministic_and_order_independent() -> None:
    a = make_split(NAMES, seed=3, labeled_ratio=0.25)
    b = make_split(list(reversed(NAMES)), seed=3, labeled_ratio=0.25)
    assert a == b
    assert make_split(NAMES, seed=4, labeled_ratio=0.25).train != a.train


def test_deterministic_across_processes() -> None:
    code = (
        "from ssmd.data import make_split;"
        "s = make_split([f'img_{k:03d}.png' for k in range(100)], seed=3, labeled_ratio=0.25);"
        "print(','.join(s.labeled))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123"},
    )  # fmt: skip
    assert out.stdout.strip().split(",") == make_split(NAMES, seed=3, labeled_ratio=0.25).labeled


def test_labeled_sets_are_nested() -> None:
    ratios = [0.05, 0.1, 0.2, 0.5, 1.0]
    sets = [set(make_split(NAMES, seed=7, labeled_ratio=r).labeled) for r in ratios]
    for small, big in itertools.pairwise(sets):
        assert small < big
    assert len(sets[-1]) == 80
    assert all(
        make_split(NAMES, seed=7, labeled_ratio=r).train == make_split(NAMES, seed=7).train
        for r in ratios
    )


def test_labeled_count_at_least_one() -> None:
    s = make_split(NAMES[:10], seed=0, fractions=(0.5, 0.25, 0.25), labeled_ratio=0.05)
    assert len(s.train) == 5 and len(s.labeled) == 1  # max(1, round(0.25))


@pytest.mark.parametrize("ratio", [0.0, 0.009, 1.01, float("nan"), -1])
def test_bad_ratio_names_the_value(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"labeled_ratio = "):
        make_split(NAMES, labeled_ratio=ratio)


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]
)
def test_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        make_split(NAMES, fractions=fractions)


def test_manifest_round_trip_and_dataset_check(tmp_path: Path) -> None:
    s = make_split(NAMES, seed=1, labeled_ratio=0.3)
    p = s.to_json(tmp_path / "split.json")
    back = Split.from_json(p, _Names(NAMES))
    assert back == s
    assert back.ratios == {"train": 0.8, "val": 0.1, "test": 0.1, "labeled": 0.3}
    with pytest.raises(DataError) as e:
        Split.from_json(p, _Names(NAMES[1:]))
    assert "split.json" in str(e.value) and "img_000.png" in str(e.value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("train"), "train"),
        (lambda d: d.update(seed="1"), "seed"),
        (lambda d: d["val"].append(d["train"][0]), "val"),
        (lambda d: d["labeled"].append("zzz.png"), "labeled"),
        (lambda d: d["unlabeled"].pop(), "train"),
        (lambda d: d.update(format="other"), "format"),
    ],
)
def test_manifest_validation(tmp_path: Path, edit, field: str) -> None:  # type: ignore[no-untyped-def]
    d = make_split(NAMES, seed=1, labeled_ratio=0.3).to_dict()
    edit(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DataError) as e:
        Split.from_json(p)
    assert e.value.field == field and "bad.json" in str(e.value)


def test_apply_split_flags() -> None:
    flags = [k != 5 for k in range(100)]  # img_005 has no annotation in the dataset itself
    ds = _Names(NAMES, labeled=flags)
    s = make_split(NAMES, seed=2, labeled_ratio=0.5)
    train = apply_split(ds, s, "train")
    assert train.file_names == s.train
    lab = set(s.labeled)
    for i, name in enumerate(train.file_names):
        assert train.is_labeled(i) == (name in lab and name != "img_005.png")
    assert all(not x for x in apply_split(ds, s, "unlabeled").labeled_flags())
    assert apply_split(ds, s, "labeled").file_names == s.labeled
    test = apply_split(ds, s, "test")
    assert test.file_names == s.test
    assert [r.image_id for r in test.records] == [
        ds.records[ds.index_of(n)].image_id for n in s.test
    ]


def test_a_label_curve_can_start_at_2_5_percent() -> None:
    """Issue 18's label curve starts at 2.5%: 531 DSB training images -> 13 labeled."""
    names = [f"img{i:04d}.png" for i in range(664)]
    s = make_split(names, seed=0, labeled_ratio=0.025)
    assert len(s.labeled) == round(0.025 * len(s.train)) == 13
    assert set(s.labeled) <= set(make_split(names, seed=0, labeled_ratio=0.05).labeled)
    with pytest.raises(ValueError, match="labeled_ratio"):
        make_split(names, seed=0, labeled_ratio=0.005)
