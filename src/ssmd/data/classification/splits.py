"""Stratified, group-aware train/val/test and labeled/unlabeled splits by ratio and seed.

The result is an :class:`ssmd.data.splits.Split` (the detection manifest, by image id), so
``split.json`` files read the same for both tasks. Algorithm (deterministic in ``seed``):

1. **train/val/test**: the dataset's predefined parts when it has them (MedMNIST's official
   split). Otherwise groups (lesions, patients; an image is its own group when none are
   given) are split, never images, so no group straddles two parts. Groups are stratified
   by their first image's class (single-label) or by "any finding" (multi-label); within each
   stratum, in sorted order, ``rng.permutation`` puts the first ``round(f_train * n)`` groups
   in train, the next ``round(f_val * n)`` in val and the rest in test.
2. **labeled/unlabeled**: train images are stratified by class; each stratum is permuted once
   and its first ``max(1, round(ratio * n_c))`` images are labeled. The permutation does not
   depend on the ratio, so labeled sets of one seed are nested (``5% ⊂ 10% ⊂ 20%``), and every
   class has at least one labeled image.

``rng = numpy.random.Generator(PCG64(seed))``; strata are visited in sorted order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ssmd.data.classification.base import ClassificationDataset
from ssmd.data.splits import Split

__all__ = ["make_classification_split"]


def _stratum(dataset: ClassificationDataset, i: int) -> str:
    row = dataset.labels[i]
    if dataset.multi_label:
        return "finding" if row.any() else "none"
    return dataset.class_names[int(row.argmax())]


def make_classification_split(
    dataset: ClassificationDataset,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    labeled_ratio: float = 1.0,
    use_predefined: bool = True,
) -> Split:
    """Split ``dataset`` (module docstring).

    Args:
        dataset: the full dataset.
        seed: split seed.
        fractions: ``(train, val, test)``, summing to 1 (the STSC paper: 7 : 1 : 2); ignored
            when the dataset has predefined parts and ``use_predefined``.
        labeled_ratio: fraction of train images that keep their labels, in ``(0, 1]``.
        use_predefined: use the dataset's official parts when it has them.

    Raises:
        ValueError: bad fractions or ratio.
    """
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or any(v < 0 for v in f) or abs(sum(f) - 1.0) > 1e-6 or f[0] <= 0:
        raise ValueError(f"split fractions = {f!r}: need (train, val, test) >= 0 summing to 1")
    if not 0.0 < float(labeled_ratio) <= 1.0:
        raise ValueError(f"labeled_ratio = {labeled_ratio!r}: must lie in (0, 1]")
    rng = np.random.Generator(np.random.PCG64(seed))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    if dataset.parts is not None and use_predefined:
        for i, part in enumerate(dataset.parts):
            parts[part].append(i)
    else:
        members: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(dataset.groups):
            members[g].append(i)
        strata: dict[str, list[str]] = defaultdict(list)
        for g in sorted(members):
            strata[_stratum(dataset, members[g][0])].append(g)
        for key in sorted(strata):
            groups = strata[key]
            n = len(groups)
            n_train = round(f[0] * n)
            n_val = round(f[1] * n)
            for rank, j in enumerate(rng.permutation(n)):
                part = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
                parts[part].extend(members[groups[int(j)]])
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in sorted(parts["train"], key=lambda k: dataset.ids[k]):
        by_class[_stratum(dataset, i)].append(i)
    labeled: list[int] = []
    for key in sorted(by_class):
        items = by_class[key]
        k = max(1, round(float(labeled_ratio) * len(items)))
        labeled.extend(items[int(j)] for j in rng.permutation(len(items))[:k])
    lab = {dataset.ids[i] for i in labeled}
    names = {p: sorted(dataset.ids[i] for i in idx) for p, idx in parts.items()}
    split = Split(
        train=names["train"],
        val=names["val"],
        test=names["test"],
        labeled=sorted(lab),
        unlabeled=sorted(n for n in names["train"] if n not in lab),
        seed=int(seed),
        ratios={"train": f[0], "val": f[1], "test": f[2], "labeled": float(labeled_ratio)},
    )
    split.validate(dataset.source)
    return split
