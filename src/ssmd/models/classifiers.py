"""Image classifiers on torchvision trunks: ResNet-18/50 and DenseNet-121, at any width.

A :class:`Classifier` is a trunk that ends in a feature map, global average pooling, optional
dropout and a linear layer. ``forward`` returns ``(logits, features)``: the raw class scores
(softmax for single-label tasks, sigmoid for multi-label ones is applied by the losses and
the evaluation) and the pooled features ``Tensor[B, C]`` whose case-level Gram matrix the
relation-consistency methods use (Eq. (3) of the STSC paper; SRC-MT takes the same pooled
activations before the classifier).

Two CPU-friendly knobs: ``width_multiplier`` scales every channel count (ResNet stage widths
64..512; DenseNet growth rate 32 and stem 64), and ``small_input`` replaces the ImageNet stem
(7x7 stride-2 convolution + max-pool, a 4x reduction) by a 3x3 stride-1 convolution, so 28 px
MedMNIST images still leave a 4x4 map at the last stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models import DenseNet

from ssmd.models.backbones.resnet import build_resnet
from ssmd.models.backbones.weights import load_backbone_checkpoint

__all__ = ["CLASSIFIER_NAMES", "Classifier", "build_classifier"]

CLASSIFIER_NAMES = ("resnet18", "resnet50", "densenet121")


class _ResNetTrunk(nn.Module):
    """The last stage map of an ``ssmd`` ResNet (torchvision blocks).

    ``pretrained_weights`` (a backbone from ``ssmd pretrain``, or a torchvision state dict at
    width 1) is loaded into :attr:`body` after the stem is replaced, so a small-input stem is
    compared with the file's (``arch.stem``).
    """

    def __init__(
        self,
        name: str,
        width: float,
        in_channels: int,
        small_input: bool,
        pretrained_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.body = build_resnet(
            name, width_multiplier=width, in_channels=in_channels, out_indices=(4,)
        )
        if small_input:
            stem = self.body.conv1.out_channels
            self.body.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.body.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.body.maxpool = nn.Identity()  # type: ignore[assignment]
        if pretrained_weights is not None:
            self.body.load_pretrained(pretrained_weights)
        self.out_channels = int(self.body.out_channels[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)[-1]  # (B, C5, H/32, W/32), or H/8 with the small stem


class _DenseNetTrunk(nn.Module):
    """``torchvision.models.DenseNet(...).features`` followed by the final ReLU."""

    def __init__(self, width: float, in_channels: int, small_input: bool, drop_rate: float) -> None:
        super().__init__()
        growth = max(4, round(32 * width))
        init = max(8, round(64 * width))
        net = DenseNet(
            growth_rate=growth,
            block_config=(6, 12, 24, 16),
            num_init_features=init,
            drop_rate=drop_rate,
        )
        feats = net.features
        if small_input:
            feats.conv0 = nn.Conv2d(in_channels, init, 3, stride=1, padding=1, bias=False)
            feats.pool0 = nn.Identity()
        elif in_channels != 3:
            feats.conv0 = nn.Conv2d(in_channels, init, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(feats.conv0.weight)
        self.features = feats
        self.out_channels = int(net.classifier.in_features)
        self.arch: dict[str, Any] = {
            "family": "densenet",
            "name": "densenet121",
            "width_multiplier": float(width),
            "in_channels": int(in_channels),
            "stem": "small" if small_input else "imagenet",
        }

    def load_pretrained(self, path: str | Path) -> None:
        """Load a DenseNet backbone written by ``ssmd pretrain`` (same :attr:`arch`)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"pretrained_weights file not found: {path}")
        load_backbone_checkpoint(self, path)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.features(x))  # (B, C, H/32, W/32), or H/8 with the small stem


class Classifier(nn.Module):
    """Trunk -> global average pool -> dropout -> linear.

    Args:
        trunk: module mapping ``Tensor[B, C_in, H, W]`` to a feature map ``Tensor[B, C, h, w]``
            and exposing ``out_channels``.
        num_classes: ``K``.
        dropout: dropout probability on the pooled features (a student-side perturbation;
            SRC-MT's DenseNet uses 0.2).
    """

    def __init__(self, trunk: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.trunk = trunk
        self.feature_dim = int(trunk.out_channels)  # type: ignore[arg-type]
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        nn.init.zeros_(self.fc.bias)

    def forward_maps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits Tensor[B, K], features Tensor[B, C], feature_map Tensor[B, C, h, w])``."""
        fmap = self.trunk(x)  # (B, C, h, w)
        feats = fmap.mean(dim=(2, 3))  # (B, C)
        return self.fc(self.dropout(feats)), feats, fmap

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits Tensor[B, K], pooled features Tensor[B, C])`` of images ``Tensor[B, C_in, H, W]``."""
        logits, feats, _ = self.forward_maps(x)
        return logits, feats


def build_classifier(
    name: Literal["resnet18", "resnet50", "densenet121"] | str = "resnet18",
    num_classes: int = 2,
    in_channels: int = 3,
    width_multiplier: float = 1.0,
    small_input: bool = False,
    dropout: float = 0.0,
    pretrained_weights: str | Path | None = None,
) -> Classifier:
    """A :class:`Classifier` by trunk name (nothing is downloaded).

    The trunk is randomly initialised, or loaded from ``pretrained_weights``: a backbone
    checkpoint written by ``ssmd pretrain`` (its ``arch`` must match: trunk, width, input
    channels, stem; see :mod:`ssmd.models.backbones.weights`) or, for ResNets at width 1, a
    torchvision state dict. The linear layer always starts fresh.

    Raises:
        KeyError: unknown ``name`` (the message lists the known ones).
        BackboneMismatchError: ``pretrained_weights`` holds another architecture.
    """
    if name in ("resnet18", "resnet50"):
        trunk: nn.Module = _ResNetTrunk(
            name, width_multiplier, in_channels, small_input, pretrained_weights
        )
    elif name == "densenet121":
        dense = _DenseNetTrunk(width_multiplier, in_channels, small_input, drop_rate=0.0)
        if pretrained_weights is not None:
            dense.load_pretrained(pretrained_weights)
        trunk = dense
    else:
        raise KeyError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIER_NAMES)}")
    return Classifier(trunk, num_classes, dropout=dropout)
