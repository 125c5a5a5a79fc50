"""FocalMix method: flip alignment of predicted targets, object-level MixUp, the unsupervised
loss being non-zero and reaching the network, options and registration."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssmd.methods.base import METHODS, build_method
from ssmd.methods.focalmix import FocalMix, mix_images_and_targets, object_mixup, undo_flip
from ssmd.models import build_retinanet
from ssmd.models.detectors.retinanet import DenseOutputs
from ssmd.structures.sample import Batch, Sample, collate


def _tiny() -> nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
        backbone_norm="gn",  # no batch statistics: a part of the batch is predicted alike alone
    )


def _batch(labeled: bool, n: int = 2, size: int = 128, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        boxes = (
            torch.tensor([[20.0, 24.0, 52.0, 60.0], [70, 64, 100, 90]])
            if labeled
            else torch.zeros(0, 4)
        )
        labels = torch.tensor([1, 1]) if labeled else torch.zeros(0, dtype=torch.int64)
        samples.append(Sample(torch.randn(3, size, size, generator=g), boxes, labels, image_id=i))
    return collate(samples)


def test_undo_vflip_flips_rows_and_negates_dy_and_is_an_involution() -> None:
    cls = torch.arange(2 * 3 * 2, dtype=torch.float32).view(1, 1, 2, 3, 2)  # (B, A, K+1, H, W)
    deltas = torch.randn(1, 1, 4, 3, 2)
    out = DenseOutputs([cls], [deltas], (24, 16))
    back = undo_flip(out, "vflip")
    assert torch.equal(back.cls_logits[0][..., 0, :], cls[..., 2, :])  # row y -> H - 1 - y
    assert torch.allclose(back.box_deltas[0][:, :, 1, 0], -deltas[:, :, 1, 2])  # dy negated
    assert torch.allclose(back.box_deltas[0][:, :, 0, 0], deltas[:, :, 0, 2])  # dx kept
    again = undo_flip(back, "vflip")
    assert torch.allclose(again.box_deltas[0], deltas) and torch.equal(again.cls_logits[0], cls)
    both = undo_flip(out, "hvflip")
    assert torch.allclose(both.box_deltas[0][:, :, 0, 0, 0], -deltas[:, :, 0, 2, 1])
    with pytest.raises(ValueError, match="augmentation"):
        undo_flip(out, "rot90")


class _FlipEquivariant(nn.Module):
    """Two levels, one anchor, K = 1, equivariant under both flips: class logits, dw, dh from a
    symmetric kernel, dx / dy from Sobel kernels (antisymmetric in x / in y)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> DenseOutputs:
        g = x.mean(1, keepdim=True)  # (B, 1, H, W)
        sym = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3)
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
        sy = sx.transpose(-1, -2)
        cls, deltas = [], []
        for s in (8, 16):
            f = torch.nn.functional.avg_pool2d(g, s)  # (B, 1, H/s, W/s)
            a, dx, dy = (
                torch.nn.functional.conv2d(f, k, padding=1) * self.w for k in (sym, sx, sy)
            )
            cls.append(torch.stack([-a, a], dim=2))  # (B, 1, 2, h, w)
            deltas.append(torch.stack([dx, dy, 0.5 * a, -a], dim=2))  # (B, 1, 4, h, w)
        return DenseOutputs(cls, deltas, tuple(x.shape[2:]))


