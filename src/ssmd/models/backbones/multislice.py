"""3DCE multi-slice input (Yan et al., MICCAI 2018), at the backbone: groups of slices share one trunk.

A CT sample is the key slice and ``k`` neighbours on each side as ``2k + 1 = G * S`` channels
(lowest slice first; :mod:`ssmd.data.volumes.deeplesion`). :class:`SliceGroupBackbone` cuts
them into ``G`` groups of ``S = 3`` consecutive slices (an ImageNet trunk's 3 channels), runs
every group through the **same** trunk, and fuses the groups' maps of each level before the
neck and heads: the ``G`` maps are concatenated along channels (group-major) and a 1x1
convolution brings them back to the trunk's width — 3DCE's feature fusion as the LP paper
re-implements it on FPN ("FPN-3DCE", 9 slices = 3 groups). The fused maps have the trunk's
channels and strides, so any detector that takes a backbone (Faster R-CNN FPN, RetinaNet)
takes this one unchanged: :func:`multislice_builder` turns a registered detector builder
into its multi-slice variant (``model.name = faster_rcnn_3dce`` / ``retinanet_3dce``).

Choices where 3DCE and the LP paper are silent for an FPN: the fusion is applied on every
returned level (``C3, C4, C5``; 3DCE fuses conv5 only, there being no pyramid), and the 1x1
convolution starts as the mean of the groups (weight ``1/G`` on each group's copy of a
channel), so the untrained fusion is neutral. ``fusion="mean"`` averages without parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SliceGroupBackbone", "multislice_builder"]

FUSIONS = ("conv", "mean")


class SliceGroupBackbone(nn.Module):
    """Run ``groups`` slice groups through one shared trunk and fuse them per level.

    Args:
        body: a trunk returning a list of maps with ``out_channels`` (and ``strides``), built
            for ``slices_per_group`` input channels.
        groups: ``G``, slice groups (3 -> 9 slices).
        slices_per_group: ``S``, channels per group (3).
        fusion: ``"conv"`` (concatenate + 1x1 convolution, module docstring) or ``"mean"``.

    Attributes:
        in_channels: ``G * S``, the channels the input must have.
        out_channels: the trunk's.
        strides: the trunk's.
    """

    def __init__(
        self, body: nn.Module, groups: int = 3, slices_per_group: int = 3, fusion: str = "conv"
    ) -> None:
        super().__init__()
        if groups < 1 or slices_per_group < 1:
            raise ValueError(
                f"groups = {groups}, slices_per_group = {slices_per_group}: need both >= 1"
            )
        if fusion not in FUSIONS:
            raise ValueError(f"fusion = {fusion!r}: use one of {FUSIONS}")
        self.body = body
        self.groups = int(groups)
        self.slices_per_group = int(slices_per_group)
        self.in_channels = self.groups * self.slices_per_group
        self.fusion = fusion
        self.out_channels: tuple[int, ...] = tuple(int(c) for c in body.out_channels)  # type: ignore[union-attr]
        self.strides: tuple[int, ...] = tuple(getattr(body, "strides", ()))
        self.fuse = nn.ModuleList()
        if fusion == "conv":
            for c in self.out_channels:
                conv = nn.Conv2d(self.groups * c, c, kernel_size=1)
                with torch.no_grad():
                    conv.weight.zero_()
                    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # bias=True
                    eye = torch.eye(c) / self.groups  # (C, C)
                    for g in range(self.groups):
                        conv.weight[:, g * c : (g + 1) * c, 0, 0] = eye
                self.fuse.append(conv)

    def forward(self, images: Tensor) -> list[Tensor]:
        """``Tensor[B, G * S, H, W]`` -> fused maps ``[Tensor[B, C_l, H_l, W_l]]``, finest first."""
        if images.ndim != 4 or int(images.shape[1]) != self.in_channels:
            raise ValueError(
                f"multi-slice backbone expects images (B, {self.in_channels}, H, W) "
                f"({self.groups} groups of {self.slices_per_group} slices), got "
                f"{tuple(images.shape)}: set the dataset's num_neighbors to "
                f"{(self.in_channels - 1) // 2} or model.slice_groups to match"
            )
        b, _, h, w = images.shape
        x = images.reshape(b * self.groups, self.slices_per_group, h, w)  # (B G, S, H, W)
        out = []
        for level, f in enumerate(self.body(x)):
            c, fh, fw = int(f.shape[1]), int(f.shape[2]), int(f.shape[3])
            if self.fusion == "mean":
                out.append(f.view(b, self.groups, c, fh, fw).mean(dim=1))  # (B, C, H_l, W_l)
            else:
                cat = f.reshape(b, self.groups * c, fh, fw)  # (B, G C, H_l, W_l), group-major
                out.append(self.fuse[level](cat))  # (B, C, H_l, W_l)
        return out

    @property
    def arch(self) -> dict[str, Any]:
        """The trunk's ``arch`` plus ``slice_groups`` and ``slice_fusion`` (backbone files)."""
        from ssmd.models.backbones.weights import backbone_arch

        return {
            **backbone_arch(self.body),
            "slice_groups": self.groups,
            "slice_fusion": self.fusion,
        }

    def load_pretrained(self, path: str | Path) -> None:
        """Load local weights: a backbone file of this wrapper (its ``arch`` has
        ``slice_groups``: trunk and fusion, checked field by field), else trunk weights
        (an ``ssmd pretrain`` trunk or a torchvision ResNet, e.g. ImageNet as 3DCE) into the
        shared trunk, the fusion keeping its initialisation."""
        from ssmd.models.backbones.weights import is_backbone_checkpoint, load_backbone_state

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_weights file not found: {path}")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        arch = loaded.get("arch") if is_backbone_checkpoint(loaded) else None
        if isinstance(arch, dict) and "slice_groups" in arch:
            load_backbone_state(self, loaded, path)
        else:
            self.body.load_pretrained(path)  # type: ignore[operator]

    def wrap_blocks(self, wrapper: Any) -> None:
        """The trunk's :meth:`~ssmd.models.backbones.resnet.ResNetFeatures.wrap_blocks`."""
        self.body.wrap_blocks(wrapper)  # type: ignore[operator]

    def stages(self) -> list[nn.Module]:
        """The trunk's stages."""
        return list(self.body.stages())  # type: ignore[operator]


