"""ResNet-18/34/50/101 feature extractors returning ``C3, C4, C5`` (strides 8, 16, 32).

Built from torchvision's ``BasicBlock``/``Bottleneck`` exactly as ``torchvision.models.ResNet``
builds them (same module names: ``conv1, bn1, layer1..layer4``), so a torchvision ImageNet
state dict loads into a width-1.0 model, but with:

* random initialisation by default (no download ever happens);
* ``width_multiplier``: every channel count is scaled (0.25 gives stage widths 16/32/64/128
  for ResNet-18) so a CPU can train the detector;
* ``in_channels``: 1 for grayscale CT/ultrasound, 3 for RGB microscopy;
* ``features_only`` output: a list of the feature maps of the stages in ``out_indices``
  (default layer2..layer4 = ``C3, C4, C5``) with their channels in :attr:`out_channels`;
* a hook for feature-space perturbations (the noisy residual block of SSMD Sec. 3.2,
  DropBlock): the stages ``layer1..layer4`` are ``nn.Sequential`` attributes, and
  :meth:`ResNetFeatures.wrap_blocks` (or ``block_wrapper`` of :func:`build_resnet`) replaces
  every residual block ``layer{i}[j]`` by ``wrapper(name, block)``, where ``name`` is
  ``"layer{i}.{j}"`` — e.g. return ``nn.Sequential(block, NoisyResidual(channels))`` after
  the blocks to perturb and ``block`` itself elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ssmd.utils.registry import Registry

__all__ = ["BACKBONES", "RESNET_SPECS", "BlockWrapper", "ResNetFeatures", "build_resnet"]

BlockWrapper = Callable[[str, nn.Module], nn.Module]
"""``wrapper(name, block) -> module`` used in place of residual block ``name`` (``"layer2.0"``)."""

RESNET_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


def _scaled(channels: int, width_multiplier: float) -> int:
    return max(1, round(channels * width_multiplier))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with groups of at least 4 channels and at most 32 groups.

    Train- and eval-mode outputs are identical (no running statistics), which matters
    for small CPU batches of very different images (a dark fluorescence image beside a
    pink H&E one): BatchNorm's running averages then fit neither, and eval-mode
    predictions fall far below train-mode ones.
    """
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {"bn": nn.BatchNorm2d, "gn": group_norm}


