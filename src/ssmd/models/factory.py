"""The model registry: ``create_model(name, **kwargs)`` builds any registered detector.

Entry points are tiny functions that forward keyword arguments to a factory (timm style);
the model never reads a config itself. :func:`model_from_config` builds the detector named by
a config's ``model.name`` from the rest of that section: a builder's keyword parameters *are*
the config keys it reads.

Adding a detector is a new module that registers its builder with
``@MODELS.register("name")`` plus one import line among this file's imports (the
``# registers`` lines).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ssmd.config import ConfigError
from ssmd.models.backbones.multislice import multislice_builder
from ssmd.models.detectors import faster_rcnn as _faster_rcnn  # registers "faster_rcnn"
from ssmd.models.detectors import retinanet3d as _retinanet3d  # noqa: F401  (registers "retinanet3d")
from ssmd.models.detectors.base import MODELS
from ssmd.models.detectors.retinanet import build_retinanet

__all__ = ["DEFAULT_MODEL", "MODELS", "builder_keys", "create_model", "model_from_config"]

DEFAULT_MODEL = "retinanet"
"""``model.name`` of a config (or an older checkpoint's config) that does not set one."""


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    return MODELS.get(name)(**kwargs)


def builder_keys(builder: Callable[..., nn.Module]) -> tuple[frozenset[str], bool]:
    """The config keys a builder reads: its keyword parameters other than ``num_classes``.

    Returns:
        ``(keys, takes_any)``; ``takes_any`` is True for a builder with ``**kwargs`` (a preset
        that forwards everything), which then receives every key of the section.
    """
    params = inspect.signature(builder).parameters.values()
    keys = frozenset(
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "num_classes"
    )
    return keys, any(p.kind == p.VAR_KEYWORD for p in params)


def model_from_config(
    section: Mapping[str, Any], num_classes: int, shared: Mapping[str, Any] | None = None
) -> nn.Module:
    """The detector ``section["name"]`` (default :data:`DEFAULT_MODEL`) built from ``section``.

    The ``model`` section is shared by all detectors: :data:`ssmd.config.DEFAULTS` holds the
    keys of the built-in ones (``shared``), and a detector may read further keys of its own
    (its builder's parameters, with their defaults). A key is passed to the builder when the
    builder reads it; a ``shared`` key the builder does not read is allowed only at its
    default value (it belongs to another detector); anything else is a mistake.

    Args:
        section: the config's ``model`` section.
        num_classes: ``K`` foreground classes.
        shared: the default ``model`` section (:data:`ssmd.config.DEFAULTS`).

    Raises:
        ConfigError: unknown ``model.name`` (listing the registered ones), a key that no
            detector reads, or a key set away from its default that this detector ignores.
    """
    name = section.get("name") or DEFAULT_MODEL
    if name not in MODELS:
        raise ConfigError(
            f"config key model.name = {name!r}: unknown model; registered: {', '.join(MODELS.names())}"
        )
    builder = MODELS.get(name)
    keys, takes_any = builder_keys(builder)
    shared = shared or {}
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        if key == "name":
            continue
        if key in keys or takes_any:
            kwargs[key] = value
        elif key in shared:
            if value != shared[key]:
                raise ConfigError(
                    f"config key model.{key} = {value!r} is not used by model.name={name!r} "
                    f"(it reads {', '.join(sorted(keys))}); leave it at its default {shared[key]!r}"
                )
        else:
            raise ConfigError(
                f"unknown config key model.{key} = {value!r} for model.name={name!r}; "
                f"known keys: {', '.join(sorted(keys))}"
            )
    return builder(num_classes=num_classes, **kwargs)


@MODELS.register("retinanet")
def retinanet(
    *,
    num_classes: int = 1,
    backbone: str = "resnet18",
    backbone_norm: str = "bn",
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    activation: str = "softmax",
    cls_loss: str = "focal",
    pretrained_weights: str | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    topk_candidates: int = 1000,
    detections_per_img: int = 300,
    in_channels: int = 3,
) -> nn.Module:
    """:func:`~ssmd.models.detectors.retinanet.build_retinanet` from the ``model`` keys.

    The keyword names are the config keys (``model.<key>``); see ``build_retinanet``.
    """
    return build_retinanet(
        backbone=backbone,
        backbone_norm=backbone_norm,
        width_multiplier=float(width_multiplier),
        fpn_channels=int(fpn_channels),
        head_convs=int(head_convs),
        head_norm=head_norm,
        num_classes=int(num_classes),
        anchor_sizes=tuple(float(s) for s in anchor_sizes),
        activation=activation,  # type: ignore[arg-type]
        cls_loss=cls_loss,  # type: ignore[arg-type]
        pretrained_weights=pretrained_weights,
        in_channels=int(in_channels),
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_thresh),
        topk_candidates=int(topk_candidates),
        detections_per_img=int(detections_per_img),
    )


# 3DCE multi-slice input (G groups of 3 CT slices through a shared trunk, fused; issue 21)
MODELS.register("retinanet_3dce")(multislice_builder(retinanet))
MODELS.register("faster_rcnn_3dce")(multislice_builder(_faster_rcnn.faster_rcnn))


@MODELS.register("retinanet_resnet18_cpu")
def retinanet_resnet18_cpu(**kwargs: object) -> nn.Module:
    """A CPU-sized RetinaNet: ResNet-18 at width 0.25, 64-channel FPN, 2 head convs,
    anchors 8..128 (nuclei at ~256 px); ``kwargs`` override any of these."""
    config: dict[str, object] = {
        "backbone": "resnet18",
        "width_multiplier": 0.25,
        "fpn_channels": 64,
        "head_convs": 2,
        "anchor_sizes": (8, 16, 32, 64, 128),
    }
    config.update(kwargs)
    return build_retinanet(**config)  # type: ignore[arg-type]
