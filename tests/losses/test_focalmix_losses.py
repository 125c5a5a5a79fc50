"""FocalMix losses: SFL (Eq. (9)) against hand-computed values, sharpening (Eq. (4)),
MixUp weights and pairing (Eq. (10)-(13)), and the batch detection loss."""

from __future__ import annotations

import math

import pytest
import torch

from ssmd.losses.detection import sigmoid_focal_loss
from ssmd.losses.focalmix import (
    mixup,
    mixup_lambda,
    one_hot_targets,
    sharpen,
    soft_focal_detection_loss,
    soft_focal_loss,
)


def test_sfl_hand_computed_hard_and_soft_targets() -> None:
    p = torch.tensor([0.8, 0.3, 0.6, 0.2])
    y = torch.tensor([1.0, 0.0, 0.5, 0.7])
    # [a0 + y (a1 - a0)] |y - p|^2 CE(y, p), a0 = 0.05, a1 = 0.95, by hand:
    expected = torch.tensor(
        [
            0.95 * 0.2**2 * -math.log(0.8),  # y = 1: 0.0084794549
            0.05 * 0.3**2 * -math.log(0.7),  # y = 0: 0.0016050372
            0.50 * 0.1**2 * -(0.5 * math.log(0.6) + 0.5 * math.log(0.4)),  # 0.0035677909
            0.68 * 0.5**2 * -(0.7 * math.log(0.2) + 0.3 * math.log(0.8)),  # 0.2029034327
        ]
    )
    got = soft_focal_loss(p, y)
    assert torch.allclose(got, expected, rtol=1e-5)
    assert got[0].item() == pytest.approx(0.0084794549, rel=1e-5)
    assert got[3].item() == pytest.approx(0.2029034327, rel=1e-5)


def test_sfl_with_hard_targets_is_the_alpha_weighted_sigmoid_focal_loss() -> None:
    logits = torch.linspace(-4, 4, 9)
    y = (torch.arange(9) % 2).float()
    # sigmoid focal loss with alpha = a1 on positives (1 - alpha = a0 = 0.05 on negatives)
    ref = sigmoid_focal_loss(logits, y, alpha=0.95, gamma=2.0)
    assert torch.allclose(soft_focal_loss(logits.sigmoid(), y), ref, rtol=1e-4, atol=1e-7)


def test_sfl_is_zero_at_the_target_and_rejects_bad_shapes() -> None:
    y = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(soft_focal_loss(y.clone(), y), torch.zeros(3), atol=1e-12)
    with pytest.raises(ValueError, match="differ"):
        soft_focal_loss(torch.zeros(3), torch.zeros(2))


def test_sharpen_hand_computed() -> None:
    p = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    out = sharpen(p, 0.5)  # [0.36, 0.16] / 0.52
    assert torch.allclose(out[0], torch.tensor([0.36 / 0.52, 0.16 / 0.52]))
    assert torch.allclose(out[1], torch.tensor([0.5, 0.5]))  # uniform stays uniform
    a, b = 0.6 ** (1 / 0.7), 0.4 ** (1 / 0.7)
    assert sharpen(p, 0.7)[0, 0].item() == pytest.approx(a / (a + b), rel=1e-6)  # 0.64089
    assert torch.allclose(sharpen(p, 1.0), p)
    with pytest.raises(ValueError):
        sharpen(p, 0.0)


def test_mixup_lambda_is_at_least_a_half() -> None:
    torch.manual_seed(3)
    lam = mixup_lambda(2000, eta=0.2)
    assert lam.shape == (2000,)
    assert bool((lam >= 0.5).all()) and bool((lam <= 1.0).all())
    assert lam.min().item() < 0.6  # not degenerate: Beta(0.2, 0.2) is U-shaped
    with pytest.raises(ValueError):
        mixup_lambda(2, eta=0.0)


def test_mixup_of_targets_matches_mixup_of_images() -> None:
    # Image i is constant v_i and its anchor targets are v_i: mixing both with the same lambda'
    # and the same partners must keep "image value == target value" for every mixed image.
    v = torch.tensor([0.0, 0.2, 0.9, 1.0])
    images = v.view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    targets = v.view(4, 1, 1).expand(4, 6, 1).clone()
    perm = torch.tensor([2, 3, 1, 0])
    lam = torch.tensor([0.5, 0.7, 0.95, 1.0])
    mixed_x = mixup(images, images[perm], lam)
    mixed_y = mixup(targets, targets[perm], lam)
    expected = lam * v + (1 - lam) * v[perm]
    assert torch.allclose(mixed_x[:, 0, 0, 0], expected)
    assert torch.allclose(mixed_y[:, 0, 0], expected)
    assert torch.allclose(mixed_x.flatten(1).mean(1), mixed_y.flatten(1).mean(1))
    with pytest.raises(ValueError):
        mixup(images, images, lam[:2])


def test_soft_detection_loss_hand_computed_and_empty_targets() -> None:
    # one image, two anchors, K = 1, softmax logits: p_fg = sigmoid(l1 - l0)
    logits = torch.tensor([[[0.0, math.log(4.0)], [0.0, -math.log(4.0)]]])  # p = 0.8, 0.2
    deltas = torch.tensor([[[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]], requires_grad=True)
    y = torch.tensor([[[1.0], [0.0]]])
    valid = torch.ones(1, 2)
    box_t = torch.zeros(1, 2, 4)
    out = soft_focal_detection_loss(
        logits, deltas, y, valid, [(box_t, torch.tensor([[1.0, 0.0]]))], beta=0.0
    )
    sfl = 0.95 * 0.2**2 * -math.log(0.8) + 0.05 * 0.2**2 * -math.log(0.8)
    assert out["loss_cls"].item() == pytest.approx(sfl, rel=1e-5)  # / max(1, 1)
    assert out["loss_box"].item() == pytest.approx(0.5, rel=1e-6)  # L1 of dx on anchor 0
    empty = soft_focal_detection_loss(
        logits, deltas, torch.zeros(1, 2, 1), valid, [(box_t, torch.zeros(1, 2))]
    )
    assert empty["loss_box"].item() == 0.0 and empty["loss_cls"].item() > 0.0
    labels = torch.tensor([[1, 0, -2]])
    t, v = one_hot_targets(labels, 1)
    assert t.squeeze(-1).tolist() == [[1.0, 0.0, 0.0]] and v.tolist() == [[True, True, False]]