class ResNetFeatures(nn.Module):
    """A ResNet trunk (no pooling/fc) that returns the feature maps of selected stages.

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101).
        layers: number of blocks in each of the four stages.
        width_multiplier: scales the stem (64) and stage widths (64, 128, 256, 512).
        in_channels: input image channels.
        out_indices: stages whose outputs are returned, 1-based (``2, 3, 4`` -> ``C3, C4, C5``).
        zero_init_residual: zero the last BN of each residual branch (off by default).

    Attributes:
        out_channels: channels of each returned map, in ``out_indices`` order.
        strides: input-pixel stride of each returned map (``4 * 2^(i-1)`` for stage ``i``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        width_multiplier: float = 1.0,
        in_channels: int = 3,
        out_indices: Sequence[int] = (2, 3, 4),
        zero_init_residual: bool = False,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
        self.norm_layer = NORMS[norm]
        if len(layers) != 4:
            raise ValueError(f"ResNet needs 4 stage depths, got {tuple(layers)}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        if (
            not out_indices
            or any(i not in (1, 2, 3, 4) for i in out_indices)
            or list(out_indices) != sorted(set(out_indices))
        ):
            raise ValueError(
                f"out_indices must be increasing stage numbers in 1..4, got {tuple(out_indices)}"
            )
        self.width_multiplier = width_multiplier
        self.in_channels = in_channels
        self.out_indices = tuple(out_indices)
        self.block = block
        self.layers = tuple(int(n) for n in layers)
        self.norm = norm
        self.inplanes = _scaled(64, width_multiplier)

        self.conv1 = nn.Conv2d(
            in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = self.norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths = [_scaled(c, width_multiplier) for c in (64, 128, 256, 512)]
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)

        stage_channels = [w * block.expansion for w in widths]
        self.out_channels: tuple[int, ...] = tuple(stage_channels[i - 1] for i in self.out_indices)
        self.strides: tuple[int, ...] = tuple(4 * 2 ** (i - 1) for i in self.out_indices)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        """One stage, as ``torchvision.models.ResNet._make_layer`` (no dilation, groups 1)."""
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * block.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False,
                ),
                self.norm_layer(planes * block.expansion),
            )
        layers: list[nn.Module] = [
            block(self.inplanes, planes, stride, downsample, norm_layer=self.norm_layer)
        ]
        self.inplanes = planes * block.expansion
        layers.extend(
            block(self.inplanes, planes, norm_layer=self.norm_layer) for _ in range(1, blocks)
        )
        return nn.Sequential(*layers)

    @property
    def arch(self) -> dict[str, Any]:
        """What fixes the weights' keys and shapes (:mod:`ssmd.models.backbones.weights`).

        ``name`` (``resnet18`` ... or ``custom``), ``width_multiplier``, ``in_channels``,
        ``norm`` (``bn`` / ``gn``) and ``stem``: ``imagenet`` (7x7 stride-2 convolution and
        max-pool) or ``small`` (the 3x3 stride-1 stem a classifier's ``small_input`` puts in).
        """
        name = next(
            (n for n, (b, d) in RESNET_SPECS.items() if b is self.block and d == self.layers),
            "custom",
        )
        stem = "imagenet" if tuple(self.conv1.kernel_size) == (7, 7) else "small"
        return {
            "family": "resnet",
            "name": name,
            "width_multiplier": float(self.width_multiplier),
            "in_channels": int(self.conv1.in_channels),
            "norm": self.norm,
            "stem": stem,
        }

    def stages(self) -> list[nn.Sequential]:
        """``[layer1, layer2, layer3, layer4]``."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def wrap_blocks(self, wrapper: BlockWrapper) -> None:
        """Replace every residual block ``layer{i}[j]`` by ``wrapper("layer{i}.{j}", block)``.

        The wrapper must keep the block's output shape. Wrap after loading weights: state
        dict keys of wrapped blocks change with the wrapper's structure.
        """
        for i, stage in enumerate(self.stages(), start=1):
            for j in range(len(stage)):
                stage[j] = wrapper(f"layer{i}.{j}", stage[j])

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of the stages in ``out_indices``.

        Args:
            x: ``Tensor[B, in_channels, H, W]``.

        Returns:
            ``[Tensor[B, out_channels[k], ceil(H / strides[k]), ceil(W / strides[k])]]``
            (exact for ``H, W`` divisible by the stride), e.g. ``[C3, C4, C5]``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, C1, H/4, W/4)
        outs: list[Tensor] = []
        for i, stage in enumerate(self.stages(), start=1):
            x = stage(x)  # (B, C_i, H / 2^(i+1), W / 2^(i+1))
            if i in self.out_indices:
                outs.append(x)
            if i >= self.out_indices[-1]:
                break
        return outs

    def load_pretrained(self, path: str | Path) -> None:
        """Load local weights: an ``ssmd pretrain`` backbone or a torchvision ResNet state dict.

        A backbone checkpoint (``kind: ssmd-backbone``, any width) must match :attr:`arch`
        field by field and key by key (:func:`ssmd.models.backbones.weights.load_backbone_state`).
        A torchvision-style state dict (``torch.load(weights_only=True)``) is only valid at
        ``width_multiplier == 1``: ``fc.*`` keys are skipped; a ``"state_dict"`` or ``"model"``
        wrapper and a ``"module."`` prefix are unwrapped; for ``in_channels == 1`` an RGB
        ``conv1.weight`` is summed over its colour channels.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            BackboneMismatchError: a backbone checkpoint of another architecture (a
                ``ValueError`` naming the file, the field or key and both values).
            ValueError: wrong width, or missing/unexpected/mis-shaped keys (all named).
        """
        from ssmd.models.backbones.weights import is_backbone_checkpoint, load_backbone_state

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_weights file not found: {path}")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if is_backbone_checkpoint(loaded):
            load_backbone_state(self, loaded, path)
            return
        if isinstance(loaded, dict) and isinstance(loaded.get("kind"), str):
            raise ValueError(
                f"{path}: field 'kind' = {loaded['kind']!r}: an ssmd run checkpoint, not a "
                "backbone; pass the backbone.pt that ssmd pretrain writes"
            )
        if self.width_multiplier != 1.0:
            raise ValueError(
                f"pretrained_weights={str(path)!r} is a torchvision state dict, which needs "
                f"width_multiplier=1.0, got {self.width_multiplier} (a backbone written by "
                "ssmd pretrain loads at any width)"
            )
        if (
            isinstance(loaded, dict)
            and len(loaded) == 1
            and next(iter(loaded)) in ("state_dict", "model")
        ):
            loaded = next(iter(loaded.values()))
        if not isinstance(loaded, dict):
            raise ValueError(
                f"{path}: expected a state dict (dict of tensors), got {type(loaded).__name__}"
            )
        state = {
            (k[len("module.") :] if k.startswith("module.") else k): v
            for k, v in loaded.items()
            if not (k.startswith("fc.") or k.startswith("module.fc."))
        }
        conv1 = state.get("conv1.weight")
        if isinstance(conv1, Tensor) and conv1.shape[1] == 3 and self.in_channels == 1:
            state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)  # (C1, 1, 7, 7)
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mis_shaped = sorted(
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(state)
            if isinstance(state[k], Tensor) and state[k].shape != own[k].shape
        )
        if missing or unexpected or mis_shaped:
            parts = []
            for title, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", mis_shaped),
            ):
                if keys:
                    shown = ", ".join(keys[:8]) + (
                        f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                    )
                    parts.append(f"{title} keys: {shown}")
            raise ValueError(f"{path} does not fit this ResNet ({'; '.join(parts)})")
        self.load_state_dict(state)


