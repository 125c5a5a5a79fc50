"""Noisy residual block (SSMD Eq. (6)-(7)), its placement, and the Table 4 alternatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import DropBlock2d

from ssmd.models import build_retinanet
from ssmd.models.layers.noisy_residual import (
    NoisyResidualBlock,
    insert_noisy_residual_blocks,
    strip_feature_perturbations,
)
from ssmd.models.layers.perturb import GaussianFeatureNoise, insert_feature_perturbation


def _tiny() -> nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
    )


def test_eq7_by_hand() -> None:
    block = NoisyResidualBlock(2, gamma=0.9, mu=0.5, sigma=2.0)
    with torch.no_grad():
        block.conv.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
        block.conv.bias.zero_()
    x = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), -2.0)])[None]  # (1, 2, 2, 2)
    # GAP = (1, -2); conv -> X^p = (0.5, -2); gate = sigmoid(0.9 X^p) = (0.6106392, 0.1418511)
    # X^n = mu + sigma * 1 = 2.5 -> X^q = (1 + 2.5 * 0.6106392, -2 + 2.5 * 0.1418511)
    #                                 = (2.5265981, -1.6453723)
    block.train()
    out = block(x, noise=torch.ones_like(x))
    assert torch.allclose(out[0, 0], torch.full((2, 2), 2.5265981), atol=1e-6)
    assert torch.allclose(out[0, 1], torch.full((2, 2), -1.6453723), atol=1e-6)
    assert torch.allclose(block.gate(x).flatten(), torch.tensor([0.6106392, 0.1418511]), atol=1e-6)


def test_identity_in_eval_and_stochastic_in_train() -> None:
    block = NoisyResidualBlock(4)
    x = torch.randn(2, 4, 5, 5)
    block.eval()
    assert torch.equal(block(x), x)
    block.train()
    a, b = block(x), block(x)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, x)
    # per-sample noise: the two images of the batch are perturbed differently
    same = torch.randn(1, 4, 5, 5).expand(2, -1, -1, -1)
    out = block(same)
    assert not torch.allclose(out[0] - same[0], out[1] - same[1])


def test_gate_is_learnable() -> None:
    block = NoisyResidualBlock(3)
    block.train()
    block(torch.randn(2, 3, 4, 4)).pow(2).sum().backward()
    assert block.conv.weight.grad is not None and block.conv.weight.grad.abs().sum() > 0


def test_insert_after_each_stage_keeps_keys_and_strips() -> None:
    model = _tiny()
    plain_keys = set(model.state_dict())
    blocks = insert_noisy_residual_blocks(model, stages=(1, 2, 3, 4), gamma=0.9, sigma=1.0)
    assert [b.conv.in_channels for b in blocks] == [16, 32, 64, 128]
    stages = model.backbone.stages()  # type: ignore[operator]
    assert all(stage[-1] is block for stage, block in zip(stages, blocks, strict=True))
    state = model.state_dict()
    assert plain_keys < set(state)
    assert "backbone.layer3.feature_noise.conv.weight" in state
    fresh = _tiny()
    fresh.load_state_dict(strip_feature_perturbations(state))  # strict: exact plain keys
    x = torch.randn(1, 3, 128, 128)
    model.eval()
    fresh.eval()
    a, b = model(x), fresh(x)
    assert torch.allclose(a.cls_logits[0], b.cls_logits[0], atol=1e-6)  # NRB = identity at test
    model.train()
    c = model(x)
    assert not torch.allclose(c.box_deltas[0], model(x).box_deltas[0])
    with pytest.raises(ValueError, match="already"):
        insert_noisy_residual_blocks(model, stages=(2,))


def test_alternatives_table4() -> None:
    model = _tiny()
    inserted = insert_feature_perturbation(model, "dropblock", drop_prob=0.2, block_size=3)
    assert len(inserted) == 2 and all(isinstance(m, DropBlock2d) for m in inserted)
    assert model.backbone.layer3[-1] is inserted[0] and model.backbone.layer4[-1] is inserted[1]  # type: ignore[index]
    model = _tiny()
    assert all(isinstance(m, nn.Dropout) for m in insert_feature_perturbation(model, "dropout"))
    model = _tiny()
    noise = insert_feature_perturbation(model, "noise", stages=[2], sigma=0.5)
    assert len(noise) == 1 and isinstance(noise[0], GaussianFeatureNoise)
    x = torch.randn(2, 8, 4, 4)
    noise[0].eval()
    assert torch.equal(noise[0](x), x)
    noise[0].train()
    assert (noise[0](x) - x).std().item() == pytest.approx(0.5, rel=0.3)
    assert insert_feature_perturbation(_tiny(), "none") == []
    with pytest.raises(ValueError, match="kind"):
        insert_feature_perturbation(_tiny(), "gaussian")
    with pytest.raises(ValueError, match="stages"):
        insert_feature_perturbation(_tiny(), "nrb", stages=[0, 5])
    with pytest.raises(TypeError, match="ResNet"):
        insert_feature_perturbation(nn.Linear(2, 2), "nrb")


def test_table4_combinations_nrb_then_second_kind() -> None:
    model = _tiny()
    inserted = insert_feature_perturbation(model, "nrb+dropout", drop_prob=0.3)
    assert len(inserted) == 4  # both parts act after every stage
    for m in inserted:
        assert isinstance(m, nn.Sequential) and len(m) == 2
        assert isinstance(m[0], NoisyResidualBlock) and isinstance(m[1], nn.Dropout)
    state = model.state_dict()
    assert "backbone.layer3.feature_noise.0.conv.weight" in state
    fresh = _tiny()
    fresh.load_state_dict(strip_feature_perturbations(state))  # still strips exactly
    # NRB + DropBlock: DropBlock only joins the NRB in layer3/layer4 (its own stages)
    mixed = insert_feature_perturbation(_tiny(), "nrb+dropblock", drop_prob=0.1)
    assert [type(m).__name__ for m in mixed] == [
        "NoisyResidualBlock",
        "NoisyResidualBlock",
        "Sequential",
        "Sequential",
    ]
    # the combination is the composition, in the written order, in train mode only
    block = insert_feature_perturbation(_tiny(), "nrb+noise", stages=[2], sigma=0.0, mu=1.0)[0]
    x = torch.randn(1, 32, 4, 4)  # layer2's width in the tiny model
    torch.manual_seed(0)
    block.train()
    expected_nrb = block[0](x)
    torch.manual_seed(0)
    assert torch.allclose(block(x), expected_nrb + 1.0)
    block.eval()
    assert torch.equal(block(x), x)
    for bad in ("nrb+nrb", "nrb+none", "nrb+gaussian"):
        with pytest.raises(ValueError, match="combination"):
            insert_feature_perturbation(_tiny(), bad)
