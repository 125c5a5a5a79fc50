"""FocalMix-3D: the 2D method's code on volumes -- 8 flips aligned on 3D dense maps, 3D object
MixUp, and an unsupervised loss that is non-zero and reaches the student."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssmd.methods.base import build_method
from ssmd.methods.focalmix import AUGMENTATIONS_3D, FocalMix, object_mixup, undo_flip
from ssmd.models.factory import create_model
from ssmd.structures.dense import DenseOutputs
from ssmd.structures.sample import Batch, Sample, collate


def test_undo_dflip_flips_depth_and_negates_dz_and_rejects_2d() -> None:
    cls = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(1, 1, 2, 3, 2, 2)
    deltas = torch.randn(1, 1, 6, 3, 2, 2)
    out = DenseOutputs([cls], [deltas], (48, 32, 32))
    back = undo_flip(out, "dflip")
    assert torch.equal(back.cls_logits[0][:, :, :, 0], cls[:, :, :, 2])  # z -> D - 1 - z
    assert torch.allclose(back.box_deltas[0][:, :, 2, 0], -deltas[:, :, 2, 2])  # dz negated
    assert torch.allclose(back.box_deltas[0][:, :, 0, 0], deltas[:, :, 0, 2])  # dx kept
    assert torch.allclose(back.box_deltas[0][:, :, 5, 0], deltas[:, :, 5, 2])  # log-depth kept
    all3 = undo_flip(out, "hvdflip")
    assert torch.allclose(all3.box_deltas[0][:, :, :3, 0, 0, 0], -deltas[:, :, :3, 2, 1, 1])
    flat2d = DenseOutputs([cls[..., 0]], [deltas[:, :, :4, :, :, 0]], (48, 32))
    with pytest.raises(ValueError, match="flips z"):
        undo_flip(flat2d, "dflip")


class _FlipEquivariant3d(nn.Module):
    """One level, one anchor, K = 1: class logits and sizes from a symmetric 3x3x3 kernel,
    d_x / d_y / d_z from kernels antisymmetric along x / y / z."""

    spatial_dims = 3

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> DenseOutputs:
        g = F.avg_pool3d(x.mean(1, keepdim=True), 4)  # (B, 1, D/4, H/4, W/4)
        t = torch.tensor([1.0, 2.0, 1.0])
        dv = torch.tensor([-1.0, 0.0, 1.0])
        sym = torch.einsum("i,j,k->ijk", t, t, t)
        kx = torch.einsum("i,j,k->ijk", t, t, dv)  # antisymmetric along W (x)
        ky = torch.einsum("i,j,k->ijk", t, dv, t)
        kz = torch.einsum("i,j,k->ijk", dv, t, t)
        a, dx, dy, dz = (
            F.conv3d(g, k.view(1, 1, 3, 3, 3), padding=1) * self.w for k in (sym, kx, ky, kz)
        )
        cls = torch.stack([-a, a], dim=2)  # (B, 1, 2, d, h, w)
        deltas = torch.stack([dx, dy, dz, 0.5 * a, -a, 0.1 * a], dim=2)  # (B, 1, 6, d, h, w)
        return DenseOutputs([cls], [deltas], tuple(x.shape[2:]))


def test_eight_aligned_flips_of_an_equivariant_network_agree() -> None:
    x = torch.randn(2, 1, 16, 24, 32, generator=torch.Generator().manual_seed(3))
    net = _FlipEquivariant3d()
    m8 = FocalMix(net, num_augmentations=8, temperature=1.0)
    assert m8.augmentations == AUGMENTATIONS_3D
    y8, d8, _ = m8.predict_targets(x)
    y1, d1, _ = FocalMix(net, num_augmentations=1, temperature=1.0).predict_targets(x)
    assert torch.allclose(y8, y1, atol=1e-6) and torch.allclose(d8, d1, atol=1e-5)
    assert float(d1[..., 2].abs().max()) > 0.1  # d_z is not trivially zero
    # a misaligned map (z flipped but d_z not negated) does not agree
    with torch.no_grad():
        bad = undo_flip(net(x.flip(-3)), "dflip")
        bad.box_deltas[0][:, :, 2] *= -1
        assert float((bad.flat_box_deltas() - d1).abs().max()) > 0.1
    with pytest.raises(ValueError, match=r"1\.\.8"):
        FocalMix(net, num_augmentations=9)


def test_object_mixup_3d_blends_boxes_only() -> None:
    torch.manual_seed(0)
    images = torch.stack([torch.zeros(1, 16, 16, 16), torch.ones(1, 16, 16, 16)])
    boxes = [torch.tensor([[2.0, 3, 4, 6, 7, 8]]), torch.tensor([[8.0, 8, 8, 12, 14, 16]])]
    out = object_mixup(images, boxes, eta=0.2)
    assert torch.equal(out[0, :, 9:], images[0, :, 9:])  # outside the boxes: unchanged
    patch0 = out[0, :, 4:8, 3:7, 2:6]  # (z, y, x) of box 0
    assert bool((patch0 > 0).all()) and bool((patch0 <= 0.5).all())
    patch1 = out[1, :, 8:16, 8:14, 8:12]
    assert bool((patch1 < 1).all()) and bool((patch1 >= 0.5).all())


def _volumes(labeled: bool, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(2):
        boxes = torch.tensor([[6.0, 8, 10, 14, 16, 18]]) if labeled else torch.zeros(0, 6)
        labels = torch.ones(len(boxes), dtype=torch.int64)
        image = torch.randn(1, 32, 32, 32, generator=g)
        samples.append(Sample(image, boxes, labels, image_id=i, spatial_dims=3))
    return collate(samples)


def test_focalmix3d_unsupervised_loss_is_nonzero_and_reaches_the_student() -> None:
    torch.manual_seed(0)
    model = create_model("retinanet3d", widths=(4, 8, 8, 8), fpn_channels=8, activation="softmax")
    method = build_method("focalmix", model, {"ramp": "none", "num_augmentations": 8})
    assert isinstance(method, FocalMix) and len(method.augmentations) == 8
    method.train()
    losses = method.training_step(_volumes(True, 0), _volumes(False, 1), step=0, max_iters=10)
    assert losses["loss_unsup"].item() > 0 and losses["loss_unsup"].requires_grad
    grads = torch.autograd.grad(
        losses["loss_unsup"], method.trainable_parameters(), allow_unused=True, retain_graph=True
    )
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert losses["loss_cls"].item() > 0 and losses["loss_box"].item() > 0
    assert method.model.training
