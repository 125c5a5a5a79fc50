"""Train/val/test and labeled/unlabeled splits, deterministic by seed, saved as JSON manifests.

Algorithm (the same on every machine and in every process; no Python ``hash()``):

1. sort the image ``file_name`` s (plain string order);
2. ``rng = numpy.random.Generator(PCG64(seed))``; ``perm = rng.permutation(n)``;
   the first ``round(f_train * n)`` images of ``perm`` are train, the next
   ``round(f_val * n)`` val, the rest test;
3. ``perm2 = rng.permutation(n_train)`` (same generator, next draw) orders the train
   images; the labeled set is the first ``max(1, round(ratio * n_train))`` of that order.

``round`` is Python's (half to even), applied to the float product.

The train/val/test partition does not depend on the labeled ratio, and the labeled
sets of one seed are prefixes of one permutation, so they are nested:
``labeled(0.1) ⊂ labeled(0.2)``. Lists in a :class:`Split` are stored sorted.

Groups, counts and exclusions (optional; without them the result is the one above,
bit for bit):

* ``exclude``: names left out of every part (recorded in :attr:`Split.excluded`), e.g.
  duplicates with conflicting labels; ``n`` counts the remaining images.
* ``groups``: images that must stay on one side of every split (near-identical copies,
  :mod:`ssmd.data.duplicates`). The permutations run over *units* -- each group, and each
  image in no group, sorted by its first name -- and parts are filled first-fit: a unit
  goes to train if it fits in the ``round(f_train * n)`` train places left, else to val if
  it fits in val's, else to test; the labeled set is filled the same way from the train
  units in the order of the second permutation. With every unit a single image this is
  exactly steps 2-3, so parts have their target sizes unless a group does not fit
  (then test, or unlabeled, takes it).
* ``labeled_count``: a number of labeled ("strong") images instead of a ratio (0 allowed:
  an all-weak training set); ``labeled_eligible``: only these names may be labeled (e.g.
  the images that have boxes), and a ratio is then a fraction of the eligible train
  images. Counts of one seed are nested like ratios as long as every unit is a single
  image (first-fit may skip a group that a smaller count cannot hold).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssmd.data.datasets.base import DetectionDataset, SubsetDataset, Transform
from ssmd.data.io import atomic_write_json
from ssmd.utils.errors import DataError

__all__ = [
    "LABELED_RATIO_RANGE",
    "Split",
    "SplitPart",
    "apply_split",
    "make_split",
]

LABELED_RATIO_RANGE = (0.01, 1.0)
"""Allowed labeled ratios (inclusive)."""

SplitPart = Literal["train", "val", "test", "labeled", "unlabeled"]

_FORMAT = "ssmd-split"
_VERSION = 1


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise ValueError(f"fractions = {tuple(fractions)!r}: need (train, val, test)")
    f = tuple(float(v) for v in fractions)
    if any(not math.isfinite(v) or v < 0 or v > 1 for v in f) or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(f"fractions = {f!r}: need three values in [0, 1] summing to 1")
    if f[0] == 0:
        raise ValueError(f"fractions = {f!r}: the train fraction must be > 0")
    return f[0], f[1], f[2]


def _check_ratio(labeled_ratio: float) -> float:
    lo, hi = LABELED_RATIO_RANGE
    r = float(labeled_ratio)
    if not (math.isfinite(r) and lo <= r <= hi):
        raise ValueError(f"labeled_ratio = {labeled_ratio!r}: must lie in [{lo}, {hi}]")
    return r


@dataclass
class Split:
    """A train/val/test partition with a labeled subset of train, by ``file_name``.

    Attributes:
        train: train images (sorted).
        val: validation images (sorted).
        test: test images (sorted).
        labeled: labeled train images (sorted); ``labeled ⊂ train``.
        unlabeled: ``train - labeled`` (sorted).
        seed: the seed that produced it.
        ratios: ``{"train", "val", "test", "labeled"}`` fractions it was made with
            (``"labeled_count"`` instead of ``"labeled"`` when made with a count).
        excluded: images of the dataset deliberately in no part (sorted); written to the
            manifest only when not empty, so older manifests read and write unchanged.
    """

    train: list[str]
    val: list[str]
    test: list[str]
    labeled: list[str]
    unlabeled: list[str]
    seed: int
    ratios: dict[str, float] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)

    def validate(self, source: str | Path = "<split>") -> None:
        """Check the partition's internal consistency.

        Raises:
            DataError: overlapping parts, repeated names, or labeled/unlabeled not a
                partition of train (the message names an offending file).
        """
        seen: dict[str, str] = {}
        for part in ("train", "val", "test"):
            for name in getattr(self, part):
                if name in seen:
                    raise DataError(source, part, name, f"also listed in {seen[name]!r}")
                seen[name] = part
        train = set(self.train)
        lab, unl = set(self.labeled), set(self.unlabeled)
        for part, names in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise DataError(source, part, dup, "listed twice")
            for name in names:
                if name not in train:
                    raise DataError(source, part, name, "not in 'train'")
        both = lab & unl
        if both:
            raise DataError(source, "labeled", sorted(both)[0], "also listed in 'unlabeled'")
        missing = train - lab - unl
        if missing:
            raise DataError(source, "train", sorted(missing)[0], "neither labeled nor unlabeled")
        for name in self.excluded:
            if name in seen:
                raise DataError(source, "excluded", name, f"also listed in {seen[name]!r}")

    def check_dataset(self, dataset: DetectionDataset, source: str | Path = "<split>") -> None:
        """Check that every file name of the split is an image of ``dataset``.

        Raises:
            DataError: names the first missing file name and the part that lists it.
        """
        names = set(dataset.file_names)
        for part in ("train", "val", "test", "excluded"):
            for name in getattr(self, part):
                if name not in names:
                    raise DataError(
                        source, part, name, f"not an image of the dataset {dataset.source}"
                    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the manifest)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "seed": self.seed,
            "ratios": dict(self.ratios),
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "labeled": list(self.labeled),
            "unlabeled": list(self.unlabeled),
            **({"excluded": list(self.excluded)} if self.excluded else {}),
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the manifest to ``path`` (atomically); returns ``path``."""
        path = Path(path)
        atomic_write_json(path, self.to_dict(), indent=1)
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<dict>") -> Split:
        """Rebuild a split from :meth:`to_dict` output, validating every field."""
        if not isinstance(data, dict):
            raise DataError(source, "<root>", type(data).__name__, "a split must be a JSON object")
        if data.get("format") != _FORMAT:
            raise DataError(source, "format", data.get("format"), f"expected {_FORMAT!r}")
        if data.get("version") != _VERSION:
            raise DataError(source, "version", data.get("version"), f"expected {_VERSION}")
        seed = data.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DataError(source, "seed", seed, "must be an integer")
        ratios = data.get("ratios", {})
        if not isinstance(ratios, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in ratios.values()
        ):
            raise DataError(source, "ratios", ratios, "must map names to numbers")
        parts: dict[str, list[str]] = {}
        for key in ("train", "val", "test", "labeled", "unlabeled"):
            v = data.get(key)
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise DataError(source, key, v, "must be a list of file names")
            parts[key] = list(v)
        excluded = data.get("excluded", [])
        if not isinstance(excluded, list) or not all(isinstance(e, str) for e in excluded):
            raise DataError(source, "excluded", excluded, "must be a list of file names")
        parts["excluded"] = list(excluded)
        split = cls(seed=seed, ratios={k: float(v) for k, v in ratios.items()}, **parts)
        split.validate(source)
        return split

    @classmethod
    def from_json(cls, path: str | Path, dataset: DetectionDataset | None = None) -> Split:
        """Read a manifest written by :meth:`to_json`.

        Args:
            path: the manifest.
            dataset: if given, every file name must be one of its images.

        Raises:
            DataError: unreadable or inconsistent manifest, or a file name not in ``dataset``.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError(path, "file", str(path), "does not exist") from exc
        except json.JSONDecodeError as exc:
            raise DataError(path, "json", f"line {exc.lineno} column {exc.colno}", exc.msg) from exc
        split = cls.from_dict(data, path)
        if dataset is not None:
            split.check_dataset(dataset, path)
        return split

    def part(self, name: SplitPart) -> list[str]:
        """The file names of one part."""
        if name not in ("train", "val", "test", "labeled", "unlabeled"):
            raise ValueError(
                f"split part {name!r}: expected train, val, test, labeled or unlabeled"
            )
        return list(getattr(self, name))


def _units(
    ordered: list[str], groups: Sequence[Sequence[str]] | None, excluded: set[str]
) -> list[list[str]]:
    """Each group (sorted, excluded names removed) and each ungrouped image, by first name."""
    if groups is None:
        return [[n] for n in ordered]
    known = set(ordered) | excluded
    owner: dict[str, int] = {}
    units: list[list[str]] = []
    for g, members in enumerate(groups):
        if isinstance(members, str):
            raise ValueError(f"groups[{g}] = {members!r}: each group must be a list of file names")
        for name in members:
            if name not in known:
                raise ValueError(f"groups[{g}] names {name!r}, which is not one of the images")
            if name in owner and owner[name] != g:
                raise ValueError(f"{name!r} is in groups[{owner[name]}] and groups[{g}]")
            owner[name] = g
        kept = sorted({n for n in members if n not in excluded})
        if kept:
            units.append(kept)
    units += [[n] for n in ordered if n not in owner]
    units.sort(key=lambda u: u[0])
    return units


def make_split(
    file_names: Sequence[str] | DetectionDataset,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    labeled_ratio: float = 1.0,
    *,
    labeled_count: int | None = None,
    labeled_eligible: Collection[str] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    exclude: Collection[str] = (),
) -> Split:
    """Split images into train/val/test and train into labeled/unlabeled (module docstring).

    Args:
        file_names: the images' ``file_name`` s, or a dataset.
        seed: any integer ``>= 0``.
        fractions: ``(train, val, test)``, summing to 1, train > 0.
        labeled_ratio: fraction of train that is labeled, in ``[0.01, 1.0]``;
            ``max(1, round(labeled_ratio * n_train))`` images (of the eligible train
            images when ``labeled_eligible`` is given). Ignored when ``labeled_count``
            is given.
        labeled_count: exactly this many labeled images (``0 <= count <=`` the eligible
            train images), e.g. the 10 / 50 strong images of a weakly-and-semi-supervised run.
        labeled_eligible: names that may be labeled (default: all).
        groups: lists of names that must land on one side of every split; a name in no
            group is its own unit. Names may be in at most one group.
        exclude: names to leave out of every part.

    Raises:
        ValueError: bad fractions/ratio/count/seed (the message names the value), repeated
            names, a group or excluded name that is not an image, or no train image.
    """
    names = file_names.file_names if isinstance(file_names, DetectionDataset) else list(file_names)
    f_train, f_val, f_test = _check_fractions(fractions)
    ratio = _check_ratio(labeled_ratio) if labeled_count is None else None
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed = {seed!r}: need an integer >= 0")
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        dup = next(a for a, b in itertools.pairwise(ordered) if a == b)
        raise ValueError(f"file name {dup!r} is listed twice")
    excluded = set(exclude)
    unknown = sorted(excluded - set(ordered))
    if unknown:
        raise ValueError(f"exclude names {unknown[0]!r}, which is not one of the images")
    ordered = [n for n in ordered if n not in excluded]
    units = _units(ordered, groups, excluded)
    n = len(ordered)
    n_train = round(f_train * n)
    n_val = min(round(f_val * n), n - n_train)
    if n_train < 1:
        raise ValueError(f"{n} images with train fraction {f_train}: no train image")
    rng = np.random.Generator(np.random.PCG64(seed))
    perm = rng.permutation(len(units))
    train_units: list[list[str]] = []
    val: list[str] = []
    test: list[str] = []
    n_in_train = 0
    for k in perm:  # first fit (module docstring); singletons: the first n_train, then val
        unit = units[k]
        if n_in_train + len(unit) <= n_train:
            train_units.append(unit)
            n_in_train += len(unit)
        elif len(val) + len(unit) <= n_val:
            val += unit
        else:
            test += unit
    if not train_units:
        raise ValueError(f"no group of {n} images fits in {n_train} train places")
    eligible = None if labeled_eligible is None else set(labeled_eligible)
    n_elig = sum(len(u) for u in train_units if eligible is None or all(m in eligible for m in u))
    if labeled_count is not None:
        if not isinstance(labeled_count, int) or isinstance(labeled_count, bool):
            raise ValueError(f"labeled_count = {labeled_count!r}: need an integer")
        if not 0 <= labeled_count <= n_elig:
            raise ValueError(
                f"labeled_count = {labeled_count}: must lie in [0, {n_elig}] "
                f"(the train images that may be labeled)"
            )
        n_lab = labeled_count
    else:
        assert ratio is not None
        if n_elig == 0:
            raise ValueError("no train image may be labeled (labeled_eligible holds none)")
        n_lab = max(1, round(ratio * n_elig))
    order = rng.permutation(len(train_units))
    labeled: list[str] = []
    unlabeled: list[str] = []
    for k in order:
        unit = train_units[k]
        ok = eligible is None or all(m in eligible for m in unit)
        if ok and len(labeled) + len(unit) <= n_lab:
            labeled += unit
        else:
            unlabeled += unit
    train = [m for u in train_units for m in u]
    ratios = {"train": f_train, "val": f_val, "test": f_test}
    if labeled_count is None:
        assert ratio is not None
        ratios["labeled"] = ratio
    else:
        ratios["labeled_count"] = float(labeled_count)
    return Split(
        train=sorted(train),
        val=sorted(val),
        test=sorted(test),
        labeled=sorted(labeled),
        unlabeled=sorted(unlabeled),
        seed=seed,
        ratios=ratios,
        excluded=sorted(excluded),
    )


def apply_split(
    dataset: DetectionDataset,
    split: Split,
    part: SplitPart,
    transform: Transform | str | None = "inherit",
) -> SubsetDataset:
    """The view of ``dataset`` for one part of ``split``.

    ``train`` keeps all train images and marks the unlabeled ones ``is_labeled=False``
    (they still carry their boxes); ``labeled`` / ``unlabeled`` hold only those images;
    ``val`` / ``test`` keep the dataset's flags. A split never makes an image labeled
    that the dataset itself marks unlabeled (e.g. a DSB image without ``masks/``).

    Raises:
        DataError: a file name of the split is not in ``dataset``.
    """
    split.check_dataset(dataset)
    names = split.part(part)
    indices = [dataset.index_of(n) for n in names]
    if part in ("train", "labeled", "unlabeled"):
        lab = set(split.labeled)
        flags = [n in lab and dataset.is_labeled(i) for n, i in zip(names, indices, strict=True)]
    else:
        flags = [dataset.is_labeled(i) for i in indices]
    return dataset.subset(indices, labeled=flags, transform=transform)
