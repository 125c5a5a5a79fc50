"""The noisy residual block (NRB) of SSMD Sec. 3.2, Eq. (6)-(7), and where it goes in a ResNet.

``X^p = conv1x1(GAP(X))`` (Eq. (6)), ``X^q = X^n * sigmoid(gamma X^p) + X`` (Eq. (7)), with
``X^n ~ N(mu, sigma)`` a fresh noise map of the input's shape for every sample and every
forward pass in training mode; the block is the identity in ``eval()`` mode (the paper
predicts with the student alone and never perturbs at inference).

**Placement.** The paper adds the block "for each layer l" and calls it layer-wise; in the
ResNet vocabulary it uses elsewhere (DropBlock "in conv4 and conv5" = ``layer3``/``layer4``)
a layer is a stage. :func:`insert_noisy_residual_blocks` therefore appends one NRB after the
last residual block of each chosen stage of the backbone (default all four, ``layer1..layer4``,
i.e. on ``C2..C5``): every map the FPN reads (``C3..C5``) is perturbed, and ``C2``'s noise
propagates into them. The block is added as a child named ``feature_noise`` of the stage's
``nn.Sequential`` (``backbone.layer3.feature_noise.conv.weight``), so the detector's
constructor is unchanged, every original state-dict key is unchanged, and
:func:`strip_feature_perturbations` removes the new keys to load the weights into a plain
detector (where the block, the identity at inference, is simply absent).

**Noise scale.** ``mu = 0``, ``sigma = 1`` by default: the learned gate ``sigmoid(gamma X^p)``
in ``(0, 1)`` sets the per-channel noise level (the paper's point is that the network learns
it), so the noise source is a standard normal; at initialisation the gate is about 0.5,
i.e. noise with a standard deviation of about half that of BatchNorm-ed features — the
"wild" noise the paper wants in shallow layers, which the gate can turn down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "PERTURBATION_NAME",
    "NoisyResidualBlock",
    "append_to_stages",
    "insert_noisy_residual_blocks",
    "resnet_stages",
    "stage_out_channels",
    "strip_feature_perturbations",
]

PERTURBATION_NAME = "feature_noise"
"""Child name of every feature-perturbation module appended to a backbone stage."""


class NoisyResidualBlock(nn.Module):
    """Eq. (6)-(7): ``X + N(mu, sigma) * sigmoid(gamma * conv1x1(GAP(X)))`` in training.

    Args:
        channels: ``C`` of the input.
        gamma: scale of the sigmoid's input (paper: 0.9, Sec. 4.2).
        mu: mean of the noise.
        sigma: standard deviation of the noise (module docstring).
        spatial_dims: 2 (``(B, C, H, W)``) or 3 (``(B, C, D, H, W)``).
    """

    def __init__(
        self,
        channels: int,
        gamma: float = 0.9,
        mu: float = 0.0,
        sigma: float = 1.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"NoisyResidualBlock channels must be >= 1, got {channels}")
        if sigma < 0:
            raise ValueError(f"NoisyResidualBlock sigma must be >= 0, got {sigma}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(channels, channels, kernel_size=1)  # Eq. (6)
        self.gamma = float(gamma)
        self.mu = float(mu)
        self.sigma = float(sigma)
        self.spatial_dims = spatial_dims

    def gate(self, x: Tensor) -> Tensor:
        """``sigmoid(gamma * conv(GAP(x)))``, ``Tensor[B, C, 1, 1]`` (Eq. (6)-(7))."""
        pooled = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)  # (B, C, 1, 1)
        return torch.sigmoid(self.gamma * self.conv(pooled))  # (B, C, 1, 1)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """Perturb ``x`` (training) or return it unchanged (eval).

        Args:
            x: ``Tensor[B, C, H, W]`` (or ``[B, C, D, H, W]``).
            noise: optional standard-normal draw of ``x``'s shape (for tests); by default
                one is sampled. ``X^n = mu + sigma * noise``.

        Returns:
            ``X^q``, same shape as ``x``.
        """
        if not self.training:
            return x
        if noise is None:
            noise = torch.randn(x.shape, dtype=x.dtype, device=x.device)
        elif noise.shape != x.shape:
            raise ValueError(
                f"noise shape {tuple(noise.shape)} does not match input {tuple(x.shape)}"
            )
        x_n = self.mu + self.sigma * noise  # (B, C, H, W), X^n ~ N(mu, sigma)
        return x + x_n * self.gate(x)  # Eq. (7)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, mu={self.mu}, sigma={self.sigma}"


def resnet_stages(model: nn.Module) -> list[nn.Sequential]:
    """``[layer1, layer2, layer3, layer4]`` of a detector's ResNet backbone (or of a ResNet).

    Raises:
        TypeError: neither ``model.backbone.stages()`` nor ``model.stages()`` exists.
    """
    body: Any = getattr(model, "backbone", model)
    stages = getattr(body, "stages", None)
    if not callable(stages):
        raise TypeError(
            f"{type(model).__name__} has no ResNet backbone with stages() "
            "(see ssmd.models.backbones.resnet.ResNetFeatures); cannot insert feature noise"
        )
    out = list(stages())
    if not all(isinstance(s, nn.Sequential) for s in out):
        raise TypeError("backbone stages must be nn.Sequential to take a feature-noise layer")
    return out


def stage_out_channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage: ``out_channels`` of its last residual block's last conv.

    In ``BasicBlock``/``Bottleneck`` the last convolution (the shortcut's 1x1, or the last
    conv of the residual branch when there is no shortcut conv) has the block's output width.
    """
    convs = [
        m
        for name, m in stage.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and not name.startswith(PERTURBATION_NAME)
    ]
    if not convs:
        raise TypeError("a backbone stage without convolutions has no channel count")
    return int(convs[-1].out_channels)


