"""The supervised baseline: ``L_s`` on the labeled images only (unlabeled images unused)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ssmd.losses.classification import supervised_loss
from ssmd.methods.classification.base import (
    CLASSIFICATION_METHODS,
    ClassBatch,
    ClassificationMethod,
)

__all__ = ["SupervisedClassification"]


@CLASSIFICATION_METHODS.register("supervised")
class SupervisedClassification(ClassificationMethod):
    """Cross-entropy (single-label) or BCE (multi-label) on the labeled batch."""

    uses_unlabeled: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def training_step(  # type: ignore[override]
        self, labeled: ClassBatch, unlabeled: ClassBatch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        if labeled.labels is None:
            raise ValueError("the labeled batch has no labels")
        logits, _ = self.model(labeled.images)
        loss_sup = supervised_loss(logits, labeled.labels, self.multi_label)
        return {"loss": loss_sup, "loss_sup": loss_sup.detach()}
