"""STSC (Lei, Liu & Liu): SRC-MT plus temporal sub-structure consistency, Eq. (5)-(7).

``L = L_s + lambda(t) (L_c + beta L_sc + gamma L_tc)`` (Eq. (7)).

**Relating "the same samples" across iterations** (the paper leaves it open: consecutive
mini-batches hold different images). This implementation keeps a **per-sample memory** of
every training image's last student representation (its pooled features, detached, written
each time the image is in a batch; the idea of Temporal Ensembling's per-sample memory, cited
by the paper). At iteration ``t``, for the images of the batch that have been seen before:

1. ``R_t`` = Eq. (3) of their current student features (with gradients);
   ``R_{t-1}`` = Eq. (3) of their remembered features (the representation they had the last
   time they were trained on), same images in the same order;
2. ``A_t``, ``A_{t-1}`` by Eq. (5) with threshold ``tau``;
3. the stable sub-structures are the connected components (>= 2 images) of the graph of
   edges present at both times (:func:`ssmd.losses.classification.stable_substructures`);
4. ``L_tc`` = Eq. (6) over those components, with ``1/B`` the full batch size.

Images seen for the first time only fill the memory. ``t - 1`` is therefore "the previous
iteration this image took part in" (one epoch of its stream ago), not literally iteration
``t - 1``, whose batch held other images.

**Threshold scale.** A row-normalised Gram row of ``n`` equally related samples is
``1/sqrt(n)`` everywhere, so a fixed ``tau`` would mean different things for different batch
sizes; with ``tau_relative`` (default) the threshold of Eq. (5) is ``tau / sqrt(n)`` — ``tau``
is then "times the uniform relation". ``tau_relative: false`` uses ``tau`` as printed.

**Late stage.** The paper applies the temporal term "at the late training stage" without a
number: ``L_tc`` is on from ``tc_start * max_iters``; the memory is filled from the start. The
default 0.2 is set for short CPU budgets: with ``tc_start = 0.5`` the validation-selected
``best.pt`` of 200-iteration PneumoniaMNIST runs came from before the term was switched on (step
50-100), making STSC's test numbers identical to SRC-MT's.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.losses.classification import (
    binarize_relation,
    relation_matrix,
    stable_substructures,
    temporal_substructure_consistency,
)
from ssmd.methods.classification.base import CLASSIFICATION_METHODS, ClassBatch
from ssmd.methods.classification.srcmt import SRCMTClassification

__all__ = ["STSCClassification"]


@CLASSIFICATION_METHODS.register("stsc")
class STSCClassification(SRCMTClassification):
    """SRC-MT + ``gamma * L_tc`` with a per-sample feature memory (module docstring).

    Args:
        gamma: weight of ``L_tc`` (the paper: 1).
        tau: threshold of Eq. (5) (relative to ``1/sqrt(n)`` when ``tau_relative``).
        tau_relative: scale ``tau`` by ``1/sqrt(n)``.
        tc_start: fraction of training after which ``L_tc`` is applied.
        num_samples: dataset size (memory rows; filled by the engine).
        (others as :class:`SRCMTClassification`)
    """

    needs_num_samples: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        **SRCMTClassification.defaults,
        "gamma": 1.0,
        "tau": 1.1,
        "tau_relative": True,
        "tc_start": 0.2,
    }

    def __init__(
        self,
        model: nn.Module,
        multi_label: bool = False,
        gamma: float = 1.0,
        tau: float = 1.1,
        tau_relative: bool = True,
        tc_start: float = 0.2,
        num_samples: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(model, multi_label, **kw)
        if num_samples < 1:
            raise ValueError(f"STSC needs the dataset size for its memory, got {num_samples}")
        dim = int(model.feature_dim)  # type: ignore[arg-type]
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.tau_relative = bool(tau_relative)
        self.tc_start = float(tc_start)
        self.memory: Tensor
        self.seen: Tensor
        self.register_buffer("memory", torch.zeros(num_samples, dim))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))
        self._diag: dict[str, float] = {}

    def threshold(self, n: int) -> float:
        """The ``tau`` of Eq. (5) for ``n`` samples."""
        return self.tau / math.sqrt(n) if self.tau_relative else self.tau

    def temporal_loss(self, indices: Tensor, features: Tensor, batch_size: int) -> Tensor:
        """``L_tc`` (Eq. (6)) of a batch against the memory; does not update the memory."""
        zero = features.sum() * 0.0
        pos = torch.nonzero(self.seen[indices]).squeeze(1)  # batch positions seen before
        self._diag = {"tc_seen": float(pos.numel()), "tc_substructures": 0.0, "tc_covered": 0.0}
        if pos.numel() < 2:
            return zero
        r_curr = relation_matrix(features[pos])  # (n, n)
        r_prev = relation_matrix(self.memory[indices[pos]])  # (n, n), no gradient
        thr = self.threshold(int(pos.numel()))
        subs = stable_substructures(binarize_relation(r_prev, thr), binarize_relation(r_curr, thr))
        self._diag["tc_substructures"] = float(len(subs))
        self._diag["tc_covered"] = float(sum(len(s) for s in subs))
        return temporal_substructure_consistency(r_curr, r_prev, subs, batch_size=batch_size)

    def extra_losses(
        self,
        batch: ClassBatch,
        student_features: Tensor,
        teacher_features: Tensor,
        step: int,
        max_iters: int,
    ) -> dict[str, tuple[float, Tensor]]:
        out = super().extra_losses(batch, student_features, teacher_features, step, max_iters)
        idx = batch.indices.to(self.memory.device)
        if step >= self.tc_start * max_iters:
            loss_tc = self.temporal_loss(idx, student_features, len(batch))
        else:
            loss_tc = student_features.sum() * 0.0
            self._diag = {}
        with torch.no_grad():
            self.memory[idx] = student_features.detach().to(self.memory.dtype)
            self.seen[idx] = True
        out["loss_tc"] = (self.gamma, loss_tc)
        return out

    def diagnostics(self) -> dict[str, Tensor]:
        """Images with a memory, stable sub-structures and the images they cover, this step."""
        return {k: torch.tensor(v) for k, v in self._diag.items()}