def multislice_builder(base: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The multi-slice variant of a registered detector builder (module docstring).

    The new builder reads the base builder's config keys except ``in_channels`` (each group
    has 3), plus ``slice_groups`` (``G``, default 3 = 9 slices) and ``slice_fusion``; it
    builds the base detector for 3 channels and replaces its ``backbone`` by a
    :class:`SliceGroupBackbone` around it; ``pretrained_weights`` go through
    :meth:`SliceGroupBackbone.load_pretrained` (a wrapper file, or trunk weights).
    """
    sig = inspect.signature(base)
    kept = [p for p in sig.parameters.values() if p.name != "in_channels"]
    extra = [
        inspect.Parameter(
            "slice_groups", inspect.Parameter.KEYWORD_ONLY, default=3, annotation=int
        ),
        inspect.Parameter(
            "slice_fusion", inspect.Parameter.KEYWORD_ONLY, default="conv", annotation=str
        ),
    ]

    def builder(*, slice_groups: int = 3, slice_fusion: str = "conv", **kwargs: Any) -> nn.Module:
        weights = kwargs.pop("pretrained_weights", None)
        model = base(in_channels=3, **kwargs)
        trunk = model.backbone
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"{type(model).__name__} has no backbone module to wrap")
        wrapped = SliceGroupBackbone(trunk, int(slice_groups), 3, slice_fusion)
        if weights:
            wrapped.load_pretrained(weights)
        model.backbone = wrapped
        return model

    builder.__signature__ = sig.replace(parameters=kept + extra)  # type: ignore[attr-defined]
    builder.__name__ = f"{getattr(base, '__name__', 'detector')}_3dce"
    builder.__doc__ = (
        f"3DCE multi-slice variant of ``{getattr(base, '__name__', base)}``: "
        ":func:`ssmd.models.backbones.multislice.multislice_builder`."
    )
    return builder
