"""Imaging-type groups and held-out-group splits: an evaluation that predicts the unseen case.

A random split of DSB 2018 puts images of every microscope, stain and magnification on both
sides, so its AP overstates what a user gets on images of a new kind (issue 25: AP50 0.78 on
the internal test part, 0.44 on unseen images). Grouping the images by imaging type and
holding one group out at a time measures that case.

The grouping rule (:func:`image_type`), from pixels and boxes only — no file names, so it
applies to any nuclei set:

1. ``stained``: a colour image — the mean absolute difference between its RGB channels is
   above ``colour_tol`` (0.03 of the range; grey images stored as RGB are ~0).
2. ``brightfield``: a grey image whose median intensity is above 0.5 (bright background,
   dark nuclei).
3. ``fluorescence``: a grey image with a dark background, split by magnification into
   ``fluorescence-small`` / ``fluorescence-large`` at a median box side of ``size_split`` px
   (20 px by default: the two modes of DSB's fluorescence nuclei sizes).

:func:`holdout_split` makes a :class:`~ssmd.data.splits.Split` in which the held-out group
is the test part (or, with ``unlabeled_fraction > 0``, partly the unlabeled training stream:
the user's own unlabeled images of the new kind), and the other groups give the labeled
training and validation images.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.splits import Split
from ssmd.utils.errors import DataError

__all__ = ["GROUPS", "holdout_split", "image_groups", "image_type"]

GROUPS = ("stained", "brightfield", "fluorescence-small", "fluorescence-large")


def image_type(
    image: torch.Tensor,
    boxes: torch.Tensor,
    colour_tol: float = 0.03,
    size_split: float = 20.0,
) -> str:
    """The imaging-type group of one ``Tensor[3, H, W]`` image in ``[0, 1]`` (module docstring).

    ``boxes`` are its ``xyxy`` pixel boxes (used for the magnification of fluorescence images;
    an image without boxes counts as ``fluorescence-small``).
    """
    rgb = image[:3].float()
    if rgb.shape[0] == 3:
        spread = (
            (rgb[0] - rgb[1]).abs().mean()
            + (rgb[1] - rgb[2]).abs().mean()
            + (rgb[0] - rgb[2]).abs().mean()
        ) / 3
        if float(spread) > colour_tol:
            return "stained"
    grey = rgb.mean(dim=0)
    if float(grey.median()) > 0.5:
        return "brightfield"
    if boxes.numel() == 0:
        return "fluorescence-small"
    sides = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    return "fluorescence-large" if float(sides.median()) > size_split else "fluorescence-small"


def image_groups(
    dataset: DetectionDataset, cache_dir: str | Path | None = None, **rule: Any
) -> dict[str, str]:
    """``{file_name: group}`` for every image of ``dataset`` (decodes each image once).

    With ``cache_dir`` the result is kept in ``groups-<n>.json`` there, keyed by the file
    names, their sizes and modification times, so a changed file is grouped again.
    """
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"groups-{len(dataset)}.json"
    keys = {}
    for i, rec in enumerate(dataset.records):
        p = Path(rec.path)
        st = p.stat() if p.is_file() else None
        keys[dataset.file_names[i]] = [st.st_size, st.st_mtime_ns] if st else None
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("keys") == keys and saved.get("rule") == rule:
            return dict(saved["groups"])
    groups = {}
    for i, name in enumerate(dataset.file_names):
        boxes, _ = dataset.annotation(i)
        groups[name] = image_type(dataset._load_image(i), boxes, **rule)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"keys": keys, "rule": rule, "groups": groups}))
    return groups


def holdout_split(
    groups: dict[str, str],
    holdout: str,
    seed: int = 0,
    val_fraction: float = 0.1,
    labeled_ratio: float = 1.0,
    unlabeled_fraction: float = 0.0,
    source: str = "split.holdout_group",
) -> Split:
    """Train/val on the other groups, test (and optionally unlabeled) from ``holdout``.

    Args:
        groups: ``{file_name: group}`` (:func:`image_groups`).
        holdout: the group held out.
        seed: permutation seed (NumPy PCG64, as :func:`ssmd.data.splits.make_split`).
        val_fraction: fraction of the *other* groups' images used for validation.
        labeled_ratio: fraction of the other groups' training images that is labeled; the
            rest is unlabeled (from the seen types).
        unlabeled_fraction: fraction of the held-out group moved into the unlabeled training
            stream (its labels are never used); the remaining held-out images are the test part.

    Raises:
        DataError: an unknown group, or a split that leaves a part empty.
    """
    present = Counter(groups.values())
    if holdout not in present:
        raise DataError(
            source,
            "holdout_group",
            holdout,
            f"no such group; groups here: {dict(sorted(present.items()))}",
        )
    if not 0.0 <= unlabeled_fraction < 1.0:
        raise DataError(
            source, "holdout_unlabeled", unlabeled_fraction, "expected a value in [0, 1)"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    seen = sorted(n for n, g in groups.items() if g != holdout)
    held = sorted(n for n, g in groups.items() if g == holdout)
    seen = [seen[i] for i in rng.permutation(len(seen))]
    held = [held[i] for i in rng.permutation(len(held))]
    n_val = round(val_fraction * len(seen))
    val, train_seen = seen[:n_val], seen[n_val:]
    n_lab = max(1, round(labeled_ratio * len(train_seen)))
    labeled, unlabeled_seen = train_seen[:n_lab], train_seen[n_lab:]
    n_unl = round(unlabeled_fraction * len(held))
    unlabeled_held, test = held[:n_unl], held[n_unl:]
    if not train_seen or not test:
        raise DataError(source, "holdout_group", holdout, "leaves no training or no test image")
    unlabeled = unlabeled_seen + unlabeled_held
    split = Split(
        train=sorted(labeled + unlabeled),
        val=sorted(val),
        test=sorted(test),
        labeled=sorted(labeled),
        unlabeled=sorted(unlabeled),
        seed=seed,
        ratios={
            "val": val_fraction,
            "labeled": labeled_ratio,
            "holdout_unlabeled": unlabeled_fraction,
        },
    )
    split.validate(source)
    return split
