"""RetinaNet classification and box-regression subnets, shared across pyramid levels.

Each subnet is ``num_convs`` 3x3 conv + (optional GroupNorm) + ReLU layers followed by a 3x3
prediction conv (Lin et al., Sec. 4). Outputs stay dense and per level — the maps every
consistency method compares position by position (SSMD Sec. 3.1: "calculated with the
predicted proposals at each spatial position and each scale").

Output layout per level ``l``: class logits ``(B, A, C', H_l, W_l)`` and box deltas
``(B, A, 2D, H_l, W_l)``, where channel ``a * C' + c`` of the prediction conv becomes
``[:, a, c]`` (the channel order torchvision's head uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["RetinaNetHead", "group_norm_groups"]


def group_norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest number of groups ``<= max_groups`` that divides ``channels``."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def _subnet(
    channels: int, num_convs: int, norm: Literal["gn"] | None, spatial_dims: int = 2
) -> nn.Sequential:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(conv(channels, channels, kernel_size=3, padding=1, bias=norm is None))
        if norm == "gn":
            layers.append(nn.GroupNorm(group_norm_groups(channels), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """Classification + regression subnets of RetinaNet.

    Args:
        in_channels: channels of every pyramid level.
        num_anchors: ``A``, anchors per location.
        num_classes: ``K`` foreground classes.
        activation: ``"softmax"``: ``K + 1`` logits per anchor, index 0 = background (SSMD's
            ``p^c[0]``, Eq. (4)); ``"sigmoid"``: ``K`` independent logits (RetinaNet).
        num_convs: conv layers per subnet (4 in RetinaNet).
        norm: ``"gn"`` for GroupNorm after each subnet conv, ``None`` for none.
        prior_prob: initial foreground probability ``pi`` of every anchor (Lin et al., Sec. 4.1).
        spatial_dims: 2 (images) or 3 (volumes: ``Conv3d`` subnets); sets the
            ``2 * spatial_dims`` box channels.

    Initialisation: subnet and prediction weights ``N(0, 0.01)``, biases 0, except the class
    bias. For ``sigmoid`` it is ``-log((1 - pi) / pi)`` (every class starts at ``pi``). For
    ``softmax`` the background bias is 0 and every foreground bias ``log(pi / (K (1 - pi)))``,
    so the background starts at probability ``1 - pi = 0.99`` and the foreground mass ``pi``
    is shared equally by the ``K`` classes.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        activation: Literal["softmax", "sigmoid"] = "softmax",
        num_convs: int = 4,
        norm: Literal["gn"] | None = None,
        prior_prob: float = 0.01,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        if norm not in (None, "gn"):
            raise ValueError(f"norm must be None or 'gn', got {norm!r}")
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.activation = activation
        self.spatial_dims = spatial_dims
        self.num_logits = num_classes + 1 if activation == "softmax" else num_classes
        self.box_dim = 2 * spatial_dims

        self.cls_subnet = _subnet(in_channels, num_convs, norm, spatial_dims)
        self.box_subnet = _subnet(in_channels, num_convs, norm, spatial_dims)
        a, c = num_anchors, in_channels
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.cls_logits = conv(c, a * self.num_logits, kernel_size=3, padding=1)
        self.box_deltas = conv(c, a * self.box_dim, kernel_size=3, padding=1)

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        cls_bias = self.cls_logits.bias
        assert cls_bias is not None  # created with bias=True above
        with torch.no_grad():
            bias = cls_bias.view(num_anchors, self.num_logits)  # (A, C')
            if activation == "sigmoid":
                bias.fill_(-math.log((1 - prior_prob) / prior_prob))
            else:
                bias[:, 0] = 0.0
                bias[:, 1:] = math.log(prior_prob / (num_classes * (1 - prior_prob)))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Dense predictions of every level.

        Args:
            features: pyramid maps ``Tensor[B, F, H_l, W_l]`` (``[B, F, D_l, H_l, W_l]`` in 3D).

        Returns:
            ``(cls_logits, box_deltas)``: per level ``Tensor[B, A, C', *S_l]`` and
            ``Tensor[B, A, 2D, *S_l]`` (``S_l`` the level's spatial size).
        """
        cls_out: list[Tensor] = []
        box_out: list[Tensor] = []
        a = self.num_anchors
        for x in features:
            b, size = x.shape[0], x.shape[2:]
            logits = self.cls_logits(self.cls_subnet(x))  # (B, A * C', *S)
            cls_out.append(logits.view(b, a, self.num_logits, *size))  # (B, A, C', *S)
            deltas = self.box_deltas(self.box_subnet(x))  # (B, A * 2D, *S)
            box_out.append(deltas.view(b, a, self.box_dim, *size))  # (B, A, 2D, *S)
        return cls_out, box_out
