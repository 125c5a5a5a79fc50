"""Feature-space perturbations compared in Table 4 of the SSMD paper, behind one switch.

``kind`` of :func:`insert_feature_perturbation`:

* ``"nrb"``: the noisy residual block (Sec. 3.2, Eq. (6)-(7)) after every stage
  (:mod:`ssmd.models.layers.noisy_residual`);
* ``"dropout"``: layer-wise element-wise dropout (``p = drop_prob``) after every stage;
* ``"dropblock"``: DropBlock (Ghiasi et al.) in ``conv4`` and ``conv5`` only, i.e. after
  ``layer3`` and ``layer4``, "following the instructions proposed by [9]" (Sec. 4.5.3);
  ``torchvision.ops.DropBlock2d`` / ``DropBlock3d``;
* ``"noise"``: plain additive Gaussian noise ``X + N(mu, sigma)`` after every stage (the
  NRB without its learned gate);
* ``"none"``: nothing is inserted;
* ``"nrb+dropout"``, ``"nrb+noise"`` (any ``+``-joined kinds): the "naive combinations" of
  Table 4's last two rows (Sec. 4.5.3). Each part perturbs its own default stages; where
  several meet, they run in the order written (the NRB first, then dropout / noise: the
  paper does not say) as one ``nn.Sequential`` child, so a lone kind keeps its state-dict
  keys (``layer3.feature_noise.conv.weight``) and a combination's NRB is
  ``layer3.feature_noise.0.conv.weight``.

All are active in ``train()`` mode only and are the identity in ``eval()`` mode. They are
appended as the child ``feature_noise`` of the chosen ``layer{i}`` (see
:func:`~ssmd.models.layers.noisy_residual.append_to_stages`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import DropBlock2d, DropBlock3d

from ssmd.models.layers.noisy_residual import (
    NoisyResidualBlock,
    append_to_stages,
    strip_feature_perturbations,
)

__all__ = [
    "DEFAULT_STAGES",
    "FEATURE_NOISE_KINDS",
    "FeatureNoiseKind",
    "GaussianFeatureNoise",
    "insert_feature_perturbation",
    "parse_feature_noise",
    "strip_feature_perturbations",
]

FeatureNoiseKind = Literal["nrb", "dropout", "dropblock", "noise", "none"]
FEATURE_NOISE_KINDS: tuple[str, ...] = ("nrb", "dropout", "dropblock", "noise", "none")

DEFAULT_STAGES: dict[str, tuple[int, ...]] = {
    "nrb": (1, 2, 3, 4),
    "dropout": (1, 2, 3, 4),
    "dropblock": (3, 4),
    "noise": (1, 2, 3, 4),
    "none": (),
}
"""Stages (``layer{i}``) each kind perturbs when none are given."""


class GaussianFeatureNoise(nn.Module):
    """``X + N(mu, sigma)`` element-wise in training, identity in eval ("Noise" of Table 4).

    Args:
        mu: noise mean.
        sigma: noise standard deviation.
    """

    def __init__(self, mu: float = 0.0, sigma: float = 1.0) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"GaussianFeatureNoise sigma must be >= 0, got {sigma}")
        self.mu = float(mu)
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[B, C, H, W]`` -> same shape."""
        if not self.training:
            return x
        return x + (self.mu + self.sigma * torch.randn_like(x))

    def extra_repr(self) -> str:
        return f"mu={self.mu}, sigma={self.sigma}"


def parse_feature_noise(kind: str) -> tuple[str, ...]:
    """The parts of a feature-noise ``kind``: ``"nrb+noise"`` -> ``("nrb", "noise")``.

    Raises:
        ValueError: an unknown part, a repeated part, or ``"none"`` inside a combination.
    """
    parts = tuple(p.strip() for p in str(kind).split("+"))
    bad = [p for p in parts if p not in FEATURE_NOISE_KINDS]
    if bad or len(set(parts)) != len(parts) or (len(parts) > 1 and "none" in parts):
        raise ValueError(
            f"feature noise kind must be one of {FEATURE_NOISE_KINDS} or a '+'-joined "
            f"combination of distinct kinds other than 'none' (e.g. 'nrb+dropout'), got {kind!r}"
        )
    return parts


def insert_feature_perturbation(
    model: nn.Module,
    kind: str,
    stages: Iterable[int] | None = None,
    *,
    gamma: float = 0.9,
    mu: float = 0.0,
    sigma: float = 1.0,
    drop_prob: float = 0.1,
    block_size: int = 3,
    spatial_dims: int = 2,
) -> list[nn.Module]:
    """Insert the feature perturbation ``kind`` into a built detector's ResNet backbone.

    Args:
        model: detector with a ResNet ``backbone`` (modified in place).
        kind: ``"nrb"``, ``"dropout"``, ``"dropblock"``, ``"noise"``, ``"none"`` or a
            ``+``-joined combination such as ``"nrb+dropout"`` (module docstring).
        stages: 1-based stages for every part; default :data:`DEFAULT_STAGES` of each part.
        gamma: NRB sigmoid scale (Eq. (7)).
        mu: noise mean (``nrb``, ``noise``).
        sigma: noise standard deviation (``nrb``, ``noise``).
        drop_prob: drop probability (``dropout``, ``dropblock``).
        block_size: DropBlock block side in feature pixels (default 3: the ``C5`` maps of
            256-448 px inputs are only 8-14 px wide, where the DropBlock paper's 7 would
            drop most of a map at once).
        spatial_dims: 2 or 3.

    Returns:
        The inserted modules (empty for ``"none"``).

    Raises:
        ValueError: unknown ``kind`` or bad probability.
    """
    parts = parse_feature_noise(kind)
    if parts == ("none",):
        return []
    if {"dropout", "dropblock"} & set(parts) and not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
    given = None if stages is None else tuple(int(s) for s in stages)

    def build(part: str, channels: int) -> nn.Module:
        if part == "nrb":
            return NoisyResidualBlock(channels, gamma, mu, sigma, spatial_dims)
        if part == "dropout":
            return nn.Dropout(drop_prob)
        if part == "dropblock":
            block = DropBlock2d if spatial_dims == 2 else DropBlock3d
            return block(drop_prob, block_size)
        return GaussianFeatureNoise(mu, sigma)

    def parts_at(stage: int) -> list[str]:
        return [p for p in parts if stage in (DEFAULT_STAGES[p] if given is None else given)]

    def factory(stage: int, channels: int) -> nn.Module:
        modules = [build(p, channels) for p in parts_at(stage)]
        return modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    chosen = (
        list(given) if given is not None else sorted({s for p in parts for s in DEFAULT_STAGES[p]})
    )
    return append_to_stages(model, chosen, factory)  # validates the stage numbers
