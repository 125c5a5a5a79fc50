"""CSD: consistency-based semi-supervised detection (Jeong et al., NeurIPS 2019), as the SSMD
paper re-implements it (Sec. 4.3): one (siamese) network on an image and its horizontal flip.

For every image ``x`` of the labeled and of the unlabeled batch, the network predicts on
``x`` and on ``flip(x)``; the flipped predictions are mapped back with
:meth:`~ssmd.models.detectors.retinanet.DenseOutputs.hflip` (position ``x -> W_l - 1 - x``,
``dx -> -dx``), so every anchor is compared with its mirror counterpart. Per anchor:

* class consistency, ``"kl"`` (default, as the SSMD paper's re-implementation):
  ``KL(p'|| p) + KL(p || p')`` with the target side detached in each term — the two terms of
  CSD's reference code (``conf_consistency_loss_a + _b``); ``"jsd"``: CSD's symmetric
  Jensen-Shannon divergence ``(KL(p || m) + KL(p' || m)) / 2``, ``m = (p + p') / 2``, with
  gradients through both branches;
* location consistency: the mean over ``(dx, dy, dw, dh)`` of the squared difference
  (CSD's code averages the four MSEs), gradients through both branches.

``loss_cons`` is the mean of ``class + location`` over the anchors kept, labeled plus
unlabeled images (CSD applies it to both); ``loss = loss_cls + loss_box + lambda * loss_cons``
with ``lambda`` from the ramp of :mod:`ssmd.methods.schedules` (``"eq10"``, CSD's own
Gaussian ramp-up / ramp-down with quarter lengths) times ``consistency_weight``.

**Background elimination** (option, off by default as in the SSMD paper's description):
only anchors where the unflipped branch's best foreground probability exceeds its background
probability count (CSD's code: ``max_c p[c] > p[0]``, detached); with no such anchor the
cost is 0. All pyramid levels count equally (as SSMD's cost).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ssmd.losses.consistency import kl_teacher_student
from ssmd.methods.base import METHODS, Method
from ssmd.methods.schedules import RAMPS, consistency_weight
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet
from ssmd.structures.sample import Batch

__all__ = ["CSD", "csd_consistency"]

DIVERGENCES = ("kl", "jsd")


def _kl_probs(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p || q) = sum_c p (log p - log q)`` over the last dim, from probabilities."""
    tiny = torch.finfo(p.dtype).tiny
    return (p * (p.clamp_min(tiny).log() - q.clamp_min(tiny).log())).sum(-1)


