"""Splits with groups, labeled counts, eligibility and exclusions; old splits unchanged."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssmd.data import Split, make_split

REPO = Path(__file__).resolve().parents[2]
NAMES = [f"img_{k:03d}.png" for k in range(100)]


def _old_make_split(
    names: Sequence[str], seed: int, fractions: Sequence[float], ratio: float
) -> dict[str, Any]:
    """``make_split`` as it was before groups existed (commit b64011b), verbatim steps."""
    f_train, f_val, f_test = (float(v) for v in fractions)
    ordered = sorted(names)
    n = len(ordered)
    n_train = round(f_train * n)
    n_val = min(round(f_val * n), n - n_train)
    rng = np.random.Generator(np.random.PCG64(seed))
    perm = rng.permutation(n)
    train = [ordered[k] for k in perm[:n_train]]
    val = [ordered[k] for k in perm[n_train : n_train + n_val]]
    test = [ordered[k] for k in perm[n_train + n_val :]]
    order = rng.permutation(n_train)
    n_lab = max(1, round(ratio * n_train))
    return {
        "format": "ssmd-split",
        "version": 1,
        "seed": seed,
        "ratios": {"train": f_train, "val": f_val, "test": f_test, "labeled": ratio},
        "train": sorted(train),
        "val": sorted(val),
        "test": sorted(test),
        "labeled": sorted(train[k] for k in order[:n_lab]),
        "unlabeled": sorted(train[k] for k in order[n_lab:]),
    }


@pytest.mark.parametrize("n", [7, 100, 664])
def test_without_groups_the_split_is_the_old_one_bit_for_bit(n: int) -> None:
    names = [f"s{k:04d}" for k in range(n)]
    for seed, fr, ratio in itertools.product(
        (0, 1, 2, 17), ((0.8, 0.1, 0.1), (0.7, 0.1, 0.2), (1.0, 0.0, 0.0)), (0.05, 0.1, 0.5, 1.0)
    ):
        new = make_split(names, seed=seed, fractions=fr, labeled_ratio=ratio).to_dict()
        assert new == _old_make_split(names, seed, fr, ratio), (seed, fr, ratio)
        # singleton groups and an empty exclusion change nothing either
        grouped = make_split(
            names, seed=seed, fractions=fr, labeled_ratio=ratio, groups=[[names[0]]], exclude=()
        )
        assert grouped.to_dict() == new


def test_committed_dsb_manifest_is_reproduced() -> None:
    path = REPO / "docs" / "results" / "dsb2018_supervised_100" / "split.json"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    saved = json.loads(path.read_text())
    names = saved["train"] + saved["val"] + saved["test"]
    r = saved["ratios"]
    split = make_split(
        names, seed=saved["seed"], fractions=(r["train"], r["val"], r["test"]),
        labeled_ratio=r["labeled"],
    )  # fmt: skip
    assert split.to_dict() == saved


def _side(split: Split) -> dict[str, str]:
    return {n: p for p in ("train", "val", "test") for n in split.part(p)}  # type: ignore[arg-type]


def test_groups_land_on_one_side_with_target_sizes() -> None:
    groups = [NAMES[k : k + 3] for k in range(0, 60, 3)]  # 20 groups of 3
    for seed in range(20):
        s = make_split(NAMES, seed=seed, labeled_ratio=0.3, groups=groups)
        s.validate()
        side = _side(s)
        lab = set(s.labeled)
        for g in groups:
            assert len({side[m] for m in g}) == 1
            if side[g[0]] == "train":
                assert len({m in lab for m in g}) == 1  # strong/weak too
        assert len(s.train) == 80 and len(s.val) == 10 and len(s.test) == 10
        assert len(s.labeled) == 24


def test_first_fit_by_hand() -> None:
    # units sorted by first name: [a, b] (group), [c], [d], [e]
    names = ["a", "b", "c", "d", "e"]
    groups = [["b", "a"]]
    seed = 3
    rng = np.random.Generator(np.random.PCG64(seed))
    perm = rng.permutation(4).tolist()
    units = [["a", "b"], ["c"], ["d"], ["e"]]
    n_train, n_val = round(0.6 * 5), round(0.2 * 5)  # 3, 1
    train: list[str] = []
    val: list[str] = []
    test: list[str] = []
    train_units = []
    for k in perm:
        u = units[k]
        if len(train) + len(u) <= n_train:
            train += u
            train_units.append(u)
        elif len(val) + len(u) <= n_val:
            val += u
        else:
            test += u
    order = rng.permutation(len(train_units)).tolist()
    labeled: list[str] = []
    for k in order:
        if len(labeled) + len(train_units[k]) <= 1:
            labeled += train_units[k]
    s = make_split(names, seed=seed, fractions=(0.6, 0.2, 0.2), labeled_count=1, groups=groups)
    assert (s.train, s.val, s.test) == (sorted(train), sorted(val), sorted(test))
    assert s.labeled == sorted(labeled) and len(s.labeled) <= 1


def test_labeled_count_eligible_and_nesting() -> None:
    eligible = NAMES[::2]
    prev: set[str] = set()
    for count in (0, 1, 10, 20, 37):
        s = make_split(NAMES, seed=5, labeled_count=count, labeled_eligible=eligible)
        assert len(s.labeled) == count and set(s.labeled) <= set(eligible)
        assert prev <= set(s.labeled)
        assert s.ratios["labeled_count"] == count and "labeled" not in s.ratios
        prev = set(s.labeled)
    n_elig_train = len(set(eligible) & set(make_split(NAMES, seed=5).train))
    with pytest.raises(ValueError, match=rf"must lie in \[0, {n_elig_train}\]"):
        make_split(NAMES, seed=5, labeled_count=n_elig_train + 1, labeled_eligible=eligible)
    ratio = make_split(NAMES, seed=5, labeled_ratio=1.0, labeled_eligible=eligible)
    assert len(ratio.labeled) == n_elig_train
    assert set(ratio.unlabeled) >= set(ratio.train) - set(eligible)
    with pytest.raises(ValueError, match="labeled_count"):
        make_split(NAMES, seed=5, labeled_count=2.5)  # type: ignore[arg-type]


def test_exclude_is_recorded_and_round_trips(tmp_path: Path) -> None:
    s = make_split(NAMES, seed=1, exclude=NAMES[:10])
    assert s.excluded == NAMES[:10]
    assert not set(s.excluded) & (set(s.train) | set(s.val) | set(s.test))
    assert len(s.train) + len(s.val) + len(s.test) == 90 and len(s.train) == 72
    back = Split.from_json(s.to_json(tmp_path / "s.json"))
    assert back == s
    plain = make_split(NAMES, seed=1)
    assert "excluded" not in plain.to_dict() and Split.from_dict(plain.to_dict()) == plain
    bad = s.to_dict()
    bad["excluded"] = [s.train[0]]
    with pytest.raises(ValueError, match="also listed in 'train'"):
        Split.from_dict(bad)
    bad["excluded"] = "x"
    with pytest.raises(ValueError, match="must be a list of file names"):
        Split.from_dict(bad)


def test_bad_groups_and_exclusions() -> None:
    with pytest.raises(ValueError, match="not one of the images"):
        make_split(NAMES, groups=[["nope.png"]])
    with pytest.raises(ValueError, match=r"in groups\[0\] and groups\[1\]"):
        make_split(NAMES, groups=[NAMES[:2], NAMES[1:3]])
    with pytest.raises(ValueError, match="each group must be a list"):
        make_split(NAMES, groups=["img_000.png"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exclude names"):
        make_split(NAMES, exclude=["nope.png"])
    # a group may name excluded images; they are simply left out
    s = make_split(NAMES, groups=[NAMES[:3]], exclude=NAMES[:1])
    assert NAMES[0] not in _side(s) and len({_side(s)[n] for n in NAMES[1:3]}) == 1