def test_predicted_targets_align_the_flipped_predictions() -> None:
    # for a network equivariant under both flips, the 4 aligned predictions agree, so their
    # mean equals the plain prediction; a misalignment (e.g. dy not negated) would not
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    net = _FlipEquivariant()
    y4, d4, first = FocalMix(net, num_augmentations=4, temperature=1.0).predict_targets(x)
    y1, d1, _ = FocalMix(net, num_augmentations=1, temperature=1.0).predict_targets(x)
    assert torch.allclose(y4, y1, atol=1e-6) and torch.allclose(d4, d1, atol=1e-5)
    assert float(d1[..., :2].abs().max()) > 0.1  # dx, dy are not trivially zero
    assert not y4.requires_grad and bool((y4 >= 0).all()) and bool((y4 <= 1).all())
    assert torch.allclose(y1, first.flat_cls_logits().softmax(-1)[..., 1:])  # T = 1, K = 1
    flipped = FocalMix(net, num_augmentations=2, temperature=1.0)
    flipped.augmentations = ("none", "vflip")
    assert torch.allclose(flipped.predict_targets(x)[1], d1, atol=1e-5)


def test_sharpened_targets_are_more_confident() -> None:
    method = FocalMix(_tiny(), num_augmentations=2, temperature=0.7)
    soft = FocalMix(method.model, num_augmentations=2, temperature=1.0)
    x = torch.randn(2, 3, 128, 128)
    y_sharp, y_soft = method.predict_targets(x)[0], soft.predict_targets(x)[0]
    # foreground prior 0.01: sharpening pushes the (small) foreground probabilities down
    assert float(y_sharp.mean()) < float(y_soft.mean())


def test_object_mixup_blends_objects_only() -> None:
    torch.manual_seed(0)
    images = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    boxes = [torch.tensor([[2.0, 2.0, 10.0, 10.0]]), torch.tensor([[20.0, 20.0, 24.0, 28.0]])]
    out = object_mixup(images, boxes, eta=0.2)
    assert torch.equal(out[0, :, 12:, 12:], images[0, :, 12:, 12:])  # outside boxes: unchanged
    patch0 = out[0, :, 2:10, 2:10]
    assert bool((patch0 > 0).all()) and bool((patch0 <= 0.5).all())  # lambda' >= 0.5 of zeros
    patch1 = out[1, :, 20:28, 20:24]
    assert bool((patch1 < 1).all()) and bool((patch1 >= 0.5).all())
    assert torch.equal(object_mixup(images, [boxes[0], torch.zeros(0, 4)]), images)  # 1 object


def test_unsupervised_loss_is_nonzero_and_reaches_the_student() -> None:
    torch.manual_seed(0)
    method = build_method("focalmix", _tiny(), {"ramp": "none", "num_augmentations": 2})
    assert isinstance(method, FocalMix) and METHODS.get("focalmix") is FocalMix
    method.train()
    losses = method.training_step(_batch(True), _batch(False, seed=1), step=0, max_iters=10)
    assert losses["loss_unsup"].item() > 0 and losses["loss_unsup"].requires_grad
    grads = torch.autograd.grad(
        losses["loss_unsup"], method.trainable_parameters(), allow_unused=True, retain_graph=True
    )
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    expected = losses["loss_cls"] + losses["loss_box"] + losses["loss_unsup"]  # lambda_u = 1
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert method.model.training  # predict_targets restored the mode
    losses["loss"].backward()


def test_without_mixups_the_labeled_part_is_the_sfl_of_one_hot_targets() -> None:
    torch.manual_seed(0)
    method = FocalMix(_tiny(), image_mixup=False, object_mixup=False, ramp="none")
    labeled = _batch(True)
    losses = method.training_step(labeled, _batch(False, seed=1), step=0, max_iters=10)
    from ssmd.losses.focalmix import one_hot_targets, soft_focal_detection_loss

    out = method.model(labeled.images)
    labels, box_t = method.model.assign_targets(out, labeled.targets())
    y, valid = one_hot_targets(labels, 1)
    ref = soft_focal_detection_loss(
        out.flat_cls_logits(), out.flat_box_deltas(), y, valid, [(box_t, (labels > 0).float())]
    )
    assert losses["loss_cls"].item() == pytest.approx(ref["loss_cls"].item(), rel=1e-4)
    assert losses["loss_box"].item() == pytest.approx(ref["loss_box"].item(), rel=1e-4)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="num_augmentations"):
        build_method("focalmix", _tiny(), {"num_augmentations": 5})
    with pytest.raises(ValueError, match="unlabeled_box"):
        FocalMix(_tiny(), unlabeled_box="hard")
    with pytest.raises(ValueError, match=r"method\.foo"):
        build_method("focalmix", _tiny(), {"foo": 1})


