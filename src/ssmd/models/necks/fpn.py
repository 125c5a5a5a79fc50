"""Feature pyramid network producing ``P3..P7`` as in RetinaNet (Lin et al., Sec. 4).

``P3..P5`` come from ``C3..C5`` by 1x1 lateral convolutions, a nearest-neighbour top-down
pathway and 3x3 output convolutions (Lin et al., *Feature Pyramid Networks*); ``P6`` is a
3x3 stride-2 convolution on ``C5`` and ``P7`` a 3x3 stride-2 convolution on ``ReLU(P6)``
(RetinaNet; torchvision's ``LastLevelP6P7`` with ``use_P5=False``). SSMD's detector is
RetinaNet with "five scales" (Sec. 4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN"]


class FPN(nn.Module):
    """Top-down feature pyramid with RetinaNet's extra levels.

    Args:
        in_channels: channels of the backbone maps, finest first (``C3, C4, C5``).
        out_channels: channels of every pyramid level (256 in RetinaNet; 32-64 on CPU).
        extra_levels: number of stride-2 levels added above the coarsest input (2 -> ``P6, P7``).
        extra_from: ``"c5"`` (RetinaNet paper) or ``"p5"`` (torchvision v1 RetinaNet): the
            input of the first extra level.
        spatial_dims: 2 (``Conv2d``) or 3 (``Conv3d``, volumes ``(B, C, D, H, W)``); the
            pyramid's maths is the same.

    Attributes:
        out_channels: channels of every output level.
        num_levels: ``len(in_channels) + extra_levels``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        extra_levels: int = 2,
        extra_from: Literal["c5", "p5"] = "c5",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        if extra_levels < 0:
            raise ValueError(f"extra_levels must be >= 0, got {extra_levels}")
        if extra_from not in ("c5", "p5"):
            raise ValueError(f"extra_from must be 'c5' or 'p5', got {extra_from!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv: type[nn.Conv2d | nn.Conv3d] = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.spatial_dims = spatial_dims
        self.out_channels = out_channels
        self.extra_from = extra_from
        self.num_levels = len(in_channels) + extra_levels
        self.lateral = nn.ModuleList(conv(c, out_channels, kernel_size=1) for c in in_channels)
        self.output = nn.ModuleList(
            conv(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels
        )
        first_in = in_channels[-1] if extra_from == "c5" else out_channels
        self.extra = nn.ModuleList(
            conv(
                first_in if i == 0 else out_channels,
                out_channels,
                kernel_size=3,
                stride=2,
                padding=1,
            )
            for i in range(extra_levels)
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Build the pyramid.

        Args:
            features: ``[Tensor[B, in_channels[k], H_k, W_k]]``, finest first.

        Returns:
            ``num_levels`` maps ``Tensor[B, out_channels, H_l, W_l]``, finest first
            (``P3, P4, P5, P6, P7``); each extra level halves the previous size (rounding up).
        """
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN built for {len(self.lateral)} inputs got {len(features)}")
        inner = self.lateral[-1](features[-1])  # (B, F, H_5, W_5)
        results = [self.output[-1](inner)]
        for k in range(len(features) - 2, -1, -1):
            lateral = self.lateral[k](features[k])  # (B, F, H_k, W_k)
            # nearest upsampling to the lateral's size (odd sizes round up, not 2x exactly)
            top_down = F.interpolate(inner, size=lateral.shape[2:], mode="nearest")
            inner = lateral + top_down
            results.insert(0, self.output[k](inner))
        x = features[-1] if self.extra_from == "c5" else results[-1]
        for i, conv in enumerate(self.extra):
            x = conv(x if i == 0 else F.relu(x))  # (B, F, ceil(H/2), ceil(W/2))
            results.append(x)
        return results
