"""The contract of self-supervised pretraining methods and their registry.

A pretraining method is as small as a semi-supervised one (:class:`ssmd.methods.base.Method`,
which it extends so the shared :class:`ssmd.engine.trainer.Trainer`, its logging and its
resumable ``last.pt`` run it unchanged): it owns the trunk being pretrained and its heads
(:attr:`PretrainMethod.model`, a ``ModuleDict`` with a ``"backbone"`` entry) and turns a
:class:`ssmd.pretrain.views.ViewBatch` into a dict of losses. Only the trunk is kept
afterwards; the heads are thrown away, as in SimCLR and VICRegL.

The losses and heads come from `lightly <https://github.com/lightly-ai/lightly>`_ (the
``pretrain`` extra), imported when a method is built, so the core package does not need it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from ssmd.methods.base import Method, merged_method_params
from ssmd.pretrain.views import ViewBatch
from ssmd.utils.registry import Registry

__all__ = [
    "PRETRAIN_METHODS",
    "PretrainMethod",
    "build_pretrain_method",
    "feature_maps",
    "require_lightly",
]


def require_lightly() -> Any:
    """Import lightly, or fail with the command that installs it."""
    try:
        import lightly
    except ImportError as exc:
        raise ImportError(
            "ssmd pretrain needs the lightly library for its self-supervised losses and heads: "
            "pip install 'ssmd[pretrain]' (or pip install 'lightly>=1.5')"
        ) from exc
    return lightly


def feature_maps(backbone: nn.Module, images: Tensor) -> list[Tensor]:
    """The trunk's feature maps as a list (``[C3, C4, C5]`` of a detector's ResNet, ``[C5]``
    of a classifier's; a trunk returning one tensor gives a list of one)."""
    out = backbone(images)
    return list(out) if isinstance(out, list | tuple) else [out]


class PretrainMethod(Method):
    """Base of pretraining methods.

    Args:
        backbone: the trunk to pretrain (e.g. :class:`~ssmd.models.backbones.resnet.ResNetFeatures`).
        channels: channels of each map :func:`feature_maps` returns, in order.
        heads: the method's projection heads (named), trained with the trunk and then dropped.
    """

    uses_unlabeled: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, channels: Sequence[int], heads: dict[str, nn.Module]):
        if "backbone" in heads:
            raise ValueError("a head may not be called 'backbone'")
        super().__init__(nn.ModuleDict({"backbone": backbone, **heads}))
        self.channels = tuple(int(c) for c in channels)

    @property
    def backbone(self) -> nn.Module:
        """The trunk being pretrained (what the backbone checkpoint keeps)."""
        return self.model["backbone"]  # type: ignore[index]

    @abc.abstractmethod
    def training_step(  # type: ignore[override]
        self, labeled: ViewBatch, unlabeled: None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Losses of one step on two (or more) views of each image; ``"loss"`` is back-propagated."""

    def describe(self) -> dict[str, Any]:
        """The method's name and parameters, stored in the backbone checkpoint."""
        return {"name": getattr(type(self), "method_name", type(self).__name__)}


PRETRAIN_METHODS: Registry[type[PretrainMethod]] = Registry("pretraining method")


def build_pretrain_method(
    name: str, backbone: nn.Module, channels: Sequence[int], params: dict[str, Any] | None = None
) -> PretrainMethod:
    """The registered pretraining method ``name`` around ``backbone``, ``params`` over its defaults.

    Raises:
        KeyError: unknown method (the message lists the known ones).
        ValueError: a parameter the method does not declare (``pretrain.method.<key>``).
    """
    cls = PRETRAIN_METHODS.get(name)
    kwargs = merged_method_params(name, cls.defaults, params)
    return cls(backbone, channels, **kwargs)