def append_to_stages(
    model: nn.Module, stages: Iterable[int], factory: Callable[[int, int], nn.Module]
) -> list[nn.Module]:
    """Append ``factory(stage_index, channels)`` after the last block of each chosen stage.

    The module becomes the child ``feature_noise`` of ``layer{i}`` (original keys unchanged).

    Args:
        model: detector with a ResNet ``backbone`` (modified in place).
        stages: 1-based stage numbers (``1..4`` = ``layer1..layer4`` = ``C2..C5``).
        factory: builds the module for a stage from its index and output channels.

    Returns:
        The inserted modules, in stage order.

    Raises:
        ValueError: a stage number outside ``1..4``, repeated, or a stage that already
            has a feature-perturbation layer.
    """
    chosen = [int(s) for s in stages]
    all_stages = resnet_stages(model)
    if len(set(chosen)) != len(chosen) or any(s < 1 or s > len(all_stages) for s in chosen):
        raise ValueError(
            f"feature-noise stages must be distinct numbers in 1..{len(all_stages)}, got {chosen}"
        )
    inserted: list[nn.Module] = []
    for s in sorted(chosen):
        stage = all_stages[s - 1]
        if PERTURBATION_NAME in stage._modules:
            raise ValueError(f"layer{s} already has a feature-perturbation layer")
        module = factory(s, stage_out_channels(stage))
        stage.add_module(PERTURBATION_NAME, module)  # runs after the last residual block
        inserted.append(module)
    return inserted


def insert_noisy_residual_blocks(
    model: nn.Module,
    stages: Iterable[int] = (1, 2, 3, 4),
    gamma: float = 0.9,
    mu: float = 0.0,
    sigma: float = 1.0,
) -> list[NoisyResidualBlock]:
    """Append a :class:`NoisyResidualBlock` after each chosen ResNet stage of a built model.

    Args:
        model: a detector with a ResNet ``backbone`` (e.g. :func:`build_retinanet`), modified
            in place; insert before building the optimiser and before copying a teacher.
        stages: 1-based stages (default all four; module docstring).
        gamma: Eq. (7) sigmoid scale.
        mu: noise mean.
        sigma: noise standard deviation.

    Returns:
        The inserted blocks (stage order).
    """
    blocks = append_to_stages(
        model, stages, lambda _, channels: NoisyResidualBlock(channels, gamma, mu, sigma)
    )
    return [b for b in blocks if isinstance(b, NoisyResidualBlock)]


def strip_feature_perturbations(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``state_dict`` without the keys of inserted feature-perturbation layers.

    Loads an SSMD student (or teacher) into a detector built without them; exact for
    inference, where those layers are the identity.
    """
    marker = f".{PERTURBATION_NAME}."
    return {k: v for k, v in state_dict.items() if marker not in f".{k}"}
