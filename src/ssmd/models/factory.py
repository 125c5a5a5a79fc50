"""The model registry: ``create_model(name, **kwargs)`` builds any registered detector.

Entry points are tiny functions that forward keyword arguments to a factory (timm style);
the model never reads a config itself.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ssmd.models.detectors.retinanet import build_retinanet
from ssmd.utils.registry import Registry

__all__ = ["MODELS", "create_model"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    return MODELS.get(name)(**kwargs)


@MODELS.register("retinanet")
def retinanet(**kwargs: object) -> nn.Module:
    """:func:`~ssmd.models.detectors.retinanet.build_retinanet` with ``kwargs``."""
    return build_retinanet(**kwargs)  # type: ignore[arg-type]


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
