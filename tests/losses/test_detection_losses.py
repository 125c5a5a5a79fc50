"""Focal (sigmoid, softmax), CE and smooth-L1 against hand-computed values; empty images."""

from __future__ import annotations

import math

import pytest
import torch

from ssmd.losses.detection import (
    dense_detection_loss,
    hard_negative_mask,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
)


def test_sigmoid_focal_by_hand() -> None:
    logits = torch.tensor([[0.0], [0.0], [math.log(3.0)]])  # p = 0.5, 0.5, 0.75
    targets = torch.tensor([[1.0], [0.0], [1.0]])
    got = sigmoid_focal_loss(logits, targets)
    # -0.25 * 0.5^2 * log 0.5 ; -0.75 * 0.5^2 * log 0.5 ; -0.25 * 0.25^2 * log 0.75
    expected = torch.tensor([[0.0433217], [0.1299651], [0.0044950]])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_softmax_focal_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [0.0, math.log(3.0), 0.0]])
    labels = torch.tensor([1, 0, 1])  # p_t = 1/3 (fg), 0.5 (bg), 0.6 (fg)
    got = softmax_focal_loss(logits, labels, alpha=0.25, gamma=2.0)
    # -0.25 (2/3)^2 log(1/3) ; -0.75 (1/2)^2 log(1/2) ; -0.25 (0.4)^2 log(0.6)
    expected = torch.tensor([0.1220680, 0.1299651, 0.0204330])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    ce = softmax_focal_loss(logits, labels, alpha=-1.0, gamma=0.0)
    torch.testing.assert_close(ce, torch.tensor([math.log(3.0), math.log(2.0), -math.log(0.6)]))


def test_smooth_l1_by_hand() -> None:
    x = torch.tensor([0.5, 0.05, -0.2])
    got = smooth_l1_loss(x, torch.zeros(3), beta=1 / 9)
    expected = torch.tensor([0.5 - 0.5 / 9, 0.5 * 0.05**2 * 9, 0.2 - 0.5 / 9])
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="beta"):
        smooth_l1_loss(x, x, beta=-1.0)


def _three_anchors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # anchor 0 foreground (class 1), anchor 1 background, anchor 2 ignored with a wild prediction
    cls = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [-50.0, 50.0, 0.0]]])
    box = torch.tensor([[[0.5, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]])
    labels = torch.tensor([[1, 0, -2]])
    targets = torch.zeros(1, 3, 4)
    return cls, box, labels, targets


def test_dense_loss_softmax_focal_by_hand() -> None:
    cls, box, labels, targets = _three_anchors()
    out = dense_detection_loss(cls, box, labels, targets, activation="softmax", cls_loss="focal")
    # one foreground anchor -> normaliser 1; the ignored anchor and background deltas add nothing
    torch.testing.assert_close(
        out["loss_cls"], torch.tensor(0.1220680 + 0.1299651), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(out["loss_box"], torch.tensor(0.5 - 0.5 / 9))
    assert set(out) == {"loss_cls", "loss_box"}


def test_dense_loss_softmax_ce_by_hand() -> None:
    cls, box, labels, targets = _three_anchors()
    out = dense_detection_loss(cls, box, labels, targets, activation="softmax", cls_loss="ce")
    torch.testing.assert_close(out["loss_cls"], torch.tensor(math.log(3.0) + math.log(2.0)))


def _mining_case() -> tuple[torch.Tensor, torch.Tensor]:
    # K = 1; background logits [0, a] have CE log(1 + e^a): a = 0, log 3, -log 3, log 7 give
    # log 2, log 4, log(4/3), log 8; anchor 0 is foreground at p = 1/2, anchor 5 is ignored
    a = [0.0, math.log(3.0), -math.log(3.0), math.log(7.0)]
    cls = torch.tensor([[[0.0, 0.0]] + [[0.0, v] for v in a] + [[-50.0, 50.0]]])
    labels = torch.tensor([[1, 0, 0, 0, 0, -2]])
    return cls, labels


def test_hard_negative_mask_by_hand() -> None:
    cls, labels = _mining_case()
    ce = torch.nn.functional.cross_entropy(cls[0], labels[0].clamp(min=0), reduction="none")
    keep = hard_negative_mask(ce[None], labels, neg_pos_ratio=2.0)
    assert keep.tolist() == [[True, False, True, False, True, False]]  # fg + the two largest
    keep3 = hard_negative_mask(ce[None], labels, neg_pos_ratio=3.0)
    assert keep3.tolist() == [[True, True, True, False, True, False]]
    # per image: 2 fg -> 2 * 1.5 = 3 negatives; 0 fg -> ceil(1.5 * 1) = 2; never more than exist
    loss = torch.tensor([[9.0, 8.0, 1.0, 2.0, 3.0, 4.0], [1.0, 5.0, 3.0, 2.0, 4.0, 0.0]])
    lab = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, -2]])
    got = hard_negative_mask(loss, lab, neg_pos_ratio=1.5)
    assert got.tolist() == [
        [True, True, False, True, True, True],
        [False, True, False, False, True, False],
    ]
    few = hard_negative_mask(loss, lab, neg_pos_ratio=10.0)
    assert few[0].all() and few[1].tolist() == [True] * 5 + [False]
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        hard_negative_mask(loss, lab, neg_pos_ratio=0.0)


