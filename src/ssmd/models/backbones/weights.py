"""Backbone checkpoints (``kind: ssmd-backbone``): what ``ssmd pretrain`` writes and
``model.pretrained_weights`` reads.

A backbone checkpoint is a plain ``weights_only``-loadable dict::

    {"kind": "ssmd-backbone", "version": 1,
     "arch": {"family": "resnet", "name": "resnet18", "width_multiplier": 0.25,
              "in_channels": 3, "norm": "gn", "stem": "imagenet"},
     "backbone": <state dict of the trunk>,
     "method": {"name": "simclr", ...}, "config": <resolved pretraining config>, ...}

``arch`` describes the trunk by the settings that change its weights' shapes or meaning (a
GroupNorm and a BatchNorm trunk have different keys; a 3x3 small-input stem and the ImageNet
7x7 stem have different ``conv1`` shapes). Loading compares it field by field with the model's
own :attr:`arch` before any tensor is copied, and refuses a mismatch with
:class:`BackboneMismatchError` naming the file, the field and both values; then every state
key and shape is checked (a missing, unexpected or mis-shaped key is named with both shapes).

The trunks are :class:`ssmd.models.backbones.resnet.ResNetFeatures` (detectors and ResNet
classifiers, whose trunk *is* a ``ResNetFeatures``) and the DenseNet-121 trunk of
:mod:`ssmd.models.classifiers`; both expose ``arch``. Output stages (``out_indices``) do not
enter ``arch``: every stage is built and saved whatever a model returns, so a backbone
pretrained for a detector loads into a classifier of the same trunk and vice versa.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssmd.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "BACKBONE_KIND",
    "BackboneMismatchError",
    "backbone_arch",
    "is_backbone_checkpoint",
    "load_backbone_checkpoint",
    "load_backbone_state",
    "save_backbone_checkpoint",
]

BACKBONE_KIND = "ssmd-backbone"
_VERSION = 1


class BackboneMismatchError(ValueError):
    """A backbone checkpoint whose architecture or tensors do not fit the model.

    The message names the file, the ``arch`` field or state key, and both values (shapes).
    """


def backbone_arch(module: nn.Module) -> dict[str, Any]:
    """The ``arch`` description of a trunk (its ``arch`` attribute or property).

    Raises:
        TypeError: ``module`` does not describe its architecture.
    """
    arch = getattr(module, "arch", None)
    if not isinstance(arch, Mapping):
        raise TypeError(
            f"{type(module).__name__} has no 'arch' description; backbone checkpoints exist "
            "for ResNetFeatures and the DenseNet classifier trunk"
        )
    return dict(arch)


def save_backbone_checkpoint(module: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``module``'s weights as an ``ssmd-backbone`` checkpoint, atomically.

    Args:
        module: the trunk (``arch`` attribute required).
        path: target file.
        **extra: further ``weights_only``-safe fields (``method``, ``config``, ``stats``).
    """
    state: dict[str, Any] = {
        "kind": BACKBONE_KIND,
        "version": _VERSION,
        "arch": backbone_arch(module),
        "backbone": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        **extra,
    }
    return save_checkpoint(state, path)


def is_backbone_checkpoint(state: Any) -> bool:
    """Whether an already loaded file is an ``ssmd-backbone`` checkpoint."""
    return isinstance(state, Mapping) and state.get("kind") == BACKBONE_KIND


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def load_backbone_state(module: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """Copy the weights of a loaded ``ssmd-backbone`` checkpoint into ``module``.

    Args:
        module: the trunk to fill (``arch`` attribute required).
        state: the loaded checkpoint dict.
        path: its file, for messages.

    Raises:
        BackboneMismatchError: an ``arch`` field differs (named with both values), or a state
            key is missing, unexpected or of another shape (named with both shapes).
        CheckpointError: the dict lacks ``arch`` or ``backbone``.
    """
    for field in ("arch", "backbone"):
        if not isinstance(state.get(field), Mapping):
            raise CheckpointError(f"{path}: field {field!r} missing: not a backbone checkpoint")
    file_arch = dict(state["arch"])
    own_arch = backbone_arch(module)
    diffs = []
    for key in sorted(set(file_arch) | set(own_arch)):
        a, b = file_arch.get(key, "<absent>"), own_arch.get(key, "<absent>")
        if isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b):
            continue
        if a != b:
            diffs.append(f"arch.{key} = {a!r} in the file but {b!r} in this model")
    if diffs:
        raise BackboneMismatchError(
            f"{path}: {'; '.join(diffs)}; pretrain the backbone with the model's settings "
            "(model.backbone, model.backbone_norm, model.width_multiplier, the images' "
            "channels, model.small_input)"
        )
    weights: dict[str, Tensor] = dict(state["backbone"])
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    mis_shaped = sorted(
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(weights)
        if tuple(weights[k].shape) != tuple(own[k].shape)
    )
    parts = [
        f"{title} keys: {_shown(keys)}"
        for title, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", mis_shaped),
        )
        if keys
    ]
    if parts:
        raise BackboneMismatchError(f"{path} does not fit this backbone ({'; '.join(parts)})")
    with torch.no_grad():
        module.load_state_dict(weights)


def load_backbone_checkpoint(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load an ``ssmd-backbone`` file into ``module``; returns the checkpoint (metadata too).

    Raises:
        CheckpointError: missing or unreadable file, or not a backbone checkpoint.
        BackboneMismatchError: see :func:`load_backbone_state`.
    """
    state = load_checkpoint(path)
    if not is_backbone_checkpoint(state):
        raise CheckpointError(
            f"{path}: field 'kind' = {state.get('kind')!r}: expected {BACKBONE_KIND!r} "
            "(a file written by ssmd pretrain)"
        )
    load_backbone_state(module, state, path)
    return state
