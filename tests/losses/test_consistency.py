"""Adaptive consistency cost, Eq. (4)-(5): hand-computed values, options, gradients, validation."""

from __future__ import annotations

import math

import pytest
import torch

from ssmd.losses.consistency import (
    adaptive_consistency_loss,
    adaptive_weight,
    consistency_terms,
    kl_teacher_student,
)
from ssmd.models.detectors.retinanet import DenseOutputs


def _two_anchor_pair(repeat: int = 1) -> tuple[DenseOutputs, DenseOutputs]:
    """One level, A = 1, K + 1 = 2, H = 1, W = 2 (x ``repeat`` along W).

    anchor 1: p_s = (0.8, 0.2), p_t = (0.6, 0.4); d_s = (0.1, 0.2, 0.0, -0.1),
              d_t = (0.3, 0.0, 0.1, -0.1)
    anchor 2: p_s = p_t = (0.5, 0.5);            d_s = (0, 0, 0, 0), d_t = (1, 0, 0, 0)
    """
    p_s = torch.tensor([[0.8, 0.5], [0.2, 0.5]])  # (K+1, W)
    p_t = torch.tensor([[0.6, 0.5], [0.4, 0.5]])
    d_s = torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.0, 0.0], [-0.1, 0.0]])  # (4, W)
    d_t = torch.tensor([[0.3, 1.0], [0.0, 0.0], [0.1, 0.0], [-0.1, 0.0]])

    def dense(p: torch.Tensor, d: torch.Tensor) -> DenseOutputs:
        logits = p.log().repeat(1, repeat).view(1, 1, 2, 1, 2 * repeat)  # (B, A, K+1, H, W)
        deltas = d.repeat(1, repeat).view(1, 1, 4, 1, 2 * repeat)  # (B, A, 4, H, W)
        return DenseOutputs([logits], [deltas], (8, 8 * 2 * repeat))

    return dense(p_s, d_s), dense(p_t, d_t)


# Hand computation:
#   W1 = ((1 - 0.8)^2 + (1 - 0.6)^2) / 2 = (0.04 + 0.16) / 2 = 0.1
#   KL1 = KL(p_t || p_s) = 0.6 ln(0.6/0.8) + 0.4 ln(0.4/0.2) = -0.1726092 + 0.2772589 = 0.1046496
#   MSE1 = (0.1-0.3)^2 + (0.2-0)^2 + (0-0.1)^2 + 0^2 = 0.04 + 0.04 + 0.01 = 0.09
#   W2 = ((0.5)^2 + (0.5)^2) / 2 = 0.25; KL2 = 0; MSE2 = (0 - 1)^2 = 1
#   ACC:    (0.1 * 0.1946496 + 0.25 * 1) / (0.1 + 0.25) = 0.2694650 / 0.35 = 0.7698999
#   no ACC: (0.1946496 + 1) / 2 = 0.5973248
KL1 = 0.6 * math.log(0.6 / 0.8) + 0.4 * math.log(0.4 / 0.2)


def test_eq4_weight_by_hand() -> None:
    w = adaptive_weight(torch.tensor([0.8, 0.5, 1.0]), torch.tensor([0.6, 0.5, 1.0]))
    assert torch.allclose(w, torch.tensor([0.1, 0.25, 0.0]))


def test_kl_direction_is_teacher_target() -> None:
    p_s, p_t = torch.tensor([0.8, 0.2]), torch.tensor([0.6, 0.4])
    kl = kl_teacher_student(p_s.log(), p_t.log())
    assert kl.item() == pytest.approx(KL1, rel=1e-6)  # KL(p_t || p_s), not KL(p_s || p_t)
    reverse = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    assert abs(kl.item() - reverse) > 1e-3


def test_eq4_eq5_two_anchor_example_by_hand() -> None:
    s, t = _two_anchor_pair()
    assert adaptive_consistency_loss(s, t).item() == pytest.approx(0.7698999, abs=1e-6)
    assert adaptive_consistency_loss(s, t, acc=False).item() == pytest.approx(0.5973248, abs=1e-6)
    div, fg, ps0, pt0 = consistency_terms(s, t)
    assert torch.allclose(div, torch.tensor([[KL1 + 0.09, 1.0]]), atol=1e-6)
    assert torch.allclose(fg, torch.tensor([[0.2, 0.5]]), atol=1e-6)
    assert torch.allclose(ps0, torch.tensor([[0.8, 0.5]]), atol=1e-6)
    assert torch.allclose(pt0, torch.tensor([[0.6, 0.5]]), atol=1e-6)


def test_component_subsets_table7() -> None:
    s, t = _two_anchor_pair()
    # c only: (0.1 * 0.1046496 + 0.25 * 0) / 0.35 = 0.0298999
    assert adaptive_consistency_loss(s, t, components="c").item() == pytest.approx(
        0.0298999, abs=1e-6
    )
    # x, y: (0.1 * (0.04 + 0.04) + 0.25 * 1) / 0.35 = 0.7371429
    assert adaptive_consistency_loss(s, t, components="xy").item() == pytest.approx(
        0.7371429, abs=1e-6
    )
    # w, h only: anchor 1 (0.1)^2 + 0 = 0.01, anchor 2 0 -> 0.1 * 0.01 / 0.35
    assert adaptive_consistency_loss(s, t, components="hw").item() == pytest.approx(
        0.001 / 0.35, abs=1e-7
    )
    for bad in ("", "cc", "cxz", "q"):
        with pytest.raises(ValueError, match="components"):
            adaptive_consistency_loss(s, t, components=bad)


