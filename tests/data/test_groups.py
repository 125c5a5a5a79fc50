"""Imaging-type groups and held-out-group splits (issue 25)."""

from __future__ import annotations

import pytest
import torch

from ssmd.data.groups import holdout_split, image_type
from ssmd.utils.errors import DataError


def test_image_type_rule_on_hand_made_images() -> None:
    small = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    large = torch.tensor([[0.0, 0.0, 30.0, 30.0]])
    fluo = torch.full((3, 32, 32), 0.05)
    assert image_type(fluo, small) == "fluorescence-small"
    assert image_type(fluo, large) == "fluorescence-large"
    assert image_type(fluo, torch.zeros((0, 4))) == "fluorescence-small"
    assert image_type(torch.full((3, 32, 32), 0.8), small) == "brightfield"
    stained = torch.stack(
        [torch.full((32, 32), 0.8), torch.full((32, 32), 0.5), torch.full((32, 32), 0.7)]
    )
    assert image_type(stained, small) == "stained"


def _groups() -> dict[str, str]:
    g = {f"a{i:02d}": "A" for i in range(20)}
    g.update({f"b{i:02d}": "B" for i in range(10)})
    return g


def test_holdout_split_keeps_the_held_out_group_out_of_training() -> None:
    split = holdout_split(_groups(), "B", seed=0, val_fraction=0.1)
    assert sorted(split.test) == [f"b{i:02d}" for i in range(10)]
    assert len(split.val) == 2 and len(split.train) == 18 and split.unlabeled == []
    assert all(n.startswith("a") for n in split.train + split.val)
    again = holdout_split(_groups(), "B", seed=0, val_fraction=0.1)
    assert again.val == split.val


def test_held_out_images_can_feed_the_unlabeled_stream_but_never_the_labels() -> None:
    split = holdout_split(_groups(), "B", seed=1, val_fraction=0.1, unlabeled_fraction=0.5)
    held_unl = [n for n in split.unlabeled if n.startswith("b")]
    assert len(held_unl) == 5 and len(split.test) == 5
    assert not set(held_unl) & set(split.test)
    assert all(n.startswith("a") for n in split.labeled)
    with pytest.raises(DataError, match="no such group"):
        holdout_split(_groups(), "C")