def test_the_method_mixes_targets_exactly_as_it_mixes_images() -> None:
    # image i is constant v_i and all its anchor targets are v_i: after the method's MixUp,
    # every mixed image must still equal its mixed targets
    v = torch.tensor([0.0, 0.3, 0.8, 1.0])
    images = v.view(4, 1, 1, 1).expand(4, 3, 16, 16).clone()
    targets = v.view(4, 1, 1).expand(4, 10, 1).clone()
    valid = torch.ones(4, 10, dtype=torch.bool)
    valid[1, 3] = False
    box_t = torch.arange(4.0).view(4, 1, 1).expand(4, 10, 4).clone()
    box_w = torch.ones(4, 10)
    perm = torch.tensor([1, 0, 3, 2])
    lam = torch.tensor([0.6, 0.9, 0.5, 0.75])
    x, y, ok, terms = mix_images_and_targets(images, targets, valid, box_t, box_w, perm, lam)
    assert torch.allclose(x.flatten(1).mean(1), y.flatten(1).mean(1))
    assert torch.allclose(x[:, 0, 0, 0], lam * v + (1 - lam) * v[perm])
    assert not ok[0, 3] and not ok[1, 3] and int(ok.sum()) == 38  # ignored in either image
    (t_a, w_a), (t_b, w_b) = terms
    assert torch.equal(t_a, box_t)
    assert torch.equal(t_b[0], box_t[1]) and torch.allclose(w_a[:, 0] + w_b[:, 0], torch.ones(4))
    assert torch.allclose(w_a[:, 0], lam)


def test_focal_labeled_loss_weights_by_hand() -> None:
    # one positive anchor with p = 0.8 and one negative with p = 0.3 (softmax, K = 1)
    from ssmd.losses.detection import dense_detection_loss
    from ssmd.losses.focalmix import soft_focal_detection_loss

    logits = torch.tensor([[[0.0, torch.log(torch.tensor(4.0))], [0.0, -0.8472978603872037]]])
    labels = torch.tensor([[1, 0]])
    box_t, box_p = torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    method = FocalMix(_tiny(), labeled_loss="focal")
    a0, a1, g = method.labeled_weights()
    assert (a0, a1, g) == pytest.approx((0.75, 0.25, 2.0))
    assert FocalMix(_tiny()).labeled_weights() == pytest.approx((0.05, 0.95, 2.0))
    y = torch.tensor([[[1.0], [0.0]]])
    got = soft_focal_detection_loss(
        logits, box_p, y, torch.ones(1, 2), [(box_t, y[..., 0])], alpha0=a0, alpha1=a1, gamma=g
    )
    hand = 0.25 * 0.2**2 * -math.log(0.8) + 0.75 * 0.3**2 * -math.log(0.7)  # / 1 positive
    assert got["loss_cls"].item() == pytest.approx(hand, rel=1e-4)
    ref = dense_detection_loss(logits, box_p, labels, box_t)  # the detector's focal loss
    assert got["loss_cls"].item() == pytest.approx(ref["loss_cls"].item(), rel=1e-5)


