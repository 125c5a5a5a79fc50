"""CSD: hand-computed cost, ~0 for a flip-equivariant network and clearly not otherwise,
background elimination, the unsupervised loss reaching the network, registration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmd.methods.base import METHODS, build_method
from ssmd.methods.csd import CSD, background_mask, csd_consistency
from ssmd.models import build_retinanet
from ssmd.models.detectors.retinanet import DenseOutputs
from ssmd.structures.sample import Batch, Sample, collate


def _one_anchor(logits: list[float], deltas: list[float]) -> DenseOutputs:
    return DenseOutputs(
        [torch.tensor(logits).view(1, 1, -1, 1, 1)],
        [torch.tensor(deltas).view(1, 1, 4, 1, 1)],
        (8, 8),
    )


def test_cost_hand_computed_kl_and_jsd() -> None:
    a = _one_anchor([0.0, math.log(3.0)], [1.0, 0.0, 0.0, 0.0])  # p = (0.25, 0.75)
    b = _one_anchor([0.0, 0.0], [0.0, 0.0, 0.0, 0.0])  # p = (0.5, 0.5)
    # KL(b||a) + KL(a||b) = sum (pb - pa)(log pb - log pa) = 0.25 ln 2 + 0.25 ln 1.5
    sym_kl = 0.25 * math.log(2.0) + 0.25 * math.log(1.5)
    assert csd_consistency(a, b, "kl").item() == pytest.approx(sym_kl + 0.25, rel=1e-5)
    m = (0.375, 0.625)
    jsd = 0.5 * (
        0.25 * math.log(0.25 / m[0])
        + 0.75 * math.log(0.75 / m[1])
        + 0.5 * math.log(0.5 / m[0])
        + 0.5 * math.log(0.5 / m[1])
    )
    assert csd_consistency(a, b, "jsd").item() == pytest.approx(jsd + 0.25, rel=1e-5)
    with pytest.raises(ValueError, match="divergence"):
        csd_consistency(a, b, "l2")


def test_background_elimination_keeps_foreground_anchors_only() -> None:
    fg = torch.tensor([0.0, 2.0]).view(1, 1, 2, 1, 1)  # p_fg > p_bg: kept
    bg = torch.tensor([2.0, 0.0]).view(1, 1, 2, 1, 1)  # eliminated
    a = DenseOutputs([torch.cat([fg, bg], dim=-1)], [torch.zeros(1, 1, 4, 1, 2)], (8, 16))
    deltas_b = torch.zeros(1, 1, 4, 1, 2)
    deltas_b[..., 1] = 2.0  # a large difference on the background anchor only
    b = DenseOutputs([a.cls_logits[0].clone()], [deltas_b], (8, 16))
    assert csd_consistency(a, b, background_elimination=True).item() == pytest.approx(0.0, abs=1e-7)
    # without it: anchor 2 has (dx, dy, dw, dh) all off by 2, mean square 4; mean of (0, 4)
    assert csd_consistency(a, b, background_elimination=False).item() == pytest.approx(2.0)


class _ToyDetector(nn.Module):
    """Two levels, one anchor, K = 1; flip-equivariant unless ``position`` is set:
    symmetric kernels give class logits and dy, dw, dh, an antisymmetric kernel gives dx."""

    activation = "softmax"

    def __init__(self, position: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.5))
        self.position = position

    def forward(self, x: Tensor) -> DenseOutputs:
        g = x.mean(1, keepdim=True)  # (B, 1, H, W)
        sym = torch.tensor([1.0, 2.0, 1.0]).view(1, 1, 1, 3)
        anti = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
        cls, deltas = [], []
        for s in (8, 16):
            f = F.avg_pool2d(g, s)  # (B, 1, H/s, W/s)
            a = F.conv2d(f, sym, padding=(0, 1)) * self.w
            d = F.conv2d(f, anti, padding=(0, 1)) * self.w
            ramp = torch.linspace(0, 1, a.shape[-1]).view(1, 1, 1, -1)
            c = a + self.position * ramp
            cls.append(torch.stack([-c, c], dim=2))  # (B, 1, 2, h, w)
            deltas.append(torch.stack([d, a, 0.5 * a, -a], dim=2))  # (B, 1, 4, h, w)
        return DenseOutputs(cls, deltas, tuple(x.shape[2:]))


def test_cost_is_zero_for_a_flip_equivariant_network_and_not_otherwise() -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    equivariant = CSD(_ToyDetector())
    assert equivariant.consistency(x).item() == pytest.approx(0.0, abs=1e-10)
    for divergence in ("kl", "jsd"):
        broken = CSD(_ToyDetector(position=3.0), divergence=divergence)
        assert broken.consistency(x).item() > 0.05


def _tiny() -> nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
    )


def _batch(labeled: bool, n: int = 2, size: int = 128, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        boxes = torch.tensor([[20.0, 24.0, 52.0, 60.0]]) if labeled else torch.zeros(0, 4)
        labels = torch.tensor([1]) if labeled else torch.zeros(0, dtype=torch.int64)
        samples.append(Sample(torch.randn(3, size, size, generator=g), boxes, labels, image_id=i))
    return collate(samples)


def test_unsupervised_loss_is_nonzero_and_reaches_the_network() -> None:
    method = build_method("csd", _tiny(), {"ramp": "none", "consistency_on_labeled": False})
    assert isinstance(method, CSD) and METHODS.get("csd") is CSD and CSD.uses_unlabeled
    method.train()
    losses = method.training_step(_batch(True), _batch(False, seed=1), step=0, max_iters=10)
    assert losses["loss_cons_unlabeled"].item() > 0
    assert losses["loss_cons"].requires_grad
    grads = torch.autograd.grad(
        losses["loss_cons"], [p for p in method.trainable_parameters()], allow_unused=True
    )
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    total = losses["loss"] - losses["loss_cls"] - losses["loss_box"]
    assert total.item() == pytest.approx(losses["loss_cons"].item(), abs=1e-6)  # lambda = 1


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="divergence"):
        build_method("csd", _tiny(), {"divergence": "l1"})
    with pytest.raises(ValueError, match="softmax"):
        CSD(
            build_retinanet(
                "resnet18",
                width_multiplier=0.25,
                fpn_channels=16,
                head_convs=1,
                activation="sigmoid",
            )
        )
    method = CSD(_tiny())
    with pytest.raises(ValueError, match="multiple of the largest stride"):
        method.consistency(torch.zeros(1, 3, 128, 96))


def test_background_mask_is_the_reference_rule_on_the_unflipped_branch_only() -> None:
    # K = 2; four anchors of the un-flipped branch (probabilities from log-probabilities):
    # 0: (0.2, 0.5, 0.3) max fg 0.5 > 0.2 kept; 1: (0.4, 0.3, 0.3) fg mass 0.6 but max fg
    # 0.3 < 0.4: eliminated; 2: (0.6, 0.1, 0.3) eliminated; 3: (0.1, 0.1, 0.8) kept
    pa = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    # the flipped branch says the opposite (foreground at 1 and 2, background at 0 and 3)
    pb = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])

    def outputs(p: Tensor, deltas: Tensor) -> DenseOutputs:
        # (A=1, K+1, H=1, W=4): anchor j at column j
        return DenseOutputs(
            [p.log().T.reshape(1, 1, 3, 1, 4)], [deltas.view(1, 1, 4, 1, 4)], (8, 32)
        )

    da = torch.zeros(4, 4)
    db = torch.zeros(4, 4)
    db[:, 0] = torch.tensor([1.0, 3.0, 3.0, 2.0])  # dx differs by 1, 3, 3, 2 (column j)
    a, b = outputs(pa, da), outputs(pb, db.T.contiguous())
    assert background_mask(a).tolist() == [[True, False, False, True]]
    assert background_mask(b).tolist() == [[False, True, True, False]]  # not used by CSD

    def sym_kl(p: Tensor, q: Tensor) -> float:
        return float(((p - q) * (p.log() - q.log())).sum())

    # kept anchors 0 and 3: class KL_a + KL_b, location mean of squares over 4 deltas
    expected = (sym_kl(pa[0], pb[0]) + 1.0 / 4 + sym_kl(pa[3], pb[3]) + 4.0 / 4) / 2
    got = csd_consistency(a, b, "kl", background_elimination=True)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # no kept anchor: cost exactly 0
    none = outputs(torch.tensor([[0.9, 0.05, 0.05]]).expand(4, 3).contiguous(), da)
    assert csd_consistency(none, b, background_elimination=True).item() == 0.0


def test_training_step_logs_the_fraction_of_anchors_kept() -> None:
    torch.manual_seed(0)
    labeled, unlabeled = _batch(True), _batch(False, seed=1)
    plain = CSD(_tiny(), ramp="none")
    out = plain.training_step(labeled, unlabeled, step=0, max_iters=10)
    assert out["cons_kept_labeled"].item() == 1.0 and out["cons_kept_unlabeled"].item() == 1.0
    method = CSD(_tiny(), ramp="none", background_elimination=True)
    with torch.no_grad():  # no background prior and spread logits: a mixed share kept
        method.model.head.cls_logits.bias.zero_()
        method.model.head.cls_logits.weight.mul_(30.0)
    losses = method.training_step(labeled, unlabeled, step=0, max_iters=10)
    expected = background_mask(method.model(unlabeled.images)).float().mean().item()
    assert 0.05 < expected < 0.95
    assert losses["cons_kept_unlabeled"].item() == pytest.approx(expected)
    assert 0.0 <= losses["cons_kept_labeled"].item() <= 1.0
    assert not losses["cons_kept_unlabeled"].requires_grad
    rest = losses["loss_cls"] + losses["loss_box"] + losses["loss_cons"]
    assert losses["loss"].item() == pytest.approx(rest.item(), rel=1e-6)  # not in the loss
