from __future__ import annotations

import pytest
import torch
from torch import nn

from ssmd.models.backbones.resnet import build_resnet, group_norm


def test_group_norm_groups_divide_channels() -> None:
    for c in (4, 16, 24, 64, 256, 2048):
        gn = group_norm(c)
        assert c % gn.num_groups == 0 and gn.num_groups <= 32 and c // gn.num_groups >= 2


def test_gn_backbone_is_identical_in_train_and_eval_mode() -> None:
    net = build_resnet("resnet18", width_multiplier=0.25, norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 3, 64, 64)
    net.train()
    a = net(x)
    net.eval()
    b = net(x)
    assert all(torch.allclose(u, v, atol=1e-6) for u, v in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="norm"):
        build_resnet("resnet18", norm="ln")