def test_focal_labeled_loss_equals_the_detectors_loss_on_the_same_anchors() -> None:
    torch.manual_seed(0)
    labeled, unlabeled = _batch(True), _batch(False, seed=1)
    method = FocalMix(_tiny(), image_mixup=False, object_mixup=False, labeled_loss="focal")
    losses = method.training_step(labeled, unlabeled, step=0, max_iters=10)
    ref = method.model.loss(method.model(labeled.images), labeled.targets())
    assert losses["loss_cls"].item() == pytest.approx(ref["loss_cls"].item(), rel=1e-4)
    assert losses["loss_box"].item() == pytest.approx(ref["loss_box"].item(), rel=1e-4)
    torch.manual_seed(0)
    sfl = FocalMix(_tiny(), image_mixup=False, object_mixup=False)
    sfl.load_state_dict(method.state_dict())
    default = sfl.training_step(labeled, unlabeled, step=0, max_iters=10)
    assert default["loss_cls"].item() != pytest.approx(ref["loss_cls"].item(), rel=0.05)
    # the unlabeled part keeps the SFL: identical in both
    assert losses["loss_unsup"].item() == pytest.approx(default["loss_unsup"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="labeled_loss"):
        FocalMix(_tiny(), labeled_loss="ce")


def test_ema_teacher_moves_only_by_ema_and_gets_no_gradients() -> None:
    torch.manual_seed(0)
    method = build_method("focalmix", _tiny(), {"teacher": "ema", "ema_decay": 0.9, "ramp": "none"})
    assert isinstance(method, FocalMix) and method.teacher is not None
    assert method.inference_model("teacher") is method.teacher
    assert method.inference_model() is method.model
    with pytest.raises(ValueError, match="teacher"):
        FocalMix(_tiny()).inference_model("teacher")
    teacher0 = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert not any(
        p is q for p in method.trainable_parameters() for q in method.teacher.parameters()
    )
    method.train()
    assert not method.teacher.training
    losses = method.training_step(_batch(True), _batch(False, seed=1), step=0, max_iters=10)
    losses["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    opt.step()
    for k, v in method.teacher.state_dict().items():  # the step itself leaves the teacher alone
        assert torch.equal(v, teacher0[k]), k
    method.after_step(0)
    student = method.model.state_dict()
    moved = 0
    for k, v in method.teacher.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * teacher0[k] + 0.1 * student[k], atol=1e-6), k
            moved += int(not torch.equal(v, teacher0[k]))
    assert moved > 0
    # in the method's state_dict: an exact resume restores the teacher
    state = method.state_dict()
    assert any(k.startswith("teacher.") for k in state)
    fresh = FocalMix(_tiny(), teacher="ema", ema_decay=0.9)
    fresh.load_state_dict(state)
    assert fresh.teacher is not None
    for k, v in fresh.teacher.state_dict().items():
        assert torch.equal(v, method.teacher.state_dict()[k]), k
    with pytest.raises(ValueError, match="ema_decay"):
        FocalMix(_tiny(), teacher="ema", ema_decay=1.5)
    with pytest.raises(ValueError, match=r"method\.teacher"):
        FocalMix(_tiny(), teacher="mean")


def test_targets_come_from_the_teacher_when_teacher_is_ema() -> None:
    from ssmd.losses.focalmix import sharpen

    torch.manual_seed(0)
    method = FocalMix(_tiny(), teacher="ema", num_augmentations=1)
    assert method.teacher is not None
    with torch.no_grad():  # a teacher that differs from the student
        for p in method.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _batch(False, seed=2).images
    y, d, _ = method.predict_targets(x)
    with torch.no_grad():
        t_out = method.teacher(x)
        s_out = method.model.eval()(x)
    method.model.train()
    q_t = sharpen(t_out.flat_cls_logits().softmax(-1), 0.7)[..., 1:]
    q_s = sharpen(s_out.flat_cls_logits().softmax(-1), 0.7)[..., 1:]
    assert torch.allclose(y, q_t, atol=1e-6) and torch.allclose(
        d, t_out.flat_box_deltas(), atol=1e-6
    )
    assert not torch.allclose(y, q_s, atol=1e-4)
    plain = FocalMix(method.model, num_augmentations=1)  # teacher = student: the student's
    assert torch.allclose(plain.predict_targets(x)[0], q_s, atol=1e-6)
