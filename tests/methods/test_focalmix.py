"""FocalMix method: flip alignment of predicted targets, object-level MixUp, the unsupervised
loss being non-zero and reaching the network, options and registration."""

from __future__ import annotations

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
