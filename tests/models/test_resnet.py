"""ResNet feature extractor: shapes, widths, local weights, block wrapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ssmd.models.backbones.resnet import BACKBONES, build_resnet


@pytest.mark.parametrize(
    ("name", "channels"),
    [("resnet18", (32, 64, 128)), ("resnet34", (32, 64, 128)), ("resnet50", (128, 256, 512))],
)
def test_c3_c4_c5_shapes_at_quarter_width(name: str, channels: tuple[int, ...]) -> None:
    net = build_resnet(name, width_multiplier=0.25)
    assert net.out_channels == channels
    assert net.strides == (8, 16, 32)
    feats = net(torch.randn(2, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [
        (2, channels[0], 16, 12),
        (2, channels[1], 8, 6),
        (2, channels[2], 4, 3),
    ]


def test_stage_widths_and_depths() -> None:
    net = build_resnet("resnet18", width_multiplier=0.25)
    widths = [s[-1].conv2.out_channels for s in net.stages()]  # type: ignore[union-attr]
    assert widths == [16, 32, 64, 128]
    deep = build_resnet("resnet101", width_multiplier=0.125)
    assert [len(s) for s in deep.stages()] == [3, 4, 23, 3]


def test_odd_input_and_single_channel() -> None:
    net = build_resnet("resnet18", width_multiplier=0.25, in_channels=1)
    feats = net(torch.randn(1, 1, 200, 333))
    assert [tuple(f.shape[2:]) for f in feats] == [(25, 42), (13, 21), (7, 11)]


def test_loads_local_torchvision_weights(tmp_path: Path) -> None:
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)  # includes fc.*, which is skipped
    net = build_resnet("resnet18", pretrained_weights=path)
    torch.testing.assert_close(
        net.state_dict()["layer3.1.conv2.weight"], ref.layer3[1].conv2.weight
    )
    torch.testing.assert_close(net.bn1.running_var, ref.bn1.running_var)
    gray = build_resnet("resnet18", in_channels=1, pretrained_weights=path)
    torch.testing.assert_close(gray.conv1.weight, ref.conv1.weight.sum(dim=1, keepdim=True))


def test_weight_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"r34\.pth does not fit.*unexpected keys: layer1\.2"):
        build_resnet("resnet18", pretrained_weights=path)
    with pytest.raises(ValueError, match=r"width_multiplier=1\.0"):
        build_resnet("resnet34", width_multiplier=0.5, pretrained_weights=path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        build_resnet("resnet18", pretrained_weights=tmp_path / "nothere.pth")
    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(ValueError, match="missing keys"):
        build_resnet("resnet101", pretrained_weights=r50)


class _Counting(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.block(x)


def test_block_wrapper_reaches_every_residual_block() -> None:
    names: list[str] = []

    def wrap(name: str, block: nn.Module) -> nn.Module:
        names.append(name)
        return _Counting(block)

    net = build_resnet("resnet18", width_multiplier=0.25, block_wrapper=wrap)
    assert names == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    out = net(torch.randn(1, 3, 64, 64))
    assert out[-1].shape == (1, 128, 2, 2)
    wrapped = [m for m in net.modules() if isinstance(m, _Counting)]
    assert len(wrapped) == 8 and all(m.calls == 1 for m in wrapped)


def test_registry_and_unknown_name() -> None:
    assert {"resnet18", "resnet34", "resnet50", "resnet101"} <= set(BACKBONES.names())
    assert isinstance(BACKBONES.get("resnet18")(width_multiplier=0.25), nn.Module)
    with pytest.raises(KeyError, match="resnet18"):
        build_resnet("resnet7")
