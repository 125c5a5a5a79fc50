"""Supervised baseline: the detector's own loss on labeled images only (SSMD paper Eq. (1))."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from torch import Tensor

from ssmd.methods.base import METHODS, Method
from ssmd.structures.sample import Batch

__all__ = ["Supervised"]


@METHODS.register("supervised")
class Supervised(Method):
    """Train on the labeled part only; with ``split.labeled_ratio=1`` this is the fully supervised run."""

    uses_unlabeled: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections")
    defaults: ClassVar[dict[str, Any]] = {}

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        outputs = self.model(labeled.images)
        losses: dict[str, Tensor] = cast(Any, self.model).loss(outputs, labeled.targets())
        losses["loss"] = sum(losses.values(), start=labeled.images.new_zeros(()))
        return losses