def test_dense_loss_ce_ohem_by_hand() -> None:
    cls, labels = _mining_case()
    box = torch.zeros(1, 6, 4)
    out = dense_detection_loss(cls, box, labels, box, cls_loss="ce_ohem", neg_pos_ratio=2.0)
    # log 2 (fg) + log 8 + log 4 (the two hardest negatives), one foreground anchor
    torch.testing.assert_close(out["loss_cls"], torch.tensor(6 * math.log(2.0)))
    default = dense_detection_loss(cls, box, labels, box, cls_loss="ce_ohem")  # ratio 3
    torch.testing.assert_close(default["loss_cls"], torch.tensor(7 * math.log(2.0)))
    plain = dense_detection_loss(cls, box, labels, box, cls_loss="ce")  # every anchor
    want = math.log(2.0) + math.log(2.0) + math.log(4.0) + math.log(4.0 / 3.0) + math.log(8.0)
    torch.testing.assert_close(plain["loss_cls"], torch.tensor(want))
    # the gradient reaches only the kept anchors
    leaf = cls.clone().requires_grad_(True)
    dense_detection_loss(leaf, box, labels, box, cls_loss="ce_ohem", neg_pos_ratio=2.0)[
        "loss_cls"
    ].backward()
    assert leaf.grad is not None
    assert (leaf.grad[0].abs().sum(-1) > 0).tolist() == [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="sigmoid"):
        dense_detection_loss(
            cls[..., 1:], box, labels, box, activation="sigmoid", cls_loss="ce_ohem"
        )


def test_dense_loss_sigmoid_by_hand() -> None:
    cls = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [50.0, 50.0]]])  # K = 2
    box = torch.zeros(1, 3, 4)
    labels = torch.tensor([[2, 0, -2]])
    out = dense_detection_loss(cls, box, labels, torch.zeros(1, 3, 4), activation="sigmoid")
    # anchor 0: class 1 negative (0.1299651) + class 2 positive (0.0433217);
    # anchor 1: class 1 negative (0.1299651) + class 2 negative at p=0.75: -0.75 * 0.75^2 * log(0.25)
    neg_075 = 0.75 * 0.75**2 * math.log(4.0)
    expected = 0.1299651 + 0.0433217 + 0.1299651 + neg_075
    torch.testing.assert_close(out["loss_cls"], torch.tensor(expected), atol=1e-6, rtol=0)
    bce = dense_detection_loss(
        cls, box, labels, torch.zeros(1, 3, 4), activation="sigmoid", cls_loss="ce"
    )
    expected_bce = 2 * math.log(2.0) + math.log(2.0) + math.log(4.0)
    torch.testing.assert_close(bce["loss_cls"], torch.tensor(expected_bce))


def test_normalised_by_number_of_foreground_anchors() -> None:
    cls = torch.zeros(2, 4, 2, requires_grad=True)
    box = torch.full((2, 4, 4), 0.5)
    labels = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    out = dense_detection_loss(cls, box, labels, torch.zeros(2, 4, 4))
    per_box = 4 * (0.5 - 0.5 / 9)
    torch.testing.assert_close(out["loss_box"], torch.tensor(3 * per_box / 3))
    # 3 fg anchors at p_t = 0.5 and 5 bg anchors at p_t = 0.5
    expected = (3 * 0.25 + 5 * 0.75) * 0.25 * math.log(2.0) / 3
    torch.testing.assert_close(out["loss_cls"], torch.tensor(expected))


@pytest.mark.parametrize(
    ("activation", "cls_loss"),
    [
        ("softmax", "focal"),
        ("softmax", "ce"),
        ("softmax", "ce_ohem"),
        ("sigmoid", "focal"),
        ("sigmoid", "ce"),
    ],
)
def test_image_without_objects(activation: str, cls_loss: str) -> None:
    k = 2 if activation == "softmax" else 1
    cls = torch.randn(1, 50, k, requires_grad=True)
    box = torch.randn(1, 50, 4, requires_grad=True)
    out = dense_detection_loss(
        cls,
        box,
        torch.zeros(1, 50, dtype=torch.long),
        torch.zeros(1, 50, 4),
        activation=activation,  # type: ignore[arg-type]
        cls_loss=cls_loss,  # type: ignore[arg-type]
    )
    assert out["loss_box"].item() == 0.0
    assert torch.isfinite(out["loss_cls"]) and out["loss_cls"].item() > 0
    (out["loss_cls"] + out["loss_box"]).backward()
    assert cls.grad is not None and cls.grad.abs().sum() > 0
    assert box.grad is not None and torch.count_nonzero(box.grad) == 0


def test_rejects_bad_arguments() -> None:
    cls, box, labels, targets = _three_anchors()
    with pytest.raises(ValueError, match="activation"):
        dense_detection_loss(cls, box, labels, targets, activation="relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cls_loss"):
        dense_detection_loss(cls, box, labels, targets, cls_loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape mismatch"):
        dense_detection_loss(cls, box, labels[:, :2], targets)