def build_resnet(
    name: str = "resnet18",
    width_multiplier: float = 1.0,
    in_channels: int = 3,
    out_indices: Sequence[int] = (2, 3, 4),
    pretrained_weights: str | Path | None = None,
    block_wrapper: BlockWrapper | None = None,
    zero_init_residual: bool = False,
    norm: str = "bn",
) -> ResNetFeatures:
    """Build a ResNet feature extractor by name.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        width_multiplier: channel scale (1.0 = the standard network).
        in_channels: input channels.
        out_indices: returned stages (default ``C3, C4, C5``).
        pretrained_weights: optional local file, never downloaded: a backbone written by
            ``ssmd pretrain`` (same :attr:`ResNetFeatures.arch`, any width) or a torchvision
            ResNet state dict (width 1.0 only).
        block_wrapper: applied to every residual block after the weights are loaded
            (see :meth:`ResNetFeatures.wrap_blocks`).
        zero_init_residual: zero-init the last BN of each residual branch.
        norm: ``"bn"`` (BatchNorm, as torchvision) or ``"gn"`` (GroupNorm, see :func:`group_norm`).
    """
    if name not in RESNET_SPECS:
        raise KeyError(f"unknown ResNet {name!r}; known: {', '.join(sorted(RESNET_SPECS))}")
    block, layers = RESNET_SPECS[name]
    model = ResNetFeatures(
        block,
        layers,
        width_multiplier=width_multiplier,
        in_channels=in_channels,
        out_indices=out_indices,
        zero_init_residual=zero_init_residual,
        norm=norm,
    )
    if pretrained_weights is not None:
        model.load_pretrained(pretrained_weights)
    if block_wrapper is not None:
        model.wrap_blocks(block_wrapper)
    return model


def _register(name: str) -> None:
    def entry(**kwargs: object) -> nn.Module:
        return build_resnet(name, **kwargs)  # type: ignore[arg-type]

    entry.__doc__ = f"``build_resnet({name!r}, **kwargs)``."
    BACKBONES.register(name)(entry)


for _name in RESNET_SPECS:
    _register(_name)
