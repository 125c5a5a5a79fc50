"""The contract of classification methods, their batch type and their registry.

A classification method is as small as a detection one (:class:`ssmd.methods.base.Method`,
which it extends so the shared :class:`ssmd.engine.trainer.Trainer`, hooks and checkpoints
run it unchanged): it owns the student (and an EMA teacher if it has one) and turns a labeled
and an unlabeled :class:`ClassBatch` into a dict of losses.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ssmd.methods.base import Method, merged_method_params
from ssmd.utils.registry import Registry

__all__ = [
    "CLASSIFICATION_METHODS",
    "ClassBatch",
    "ClassificationMethod",
    "build_classification_method",
]


@dataclass
class ClassBatch:
    """A batch of images under two independent perturbations.

    Attributes:
        images: student view ``eta``, ``Tensor[B, C, H, W]`` (normalised).
        images_teacher: teacher view ``eta'`` of the same images, ``Tensor[B, C, H, W]``.
        labels: ``Tensor[B, K]`` (one-hot or 0/1), ``None`` for unlabeled batches.
        indices: dataset positions ``LongTensor[B]`` (STSC's per-sample memory is keyed by them).
    """

    images: Tensor
    images_teacher: Tensor
    labels: Tensor | None
    indices: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


class ClassificationMethod(Method):
    """Base of classification methods.

    Args:
        model: the student :class:`ssmd.models.classifiers.Classifier` (returns
            ``(logits, features)``).
        multi_label: sigmoid/BCE (multi-label) instead of softmax/cross-entropy.
    """

    def __init__(self, model: nn.Module, multi_label: bool = False) -> None:
        super().__init__(model)
        self.multi_label = bool(multi_label)

    @abc.abstractmethod
    def training_step(  # type: ignore[override]
        self, labeled: ClassBatch, unlabeled: ClassBatch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Losses of one step; ``"loss"`` is back-propagated."""


CLASSIFICATION_METHODS: Registry[type[ClassificationMethod]] = Registry("classification method")


def build_classification_method(
    name: str,
    model: nn.Module,
    params: dict[str, Any] | None = None,
    *,
    multi_label: bool = False,
    num_samples: int = 0,
) -> ClassificationMethod:
    """Build the registered method ``name`` with ``params`` over its :attr:`defaults`.

    Args:
        name: ``supervised``, ``mean_teacher``, ``srcmt`` or ``stsc``.
        model: the student.
        params: ``method.*`` config keys (``name`` is ignored).
        multi_label: the task kind (from the dataset, not the config).
        num_samples: dataset size, for methods that keep per-sample state (STSC's memory).

    Raises:
        KeyError: unknown method; ValueError: a parameter the method does not declare.
    """
    cls = CLASSIFICATION_METHODS.get(name)
    merged = merged_method_params(name, cls.defaults, params)
    if getattr(cls, "needs_num_samples", False):
        merged["num_samples"] = num_samples
    return cls(model, multi_label=multi_label, **merged)