def test_normalisation_is_size_independent() -> None:
    """The W-weighted mean keeps its value when the same content covers 8x more anchors."""
    small = adaptive_consistency_loss(*_two_anchor_pair(1))
    large = adaptive_consistency_loss(*_two_anchor_pair(8))
    assert large.item() == pytest.approx(small.item(), rel=1e-6)


def test_levels_are_the_finest_first() -> None:
    torch.manual_seed(1)
    p3 = torch.randn(2, 3, 2, 4, 4)
    d3 = torch.randn(2, 3, 4, 4, 4)
    s = DenseOutputs([p3, torch.randn(2, 3, 2, 2, 2)], [d3, torch.randn(2, 3, 4, 2, 2)], (32, 32))
    t = DenseOutputs(
        [p3.clone(), torch.randn(2, 3, 2, 2, 2)], [d3.clone(), torch.randn(2, 3, 4, 2, 2)], (32, 32)
    )
    assert adaptive_consistency_loss(s, t, levels=1).item() == pytest.approx(0.0, abs=1e-7)
    assert adaptive_consistency_loss(s, t, levels=2).item() > 1e-2
    assert (
        adaptive_consistency_loss(s, t).item() == adaptive_consistency_loss(s, t, levels=2).item()
    )
    for bad in (0, 3):
        with pytest.raises(ValueError, match="levels"):
            adaptive_consistency_loss(s, t, levels=bad)


def test_gradients_reach_student_only_and_w_is_detached() -> None:
    s, t = _two_anchor_pair()
    s_logits = s.cls_logits[0].clone().requires_grad_(True)
    s_deltas = s.box_deltas[0].clone().requires_grad_(True)
    t_logits = t.cls_logits[0].clone().requires_grad_(True)
    t_deltas = t.box_deltas[0].clone().requires_grad_(True)
    student = DenseOutputs([s_logits], [s_deltas], s.image_size)
    teacher = DenseOutputs([t_logits], [t_deltas], t.image_size)
    adaptive_consistency_loss(student, teacher).backward()
    assert t_logits.grad is None and t_deltas.grad is None
    assert s_logits.grad is not None and s_logits.grad.abs().sum() > 0
    assert s_deltas.grad is not None and s_deltas.grad.abs().sum() > 0

    # the same gradient as with W computed beforehand as a constant
    logits2 = s.cls_logits[0].clone().requires_grad_(True)
    div, _, ps0, pt0 = consistency_terms(
        DenseOutputs([logits2], [s.box_deltas[0]], s.image_size), t
    )
    w = adaptive_weight(ps0, pt0).detach()
    ((w * div).sum() / w.sum()).backward()
    assert torch.allclose(s_logits.grad, logits2.grad, atol=1e-7)


def test_teacher_gradient_when_not_detached() -> None:
    s, t = _two_anchor_pair()
    t_logits = t.cls_logits[0].clone().requires_grad_(True)
    teacher = DenseOutputs([t_logits], t.box_deltas, t.image_size)
    adaptive_consistency_loss(s, teacher, detach_teacher=False).backward()
    assert t_logits.grad is not None and t_logits.grad.abs().sum() > 0


def test_fg_threshold_mask_and_empty_case() -> None:
    s, t = _two_anchor_pair()
    # fg_s = (0.2, 0.5): threshold 0.3 keeps anchor 2 only -> its divergence, 1.0
    assert adaptive_consistency_loss(s, t, fg_threshold=0.3).item() == pytest.approx(1.0, abs=1e-6)
    logits = s.cls_logits[0].clone().requires_grad_(True)
    student = DenseOutputs([logits], s.box_deltas, s.image_size)
    empty = adaptive_consistency_loss(student, t, fg_threshold=0.99)
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_identical_outputs_give_zero() -> None:
    s, _ = _two_anchor_pair()
    assert adaptive_consistency_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)


def test_validation_errors() -> None:
    s, _ = _two_anchor_pair()
    other = DenseOutputs([torch.zeros(1, 1, 2, 1, 3)], [torch.zeros(1, 1, 4, 1, 3)], (8, 24))
    with pytest.raises(ValueError, match="student"):
        adaptive_consistency_loss(s, other)
    sigmoid_like = DenseOutputs([torch.zeros(1, 1, 1, 1, 2)], [torch.zeros(1, 1, 4, 1, 2)], (8, 16))
    with pytest.raises(ValueError, match="background"):
        adaptive_consistency_loss(sigmoid_like, sigmoid_like)
    two_levels = DenseOutputs(s.cls_logits * 2, s.box_deltas * 2, s.image_size)
    with pytest.raises(ValueError, match="levels"):
        adaptive_consistency_loss(s, two_levels)


def test_anchor_mask_leaves_anchors_out() -> None:
    s, t = _two_anchor_pair()
    # keep anchor 1 only: (W1 * (KL1 + 0.09)) / W1 = KL1 + 0.09
    only_first = adaptive_consistency_loss(s, t, anchor_mask=torch.tensor([[True, False]]))
    assert only_first.item() == pytest.approx(KL1 + 0.09, abs=1e-6)
    only_second = adaptive_consistency_loss(s, t, anchor_mask=torch.tensor([[False, True]]))
    assert only_second.item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="anchor_mask"):
        adaptive_consistency_loss(s, t, anchor_mask=torch.ones(1, 3, dtype=torch.bool))
