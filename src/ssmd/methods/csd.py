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

**Background elimination** (option ``background_elimination``, off by default as in the
SSMD paper's description and in the committed ``table1_cpu`` cells): only anchors where the
*unflipped* branch's best foreground probability exceeds its background probability count,
``keep = max_{c >= 1} p[c] > p[0]`` (detached), and the cost is the mean over the kept
anchors; with no kept anchor the cost is 0. This is the rule of CSD's reference code
(github.com/soo89/CSD-SSD, ``train_csd.py``: ``each_val, _ = torch.max(conf[:, :, 1:], 2);
mask_val = each_val > conf[:, :, 0]``, where ``conf`` is the softmax of the un-flipped image
only — ``csd.py``, ``SSD_CON.forward``; the same mask selects the flipped branch's anchors,
and ``if mask_val.sum() > 0`` else the cost is 0). An anchor that only the flipped view calls
foreground is therefore eliminated. All pyramid levels count equally (as SSMD's cost).
:meth:`CSD.training_step` logs the fraction of anchors kept (``cons_kept_labeled`` /
``cons_kept_unlabeled``; 1 without the option).

**Two-stage detectors** (Faster R-CNN, ``"region_scores"`` instead of ``"dense_maps"``; CSD's
two-stage recipe, :func:`two_stage_consistency`): the same cost on the RPN's dense maps
(objectness as two-class logits ``[0, o]``, whose softmax is ``(1 - sigmoid(o), sigmoid(o))``;
background elimination keeps anchors with objectness above 0.5) plus the cost on the RoI head's
outputs for **the same proposals in both views**: the ``roi_proposals`` best proposals of the
un-flipped image (best objectness first), mirrored (``x1' = W - x2``, ``x2' = W - x1``) for the
flipped one, class logits compared as above, and the location term on the per-class deltas of
the class the un-flipped branch finds most likely among the foreground classes (detached
arg-max; ``dx`` of the flipped branch negated). Background elimination keeps RoIs whose best
foreground probability beats the background's. ``loss_cons`` = RPN + RoI cost; both are
logged (``cons_rpn_*``, ``cons_roi_*``).

Differences from the reference code that remain (kept so that the committed cells stay
reproducible): the reference halves the class term (``consistency_conf_loss / 2``) and pools
labeled and unlabeled images of its mixed batch into one mean, while here the class term is
``KL_a + KL_b`` and the labeled and unlabeled means are summed.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ssmd.losses.consistency import kl_teacher_student
from ssmd.methods.base import METHODS, Method
from ssmd.methods.schedules import RAMPS, consistency_weight
from ssmd.models.detectors.base import DENSE_MAPS, REGION_SCORES, detector_capabilities
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet
from ssmd.structures.sample import Batch

__all__ = ["CSD", "background_mask", "csd_consistency", "hflip_boxes", "two_stage_consistency"]

DIVERGENCES = ("kl", "jsd")


def _kl_probs(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p || q) = sum_c p (log p - log q)`` over the last dim, from probabilities."""
    tiny = torch.finfo(p.dtype).tiny
    return (p * (p.clamp_min(tiny).log() - q.clamp_min(tiny).log())).sum(-1)


def background_mask(outputs: DenseOutputs) -> Tensor:
    """CSD's background elimination: ``Tensor[B, N]`` bool, true where ``max_{c>=1} p[c] > p[0]``.

    ``p`` is the (detached) softmax of ``outputs``, the predictions on the *un-flipped*
    images, as in CSD's reference code (module docstring); the flipped branch plays no part.
    """
    p = outputs.flat_cls_logits().detach().softmax(-1)  # (B, N, K+1)
    if p.shape[-1] < 2:
        raise ValueError("CSD needs softmax outputs with a background class (K + 1 >= 2 logits)")
    return p[..., 1:].max(-1).values > p[..., 0]  # (B, N)


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
        background_elimination: keep only the anchors of :func:`background_mask` (``outputs``).

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
        keep = background_mask(outputs).to(per_anchor.dtype)  # (B, N)
        return (per_anchor * keep).sum() / keep.sum().clamp_min(1.0)
    return per_anchor.mean()


def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """``xyxy`` boxes ``Tensor[P, 4]`` mirrored in an image of ``width`` pixels."""
    return torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
    )  # (P, 4)


def _objectness_as_softmax(rpn: DenseOutputs) -> DenseOutputs:
    """RPN maps with the objectness logit ``o`` as two-class logits ``[0, o]`` per anchor."""
    return DenseOutputs(
        [torch.cat([torch.zeros_like(o), o], dim=2) for o in rpn.cls_logits],  # (B, A, 2, H, W)
        list(rpn.box_deltas),
        rpn.image_size,
    )


def _roi_consistency(
    la: Tensor, da: Tensor, lb: Tensor, db: Tensor, divergence: str, background_elimination: bool
) -> tuple[Tensor, Tensor]:
    """Per-RoI CSD cost of logits ``(P, K+1)`` / deltas ``(P, K+1, 4)``, aligned; ``(cost, kept)``."""
    if divergence == "kl":
        cls = kl_teacher_student(la, lb.detach()) + kl_teacher_student(lb, la.detach())  # (P,)
    else:
        pa, pb = la.softmax(-1), lb.softmax(-1)
        m = (pa + pb) / 2.0
        cls = (_kl_probs(pa, m) + _kl_probs(pb, m)) / 2.0  # (P,)
    pa = la.detach().softmax(-1)  # (P, K+1)
    best = pa[:, 1:].argmax(-1) + 1  # (P,) most likely foreground class
    rows = torch.arange(la.shape[0], device=la.device)
    loc = ((da[rows, best] - db[rows, best]) ** 2).mean(-1)  # (P,)
    per_roi = cls + loc
    if background_elimination:
        keep = (pa[:, 1:].max(-1).values > pa[:, 0]).to(per_roi.dtype)  # (P,)
    else:
        keep = torch.ones_like(per_roi)
    cost = (per_roi * keep).sum() / keep.sum().clamp_min(1.0)
    return cost, keep.mean() if keep.numel() else keep.sum()


def two_stage_consistency(
    model: nn.Module,
    images: Tensor,
    outputs: Any,
    divergence: str = "kl",
    background_elimination: bool = False,
    roi_proposals: int = 256,
) -> dict[str, Tensor]:
    """CSD on a two-stage detector: RPN maps and RoI outputs of the same proposals (module doc).

    Args:
        model: a :class:`~ssmd.models.detectors.faster_rcnn.FasterRCNN` (``rpn``, ``proposals``,
            ``roi_outputs``).
        images: ``Tensor[B, C, H, W]``, width a multiple of the largest stride.
        outputs: ``model(images)``.
        divergence, background_elimination: as :func:`csd_consistency`.
        roi_proposals: proposals per image compared at the RoI head (the best ones).

    Returns:
        ``{"rpn", "roi", "rpn_kept", "roi_kept"}``: the two costs and the fractions kept.
    """
    m = cast(Any, model)
    flipped = m(images.flip(-1))
    rpn_a = _objectness_as_softmax(outputs.rpn)
    rpn_b = _objectness_as_softmax(flipped.rpn.hflip())
    rpn = csd_consistency(rpn_a, rpn_b, divergence, background_elimination)
    rpn_kept = (
        background_mask(rpn_a).to(rpn.dtype).mean()
        if background_elimination
        else torch.ones((), dtype=rpn.dtype, device=rpn.device)
    )
    width = int(images.shape[-1])
    props = [p[:roi_proposals].detach() for p in outputs.proposals]
    if sum(len(p) for p in props) == 0:
        zero = images.new_zeros(())
        return {"rpn": rpn, "roi": zero, "rpn_kept": rpn_kept, "roi_kept": zero}
    la, da = m.roi_outputs(outputs, props)  # (P, K+1), (P, K+1, 4)
    lb, db = m.roi_outputs(flipped, [hflip_boxes(p, width) for p in props])
    sign = torch.ones(4, dtype=db.dtype, device=db.device)
    sign[0] = -1.0  # dx of the mirrored box
    roi, roi_kept = _roi_consistency(la, da, lb, db * sign, divergence, background_elimination)
    return {"rpn": rpn, "roi": roi, "rpn_kept": rpn_kept, "roi_kept": roi_kept}


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
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections")
    requires_any: ClassVar[tuple[str, ...]] = ("dense_maps", "region_scores")
    defaults: ClassVar[dict[str, Any]] = {
        "divergence": "kl",
        "background_elimination": False,
        "consistency_on_labeled": True,
        "consistency_weight": 1.0,
        "ramp": "eq10",
        "roi_proposals": 256,
    }

    def __init__(
        self,
        model: nn.Module,
        divergence: str = "kl",
        background_elimination: bool = False,
        consistency_on_labeled: bool = True,
        consistency_weight: float = 1.0,
        ramp: str = "eq10",
        roi_proposals: int = 256,
    ) -> None:
        super().__init__(model)
        caps = detector_capabilities(model)
        self.two_stage = REGION_SCORES in caps and DENSE_MAPS not in caps
        if int(roi_proposals) < 1:
            raise ValueError(f"method.roi_proposals = {roi_proposals!r}: expected >= 1")
        self.roi_proposals = int(roi_proposals)
        self._last_parts: dict[str, Tensor] = {}
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
        return self._consistency(images, outputs)[0]

    def _consistency(
        self, images: Tensor, outputs: DenseOutputs | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(cost, fraction of anchors kept)``; the fraction is 1 without background elimination."""
        self._check_width(images)
        out = self.model(images) if outputs is None else outputs
        if self.two_stage:
            parts = two_stage_consistency(
                self.model,
                images,
                out,
                self.divergence,
                self.background_elimination,
                self.roi_proposals,
            )
            self._last_parts = {k: v.detach() for k, v in parts.items()}
            return parts["rpn"] + parts["roi"], parts["roi_kept"]
        flipped: DenseOutputs = self.model(images.flip(-1))
        cost = csd_consistency(out, flipped.hflip(), self.divergence, self.background_elimination)
        if self.background_elimination:
            kept = background_mask(out).to(cost.dtype).mean()
        else:
            kept = torch.ones((), dtype=cost.dtype, device=cost.device)
        return cost, kept

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Supervised loss on the labeled images + ``lambda`` times the flip consistency.

        Returns:
            ``loss_cls``, ``loss_box``, ``loss_cons`` (labeled + unlabeled, un-weighted),
            ``loss_cons_labeled``, ``loss_cons_unlabeled``, ``cons_weight``, ``cons_kept_labeled``
            and ``cons_kept_unlabeled`` (fraction of anchors that background elimination kept,
            detached, not part of ``loss``; 1 without it, 0 for an absent part) and ``loss``.
        """
        lam = consistency_weight(step, max_iters, self.ramp, self.consistency_weight)
        zero = labeled.images.new_zeros(())
        out_l = self.model(labeled.images)
        losses = cast(RetinaNet, self.model).loss(out_l, labeled.targets())
        supervised = sum(losses.values(), start=zero)
        cons_l, kept_l = zero, zero
        parts: dict[str, Tensor] = {}
        if self.consistency_on_labeled:
            cons_l, kept_l = self._consistency(labeled.images, out_l)
            if self.two_stage:
                parts.update({f"cons_{k}_labeled": v for k, v in self._last_parts.items()})
        cons_u, kept_u = zero, zero
        if unlabeled is not None and len(unlabeled) > 0:
            cons_u, kept_u = self._consistency(unlabeled.images)
            if self.two_stage:
                parts.update({f"cons_{k}_unlabeled": v for k, v in self._last_parts.items()})
        losses["loss_cons"] = cons_l + cons_u
        losses["loss_cons_labeled"] = cons_l.detach()
        losses["loss_cons_unlabeled"] = cons_u.detach()
        losses["cons_kept_labeled"] = kept_l.detach()
        losses["cons_kept_unlabeled"] = kept_u.detach()
        losses["cons_weight"] = torch.tensor(lam, dtype=zero.dtype, device=zero.device)
        losses.update(parts)
        losses["loss"] = supervised + lam * (cons_l + cons_u)
        return losses
