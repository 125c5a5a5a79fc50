"""Algorithms 1 and 2 of the LP paper on hand-made boxes (expected values computed by hand)."""

from __future__ import annotations

import pytest
import torch

from ssmd.methods.slice_labels import mine_missing, propagate_labels


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def s(vals: list[float]) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float32)


def test_propagation_keeps_predictions_over_tau_with_a_gt_box() -> None:
    gt = t([[0, 0, 10, 10], [20, 20, 30, 30]])
    preds = t(
        [
            [1, 0, 11, 10],  # IoU 90/110 = 0.818 with gt 0: kept
            [0, 0, 10, 20],  # IoU 100/200 = 0.5 exactly: not > tau, dropped
            [21, 20, 31, 30],  # IoU 0.818 with gt 1: kept
            [50, 50, 60, 60],  # no overlap: dropped
        ]
    )
    keep, matched = propagate_labels(gt, preds, tau=0.5)
    assert keep.tolist() == [0, 2]
    assert matched.tolist() == [0, 1]
    keep, _ = propagate_labels(gt, preds, tau=0.45)  # 0.5 > 0.45 now
    assert keep.tolist() == [0, 1, 2]
    keep, matched = propagate_labels(t([]), preds)
    assert keep.numel() == 0 and matched.numel() == 0
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        propagate_labels(gt, torch.zeros(3, 5))


def _case() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    key = (
        t(
            [
                [50, 50, 70, 70],  # 0: 0.95, confirmed above -> kept ("key")
                [100, 100, 110, 110],  # 1: 0.95, nothing adjacent -> not kept
                [30, 30, 40, 40],  # 2: 0.5 <= alpha -> not kept
                [2, 2, 12, 12],  # 3: 0.99, confirmed, but overlaps the GT -> deleted
                [85, 60, 95, 70],  # 4: 0.1, blocks the upper+lower pair 4/1
            ]
        ),
        s([0.95, 0.95, 0.5, 0.99, 0.1]),
    )
    upper = (
        t(
            [
                [51, 50, 71, 70],  # 0: IoU 380/420 with key 0 (score 0.3: no condition)
                [2, 2, 12, 12],  # 1: confirms key 3
                [31, 30, 41, 40],  # 2: confirms key 2
                [80, 10, 100, 30],  # 3: 0.95, pairs with lower 0 -> average
                [80, 60, 90, 70],  # 4: 0.95, pairs with lower 1 but touches key 4
                [120, 0, 130, 10],  # 5: 0.95, its lower partner scores 0.5
            ]
        ),
        s([0.3, 0.3, 0.3, 0.95, 0.95, 0.95]),
    )
    lower = (
        t([[82, 10, 102, 30], [80, 60, 90, 70], [120, 0, 130, 10]]),
        s([0.93, 0.95, 0.5]),
    )
    return {"key": key, "upper": upper, "lower": lower}


def test_mining_keeps_confirmed_key_boxes_and_averages_upper_lower_pairs() -> None:
    gt = t([[0, 0, 10, 10]])
    c = _case()
    mined = mine_missing(gt, c["key"], c["upper"], c["lower"], alpha=0.9, tau=0.5)
    # key 0 kept as is; upper 3 + lower 0 (IoU 360/440 = 0.82) averaged:
    # ((80+82)/2, 10, (100+102)/2, 30) = (81, 10, 101, 30), score (0.95+0.93)/2 = 0.94
    assert mined.sources == ["key", "average"]
    assert mined.origins == [(0,), (3, 0)]
    assert torch.allclose(mined.boxes, t([[50, 50, 70, 70], [81, 10, 101, 30]]))
    assert torch.allclose(mined.scores, s([0.95, 0.94]))
    assert mined.deleted == 1  # key 3 overlapped the GT
    labels = mined.labels_with(gt)  # line 29: GT first, then the mined boxes
    assert torch.allclose(labels, t([[0, 0, 10, 10], [50, 50, 70, 70], [81, 10, 101, 30]]))


def test_mining_adjacent_score_and_alpha_change_the_result() -> None:
    gt = t([[0, 0, 10, 10]])
    c = _case()
    # the upper boxes that confirm key 0 score 0.3: asking 0.5 of them drops key 0
    mined = mine_missing(gt, c["key"], c["upper"], c["lower"], adjacent_score=0.5)
    assert mined.sources == ["average"]
    # alpha 0.4 admits key 2 (0.5) and the pair upper 5 / lower 2 (0.95 / 0.5)
    mined = mine_missing(gt, c["key"], c["upper"], c["lower"], alpha=0.4)
    assert mined.origins == [(0,), (2,), (3, 0), (5, 2)]


def test_an_averaged_box_overlapping_the_gt_is_deleted() -> None:
    gt = t([[0, 0, 10, 10]])
    pair = (t([[4, 0, 14, 10]]), s([0.95]))
    mined = mine_missing(gt, (t([]), s([])), pair, pair)
    assert mined.boxes.shape == (0, 4) and mined.deleted == 1
    # away from the GT the same pair is mined as their average
    far = (t([[40, 0, 50, 10]]), s([0.95]))
    mined = mine_missing(gt, (t([]), s([])), far, (t([[42, 0, 52, 10]]), s([0.97])))
    assert torch.allclose(mined.boxes, t([[41, 0, 51, 10]]))
    assert torch.allclose(mined.scores, s([0.96]))


def test_mining_with_no_predictions_is_empty() -> None:
    empty = (t([]), s([]))
    mined = mine_missing(t([[0, 0, 5, 5]]), empty, empty, empty)
    assert mined.boxes.shape == (0, 4) and mined.sources == [] and mined.deleted == 0
    with pytest.raises(ValueError, match="scores"):
        mine_missing(t([]), (t([[0, 0, 1, 1]]), s([0.1, 0.2])), empty, empty)
