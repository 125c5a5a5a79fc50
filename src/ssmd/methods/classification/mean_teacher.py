"""Mean Teacher (Tarvainen & Valpola), Eq. (1)-(2) of the STSC paper.

The student sees each image (labeled and unlabeled, ``x in D_U u D_L``) under perturbation
``eta``, the EMA teacher under ``eta'``; the loss is
``L_s + lambda(t) * L_c`` with ``L_c`` the squared distance of their class probabilities
(:func:`ssmd.losses.classification.individual_consistency`).

Where the perturbations come from (the paper does not say): the engine's stream draws two
independent random augmentations of every image (flips, 90-degree rotations, translation,
Gaussian pixel noise; ``augment.*`` in the config), one per network; the student also has
dropout on its pooled features (``model.dropout``). The teacher runs in ``eval()`` mode.

``lambda(t) = consistency * exp(-5 (1 - t / T_r)^2)`` for ``t < T_r = rampup * max_iters``,
then ``consistency`` (Mean Teacher's sigmoid ramp-up; SRC-MT ramps over 30 of its epochs).
The teacher is ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t`` (Sec. 2.1) through the
shared :class:`ssmd.models.ema.ModelEma`, with Mean Teacher's warm-up
``alpha_t = min(alpha, 1 - 1/(t + 1))``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.losses.classification import individual_consistency, sigmoid_rampup, supervised_loss
from ssmd.methods.classification.base import (
    CLASSIFICATION_METHODS,
    ClassBatch,
    ClassificationMethod,
)
from ssmd.models.ema import ModelEma, create_teacher

__all__ = ["MeanTeacherClassification"]


@CLASSIFICATION_METHODS.register("mean_teacher")
class MeanTeacherClassification(ClassificationMethod):
    """Mean Teacher for classification.

    Args:
        model: the student.
        multi_label: task kind.
        ema_decay: ``alpha``.
        consistency: ``lambda`` after the ramp-up.
        rampup: ramp-up length as a fraction of training.
    """

    uses_unlabeled: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"ema_decay": 0.99, "consistency": 1.0, "rampup": 0.3}

    def __init__(
        self,
        model: nn.Module,
        multi_label: bool = False,
        ema_decay: float = 0.99,
        consistency: float = 1.0,
        rampup: float = 0.3,
    ) -> None:
        super().__init__(model, multi_label)
        self.teacher = create_teacher(model)
        self.ema = ModelEma(ema_decay, buffers="ema", warmup=True)
        self.consistency = float(consistency)
        self.rampup = float(rampup)

    def train(self, mode: bool = True) -> MeanTeacherClassification:
        """Set the student's mode; the teacher always stays in ``eval()``."""
        super().train(mode)
        self.teacher.eval()
        return self

    def weight(self, step: int, max_iters: int) -> float:
        """``lambda(t)`` (module docstring)."""
        return self.consistency * sigmoid_rampup(step, round(self.rampup * max_iters))

    def extra_losses(
        self,
        batch: ClassBatch,
        student_features: Tensor,
        teacher_features: Tensor,
        step: int,
        max_iters: int,
    ) -> dict[str, tuple[float, Tensor]]:
        """Unsupervised terms added to ``L_c`` inside ``lambda(...)``: ``{name: (weight, loss)}``.

        None for Mean Teacher; SRC-MT adds ``beta L_sc``, STSC also ``gamma L_tc`` (Eq. (7)).
        """
        return {}

    def training_step(  # type: ignore[override]
        self, labeled: ClassBatch, unlabeled: ClassBatch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        if labeled.labels is None:
            raise ValueError("the labeled batch has no labels")
        batch = labeled if unlabeled is None else _concat(labeled, unlabeled)
        n_l = len(labeled)
        logits_s, feats_s = self.model(batch.images)  # (B, K), (B, C)
        with torch.no_grad():
            logits_t, feats_t = self.teacher(batch.images_teacher)
        loss_sup = supervised_loss(logits_s[:n_l], labeled.labels, self.multi_label)
        loss_c = individual_consistency(logits_s, logits_t, self.multi_label)
        extra = self.extra_losses(batch, feats_s, feats_t, step, max_iters)
        lam = self.weight(step, max_iters)
        unsup = loss_c
        for w, term in extra.values():
            unsup = unsup + w * term
        out = {"loss": loss_sup + lam * unsup, "loss_sup": loss_sup.detach()}
        out["loss_c"] = loss_c.detach()
        out.update({k: term.detach() for k, (_, term) in extra.items()})
        out.update(self.diagnostics())
        out["lambda"] = torch.tensor(lam)
        return out

    def diagnostics(self) -> dict[str, Tensor]:
        """Extra scalars to log (none here)."""
        return {}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA update of the teacher (Sec. 2.1)."""
        self.ema.update(self.teacher, self.model, step)

    def inference_model(self, which: str = "student") -> nn.Module:
        """``student`` (default) or ``teacher``."""
        if which == "teacher":
            return self.teacher
        return super().inference_model(which)


def _concat(a: ClassBatch, b: ClassBatch) -> ClassBatch:
    """Labeled then unlabeled images as one batch (labels of ``a`` only)."""
    return ClassBatch(
        images=torch.cat([a.images, b.images]),  # (B_l + B_u, C, H, W)
        images_teacher=torch.cat([a.images_teacher, b.images_teacher]),
        labels=a.labels,
        indices=torch.cat([a.indices, b.indices]),
    )
