from __future__ import annotations

import pytest
import torch

from ssmd.structures.boxes import (
    box_area,
    box_iou,
    boxes_from_masks,
    clip_boxes,
    cxcywh_to_xyxy,
    nondegenerate,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from ssmd.structures.sample import Sample, collate


def test_conversions_round_trip_and_hand_values() -> None:
    b = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert xyxy_to_xywh(b).tolist() == [[10.0, 20.0, 20.0, 40.0]]
    assert xyxy_to_cxcywh(b).tolist() == [[20.0, 40.0, 20.0, 40.0]]
    assert torch.equal(xywh_to_xyxy(xyxy_to_xywh(b)), b)
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)


def test_iou_hand_computed_2d_and_3d() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 2)
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert iou[0, 1].item() == 0.0
    a3 = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    b3 = torch.tensor([[1.0, 1.0, 1.0, 3.0, 3.0, 3.0]])
    assert box_iou(a3, b3)[0, 0].item() == pytest.approx(1 / 15)
    assert box_area(a3).item() == 8.0
    with pytest.raises(ValueError):
        box_iou(a, b3)


def test_clip_and_degenerate() -> None:
    b = torch.tensor([[-5.0, 2.0, 12.0, 8.0], [11.0, 0.0, 15.0, 4.0]])
    clipped = clip_boxes(b, (6, 10))  # H=6, W=10
    assert clipped.tolist() == [[0.0, 2.0, 10.0, 6.0], [10.0, 0.0, 10.0, 4.0]]
    assert nondegenerate(clipped).tolist() == [True, False]


def test_boxes_from_masks_exclusive_right_edge() -> None:
    m = torch.zeros(2, 5, 6)
    m[0, 1:3, 2:5] = 1
    m[1, 4, 0] = 1
    assert boxes_from_masks(m).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 4.0, 1.0, 5.0]]
    with pytest.raises(ValueError, match="empty"):
        boxes_from_masks(torch.zeros(1, 3, 3))


def test_collate_pads_and_keeps_variable_boxes() -> None:
    s1 = Sample(
        torch.ones(3, 4, 5), torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([1]), image_id=1
    )
    s2 = Sample(
        torch.ones(3, 6, 3),
        torch.zeros((0, 4)),
        torch.zeros((0,), dtype=torch.long),
        image_id=2,
        is_labeled=False,
    )
    batch = collate([s1, s2])
    assert batch.images.shape == (2, 3, 6, 5)
    assert batch.images[0, :, 4:, :].abs().sum() == 0  # padded rows are zero
    assert batch.image_sizes == [(4, 5), (6, 3)]
    assert [len(b) for b in batch.boxes] == [1, 0]
    assert batch.is_labeled.tolist() == [True, False]
    assert s1.orig_size == (4, 5)


def test_boxes_from_masks_3d_is_x_y_z_order() -> None:
    m = torch.zeros(2, 4, 5, 6)  # (N, D, H, W)
    m[0, 1:3, 2:4, 3:6] = 1  # z 1..2, y 2..3, x 3..5
    m[1, 3, 0, 0] = 1
    assert boxes_from_masks(m, spatial_dims=3).tolist() == [
        [3.0, 2.0, 1.0, 6.0, 4.0, 3.0],
        [0.0, 0.0, 3.0, 1.0, 1.0, 4.0],
    ]
    assert boxes_from_masks(torch.zeros(0, 2, 2, 2), spatial_dims=3).shape == (0, 6)
    with pytest.raises(ValueError, match=r"\(N, D, H, W\)"):
        boxes_from_masks(torch.zeros(1, 3, 3), spatial_dims=3)


def _random_boxes(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    lo = torch.rand(n, d, generator=g) * 20
    return torch.cat([lo, lo + torch.rand(n, d, generator=g) * 10 + 0.5], dim=1)


def test_iou_agrees_with_torchvision_2d() -> None:
    from torchvision.ops import box_iou as tv_box_iou

    g = torch.Generator().manual_seed(0)
    a, b = _random_boxes(30, 2, g), _random_boxes(20, 2, g)
    ours = box_iou(a, b)
    assert float(ours.max()) > 0.05  # the random boxes overlap, so the check bites
    torch.testing.assert_close(ours, tv_box_iou(a, b))


@pytest.mark.slow  # importing MONAI alone takes ~13 s on the 2-core machine
def test_iou_agrees_with_monai_3d() -> None:
    box_utils = pytest.importorskip("monai.data.box_utils")  # dev extra only
    g = torch.Generator().manual_seed(1)
    a3, b3 = _random_boxes(30, 3, g), _random_boxes(20, 3, g)
    ours = box_iou(a3, b3)
    assert float(ours.max()) > 0.05
    torch.testing.assert_close(ours, box_utils.box_iou(a3, b3).to(ours.dtype))
