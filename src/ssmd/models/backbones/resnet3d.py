"""A small 3D ResNet trunk returning multi-scale features (``features_only``, timm style).

Basic residual blocks (He et al.) with ``Conv3d``; the stem is one 3x3x3 stride-2
convolution (no max-pool: nodules of 2-3 voxels must survive the first stage), then
``len(widths) - 1`` stages, each halving the resolution. The feature maps of the last
``num_outputs`` stages are returned, finest first, for an FPN
(:class:`~ssmd.models.necks.fpn.FPN` with ``spatial_dims=3``). With the defaults the
outputs have strides 4, 8, 16 -- the levels a CPU-sized 3D RetinaNet for lung nodules
uses (MONAI's LUNA16 tutorial RetinaNet detects on in-plane strides 4, 8, 16 of a 3D ResNet too).

MONAI's ``monai.networks.nets.ResNet`` is the same network; it is not used here because
ssmd's core must not need MONAI (a dev extra) and because its ``forward`` ends in a
classifier (MONAI's detection wraps it with a feature extractor for the same reason).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ssmd.models.heads.retinanet_head import group_norm_groups

__all__ = ["BasicBlock3d", "ResNet3dFeatures"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(group_norm_groups(channels, 8), channels)
    if kind == "bn":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"norm must be 'gn' or 'bn', got {kind!r}")


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (1x1x1 projection when needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _norm(norm, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                _norm(norm, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + identity)


class ResNet3dFeatures(nn.Module):
    """3D ResNet trunk (module docstring).

    Args:
        in_channels: volume channels (1 for CT).
        widths: channels of the stem and of every stage, e.g. ``(16, 32, 64, 128)``.
        blocks: basic blocks per stage (``len(widths) - 1`` entries).
        num_outputs: how many of the last stages are returned.
        norm: ``"gn"`` (GroupNorm; same in train and eval mode, for batches of 2-4 patches)
            or ``"bn"``.

    Attributes:
        out_channels: channels of the returned maps, finest first.
        strides: their strides in input voxels.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: Sequence[int] = (1, 1, 1),
        num_outputs: int = 3,
        norm: str = "gn",
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths = {widths}: need a stem and at least one stage, all >= 1")
        if len(blocks) != len(widths) - 1 or min(blocks) < 1:
            raise ValueError(
                f"blocks = {tuple(blocks)}: need {len(widths) - 1} entries >= 1 (one per stage)"
            )
        if not 1 <= num_outputs <= len(widths) - 1:
            raise ValueError(f"num_outputs = {num_outputs}: need 1..{len(widths) - 1}")
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 3, 2, 1, bias=False),
            _norm(norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Sequential] = []
        for k in range(1, len(widths)):
            layers = [BasicBlock3d(widths[k - 1], widths[k], 2, norm)]
            layers += [
                BasicBlock3d(widths[k], widths[k], 1, norm) for _ in range(blocks[k - 1] - 1)
            ]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.num_outputs = num_outputs
        self.out_channels = widths[-num_outputs:]
        self.strides = [2 ** (k + 1) for k in range(1, len(widths))][-num_outputs:]
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x``: ``Tensor[B, C, D, H, W]`` -> the last ``num_outputs`` stage maps
        ``Tensor[B, out_channels[k], D / s_k, H / s_k, W / s_k]`` (rounding up), finest first."""
        x = self.stem(x)  # (B, w0, D/2, H/2, W/2)
        outs: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[-self.num_outputs :]