def csd_consistency(
    outputs: DenseOutputs,
    flipped_aligned: DenseOutputs,
    divergence: str = "kl",
    background_elimination: bool = False,
) -> Tensor:
    """CSD's consistency cost between predictions on ``x`` and (aligned) ones on ``flip(x)``.

    Args:
        outputs: predictions on the images (softmax ``K + 1`` logits).
        flipped_aligned: predictions on the flipped images, already ``hflip()``-ed back.
        divergence: ``"kl"`` (symmetric, detached targets) or ``"jsd"`` (module docstring).
        background_elimination: keep only anchors with ``max_c p[c] > p[0]`` on ``outputs``.

    Returns:
        Scalar mean over the kept anchors of ``class + location`` consistency.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"CSD divergence must be one of {DIVERGENCES}, got {divergence!r}")
    la = outputs.flat_cls_logits()  # (B, N, K+1)
    lb = flipped_aligned.flat_cls_logits()  # (B, N, K+1)
    da = outputs.flat_box_deltas()  # (B, N, 4)
    db = flipped_aligned.flat_box_deltas()  # (B, N, 4)
    if la.shape != lb.shape or da.shape != db.shape:
        raise ValueError(
            f"CSD: predictions {tuple(la.shape)}/{tuple(da.shape)} and flipped predictions "
            f"{tuple(lb.shape)}/{tuple(db.shape)} differ"
        )
    if la.shape[-1] < 2:
        raise ValueError("CSD needs softmax outputs with a background class (K + 1 >= 2 logits)")
    if divergence == "kl":
        cls = kl_teacher_student(la, lb.detach()) + kl_teacher_student(lb, la.detach())  # (B, N)
    else:
        pa, pb = la.softmax(-1), lb.softmax(-1)
        m = (pa + pb) / 2.0
        cls = (_kl_probs(pa, m) + _kl_probs(pb, m)) / 2.0  # (B, N)
    loc = ((da - db) ** 2).mean(-1)  # (B, N)
    per_anchor = cls + loc
    if background_elimination:
        pa = la.detach().softmax(-1)
        keep = (pa[..., 1:].max(-1).values > pa[..., 0]).to(per_anchor.dtype)  # (B, N)
        return (per_anchor * keep).sum() / keep.sum().clamp_min(1.0)
    return per_anchor.mean()


@METHODS.register("csd")
class CSD(Method):
    """CSD (Jeong et al. 2019) on the shared RetinaNet: flip consistency on every image.

    Args:
        model: the detector (softmax outputs; input widths a multiple of the largest stride).
        divergence: ``"kl"`` or ``"jsd"`` class consistency (module docstring).
        background_elimination: CSD's background filter (module docstring).
        consistency_on_labeled: also regularise the labeled images (CSD does).
        consistency_weight: ``lambda_max``.
        ramp: ``"eq10"`` or ``"none"`` (:mod:`ssmd.methods.schedules`).
    """

    uses_unlabeled: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections", "dense_maps")
    defaults: ClassVar[dict[str, Any]] = {
        "divergence": "kl",
        "background_elimination": False,
        "consistency_on_labeled": True,
        "consistency_weight": 1.0,
        "ramp": "eq10",
    }

    def __init__(
        self,
        model: nn.Module,
        divergence: str = "kl",
        background_elimination: bool = False,
        consistency_on_labeled: bool = True,
        consistency_weight: float = 1.0,
        ramp: str = "eq10",
    ) -> None:
        super().__init__(model)
        activation = getattr(model, "activation", "softmax")
        if activation != "softmax":
            raise ValueError(
                f"CSD needs a detector with softmax outputs, got activation={activation!r} "
                "(set model.activation=softmax)"
            )
        if divergence not in DIVERGENCES:
            raise ValueError(f"method.divergence = {divergence!r}: expected one of {DIVERGENCES}")
        if ramp not in RAMPS:
            raise ValueError(f"method.ramp = {ramp!r}: expected one of {RAMPS}")
        if float(consistency_weight) < 0:
            raise ValueError(f"method.consistency_weight = {consistency_weight!r}: expected >= 0")
        self.divergence = divergence
        self.background_elimination = bool(background_elimination)
        self.consistency_on_labeled = bool(consistency_on_labeled)
        self.consistency_weight = float(consistency_weight)
        self.ramp = ramp

    def _check_width(self, images: Tensor) -> None:
        strides = getattr(getattr(self.model, "anchor_generator", None), "strides", None)
        if strides and int(images.shape[-1]) % int(max(strides)) != 0:
            raise ValueError(
                f"CSD needs an input width that is a multiple of the largest stride "
                f"{max(strides)} (mirror-symmetric anchors), got {int(images.shape[-1])}"
            )

    def consistency(self, images: Tensor, outputs: DenseOutputs | None = None) -> Tensor:
        """CSD cost of ``images`` ``Tensor[B, C, H, W]`` (reuses ``outputs`` = model(images) if given)."""
        self._check_width(images)
        out = self.model(images) if outputs is None else outputs
        flipped: DenseOutputs = self.model(images.flip(-1))
        return csd_consistency(out, flipped.hflip(), self.divergence, self.background_elimination)

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Supervised loss on the labeled images + ``lambda`` times the flip consistency.

        Returns:
            ``loss_cls``, ``loss_box``, ``loss_cons`` (labeled + unlabeled, un-weighted),
            ``loss_cons_labeled``, ``loss_cons_unlabeled``, ``cons_weight`` and ``loss``.
        """
        lam = consistency_weight(step, max_iters, self.ramp, self.consistency_weight)
        zero = labeled.images.new_zeros(())
        out_l = self.model(labeled.images)
        losses = cast(RetinaNet, self.model).loss(out_l, labeled.targets())
        supervised = sum(losses.values(), start=zero)
        cons_l = zero
        if self.consistency_on_labeled:
            cons_l = self.consistency(labeled.images, out_l)
        cons_u = zero
        if unlabeled is not None and len(unlabeled) > 0:
            cons_u = self.consistency(unlabeled.images)
        losses["loss_cons"] = cons_l + cons_u
        losses["loss_cons_labeled"] = cons_l.detach()
        losses["loss_cons_unlabeled"] = cons_u.detach()
        losses["cons_weight"] = torch.tensor(lam, dtype=zero.dtype, device=zero.device)
        losses["loss"] = supervised + lam * (cons_l + cons_u)
        return losses
