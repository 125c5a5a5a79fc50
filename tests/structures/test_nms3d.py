"""batched_nms on 3D boxes against hand cases (and equal to torchvision's in 2D)."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms as tv_batched_nms

from ssmd.structures.boxes import batched_nms, box_iou


def test_3d_hand_case() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0, 0, 10, 10, 10],  # score 0.9: kept
            [1.0, 0, 0, 11, 10, 10],  # IoU 900/1100 = 0.818 with box 0: suppressed
            [5.0, 0, 0, 15, 10, 10],  # IoU 500/1500 = 0.333 with box 0: kept at 0.5
            [0.0, 0, 0, 10, 10, 10],  # same as 0 but another label: kept
            [20.0, 20, 20, 24, 24, 24],  # alone: kept
        ]
    )
    assert abs(float(box_iou(boxes[:1], boxes[1:2])) - 900 / 1100) < 1e-6
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1])
    labels = torch.tensor([1, 1, 1, 2, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2, 3, 4]
    # at 0.3 box 2 (IoU 0.333 > 0.3) goes too
    assert batched_nms(boxes, scores, labels, 0.3).tolist() == [0, 3, 4]
    # suppression is by kept boxes only: 1 suppressed by 0 does not suppress 2
    assert batched_nms(boxes[:3], torch.tensor([0.9, 0.8, 0.7]), labels[:3], 0.3).tolist() == [0]


def test_empty_and_2d_equals_torchvision() -> None:
    assert (
        batched_nms(
            torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
        ).numel()
        == 0
    )
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(50, 2, generator=g) * 50
    boxes = torch.cat([lo, lo + 5 + torch.rand(50, 2, generator=g) * 20], dim=1)
    scores = torch.rand(50, generator=g)
    labels = torch.randint(1, 3, (50,), generator=g)
    assert torch.equal(
        batched_nms(boxes, scores, labels, 0.4), tv_batched_nms(boxes, scores, labels, 0.4)
    )
    # a 3D box set whose z extents are all equal gives the 2D result
    boxes3 = torch.cat([boxes[:, :2], torch.zeros(50, 1), boxes[:, 2:], torch.ones(50, 1)], dim=1)
    assert torch.equal(
        batched_nms(boxes3, scores, labels, 0.4), tv_batched_nms(boxes, scores, labels, 0.4)
    )
