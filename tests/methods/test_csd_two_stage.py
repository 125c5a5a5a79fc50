"""CSD on Faster R-CNN: mirrored proposals, hand-computed RoI cost, losses reach both stages."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ssmd.methods import build_method
from ssmd.methods.csd import CSD, _roi_consistency, hflip_boxes, two_stage_consistency
from ssmd.models.detectors.faster_rcnn import build_faster_rcnn
from ssmd.structures.sample import Sample, collate


def _model() -> Any:
    torch.manual_seed(0)
    return build_faster_rcnn(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        num_classes=2,
        anchor_sizes=(8, 16, 32, 64, 128),
        representation_size=32,
        box_batch_size_per_image=32,
        rpn_post_nms_top_n_train=40,
    )


def test_hflip_boxes_by_hand() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 5.0]])
    assert hflip_boxes(boxes, 100).tolist() == [[70.0, 20.0, 90.0, 40.0], [0.0, 0.0, 100.0, 5.0]]


def test_roi_cost_by_hand() -> None:
    la = torch.tensor([[0.0, math.log(3.0), 0.0]])  # p = (0.2, 0.6, 0.2): best foreground = 1
    lb = torch.tensor([[0.0, 0.0, 0.0]])  # p = (1/3, 1/3, 1/3)
    da = torch.zeros(1, 3, 4)
    db = torch.zeros(1, 3, 4)
    db[0, 1] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # class 1's dx differs by 2 -> mse 1
    db[0, 2] = 5.0  # class 2 is not the best foreground class: ignored
    pa, pb = [0.2, 0.6, 0.2], [1 / 3] * 3
    sym_kl = sum((a - b) * (math.log(a) - math.log(b)) for a, b in zip(pa, pb, strict=True))
    cost, kept = _roi_consistency(la, da, lb, db, "kl", background_elimination=False)
    assert cost.item() == pytest.approx(sym_kl + 1.0, rel=1e-5)
    assert kept.item() == 1.0
    # background elimination: p_fg max 0.6 > p_bg 0.2 keeps it; a background RoI is dropped
    bg = torch.tensor([[3.0, 0.0, 0.0]])
    cost_bg, kept_bg = _roi_consistency(bg, da, lb, db, "kl", background_elimination=True)
    assert cost_bg.item() == 0.0 and kept_bg.item() == 0.0


def test_the_flipped_view_is_scored_on_the_mirrored_proposals() -> None:
    model = _model()
    model.train()
    images = torch.randn(2, 3, 128, 128)
    outputs = model(images)
    seen: list[list[torch.Tensor]] = []
    original = model.roi_outputs

    def spy(out: Any, boxes: Any) -> Any:
        seen.append([b.clone() for b in boxes])
        return original(out, boxes)

    model.roi_outputs = spy
    parts = two_stage_consistency(model, images, outputs, roi_proposals=7)
    assert len(seen) == 2
    for a, b, p in zip(seen[0], seen[1], outputs.proposals, strict=True):
        assert torch.equal(a, p[:7])
        assert torch.allclose(b, hflip_boxes(a, 128))
    assert parts["rpn"].item() > 0 and parts["roi"].item() > 0


def test_csd_trains_faster_rcnn_with_both_costs() -> None:
    model = _model()
    method = build_method("csd", model, {"roi_proposals": 16, "background_elimination": True})
    assert isinstance(method, CSD) and method.two_stage
    method.train()
    lab = collate(
        [
            Sample(
                torch.randn(3, 128, 128),
                torch.tensor([[20.0, 24.0, 52.0, 60.0]]),
                torch.tensor([1]),
                image_id=0,
            )
        ]
    )
    unl = collate(
        [
            Sample(
                torch.randn(3, 128, 128),
                torch.zeros(0, 4),
                torch.zeros(0, dtype=torch.int64),
                image_id=1,
            )
        ]
    )
    losses = method.training_step(lab, unl, 10, 40)
    for key in (
        "cons_rpn_unlabeled",
        "cons_roi_unlabeled",
        "cons_rpn_kept_labeled",
        "cons_roi_kept_unlabeled",
    ):
        assert key in losses
    grads = torch.autograd.grad(
        losses["loss_cons"],
        [model.rpn.head.cls_logits.weight, model.roi_heads.box_predictor.cls_score.weight],
        allow_unused=True,
    )
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
