"""SRC-MT (Liu et al., TMI 2020): Mean Teacher plus sample-relation consistency.

``L = L_s + lambda(t) (L_c + beta L_sc)`` with ``L_sc`` Eq. (4) of the STSC paper: the
row-normalised case-level Gram matrices (Eq. (3)) of the student's and the teacher's pooled
features over the whole batch (labeled and unlabeled images) are kept equal.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from ssmd.losses.classification import spatial_structure_consistency
from ssmd.methods.classification.base import CLASSIFICATION_METHODS, ClassBatch
from ssmd.methods.classification.mean_teacher import MeanTeacherClassification

__all__ = ["SRCMTClassification"]


@CLASSIFICATION_METHODS.register("srcmt")
class SRCMTClassification(MeanTeacherClassification):
    """Mean Teacher + ``beta * L_sc``.

    Args:
        beta: weight of ``L_sc`` inside ``lambda(...)`` (SRC-MT and STSC use 1).
        (others as :class:`MeanTeacherClassification`)
    """

    defaults: ClassVar[dict[str, Any]] = {**MeanTeacherClassification.defaults, "beta": 1.0}

    def __init__(
        self, model: nn.Module, multi_label: bool = False, beta: float = 1.0, **kw: Any
    ) -> None:
        super().__init__(model, multi_label, **kw)
        self.beta = float(beta)

    def extra_losses(
        self,
        batch: ClassBatch,
        student_features: Tensor,
        teacher_features: Tensor,
        step: int,
        max_iters: int,
    ) -> dict[str, tuple[float, Tensor]]:
        loss_sc = spatial_structure_consistency(student_features, teacher_features)
        return {"loss_sc": (self.beta, loss_sc)}
