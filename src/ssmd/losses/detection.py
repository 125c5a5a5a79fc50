"""Supervised losses of a dense (one-stage) detector: Eq. (1) of the SSMD paper.

Eq. (1) is ``CE(p^c, p^c_gt) + SmoothL1(p^{x,y,w,h}, p^{x,y,w,h}_gt)``; as the paper notes,
the focal loss (Lin et al., *Focal Loss for Dense Object Detection*) replaces the cross
entropy when the number of anchors is large, and it is our default.

Anchor labels (:func:`dense_detection_loss`) use one code for everything an anchor can be:
``1..K`` foreground class, ``0`` background, negative (the matcher's ``-2``) ignored.

Choices where the papers are silent:

* **Softmax focal loss** over ``K + 1`` classes (index 0 = background):
  ``FL = -alpha_t (1 - p_t)^gamma log p_t`` with ``p_t`` the softmax probability of the true
  class and ``alpha_t = alpha`` for foreground anchors, ``1 - alpha`` for background ones —
  the same weighting as the sigmoid focal loss, where ``alpha = 0.25`` weights the positive
  term. Defaults ``alpha = 0.25, gamma = 2``.
* **Smooth-L1 ``beta = 1/9``** (Detectron's RetinaNet). Eq. (1) cites the Fast R-CNN smooth
  L1 with ``beta = 1``, but Fast R-CNN applies it to deltas scaled by about 10 (x, y) and
  5 (w, h); our deltas are the unscaled ones of Eq. (3), for which ``beta = 1/9`` keeps the
  same L1 regime for errors above ~0.1. ``beta = 0`` gives plain L1 (torchvision).
* **Normalisation**: class and box losses are sums over the whole batch divided by
  ``max(1, number of foreground anchors in the batch)`` (Detectron), so an image without
  objects contributes background terms only and its box loss is exactly 0.
* **Cross entropy on dense anchors** (``cls_loss``), Algorithm 1 line 10's ``CE``. Nothing
  in the cross entropy down-weights the confident, correct anchors, so a well-separated
  foreground anchor is pushed towards ``p -> 1``; the focal factor ``(1 - p_t)^gamma`` stops
  pushing long before, which is why focal scores stay low (the ``tau = 0.95`` of SSMD's
  Eq. (9) and the 0.9 of pseudo-labeling assume probabilities that reach such values).

  - ``"ce"`` (the one to use for Algorithm 1): softmax cross entropy summed over *every*
    non-ignored anchor and normalised by the foreground count, like the focal loss. What
    keeps it trainable on ~10^4-10^5 anchors per image is the head's prior initialisation
    (``prior_prob = 0.01``, Lin et al. Sec. 4.1 and Table 1a: CE with that initialisation
    trains RetinaNet), which makes the initial background loss ``-log 0.99`` per anchor,
    so background does not swamp the first steps; after that every anchor is a proper
    scoring-rule term, and the probabilities are calibrated to the real anchor prior.
    Measured on ``synthetic_cpu`` (20 % labels, 300 steps, validation part): expected
    calibration error of the detections 0.031 (focal: 0.100), median per-image maximum
    foreground probability 0.968 (focal 0.658; 67 % of the images above 0.95, focal 0 %),
    and test AP 0.148 (focal 0.119, one seed) — ``docs/experiments.md``.
  - ``"ce_ohem"``: the same cross entropy with SSD's hard negative mining (Liu et al.,
    *SSD*, Sec. 2.2): per image all foreground anchors and ``neg_pos_ratio`` (3) times as
    many background anchors with the largest loss (:func:`hard_negative_mask`; an image
    without foreground keeps ``neg_pos_ratio`` negatives), normalised by the foreground
    count. Offered because it is how SSD (one of SSMD's Table 10 detectors) trains a softmax
    classifier, but *not* calibrated on dense anchors: the easy negatives it never trains
    drift to the sampled 1:3 prior, so every anchor scores about 0.25 (same measurement:
    ECE 0.165, 98 % of Eq. (4)'s weight on background anchors, test AP 0.052).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss

__all__ = [
    "CLS_LOSSES",
    "Activation",
    "ClsLoss",
    "dense_detection_loss",
    "hard_negative_mask",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "softmax_focal_loss",
]

Activation = Literal["softmax", "sigmoid"]
ClsLoss = Literal["focal", "ce", "ce_ohem"]
CLS_LOSSES: tuple[str, ...] = ("focal", "ce", "ce_ohem")
"""Values of ``cls_loss`` (module docstring)."""

DEFAULT_ALPHA = 0.25
DEFAULT_GAMMA = 2.0
DEFAULT_BETA = 1.0 / 9.0
DEFAULT_NEG_POS_RATIO = 3.0


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al., Eq. (5)); torchvision's implementation.

    ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` where the target is 1
    and ``1 - p`` where it is 0; ``alpha_t = alpha`` / ``1 - alpha``. ``alpha < 0`` disables
    the weighting; ``gamma = 0`` gives (alpha-weighted) binary cross entropy.

    Args:
        logits: ``Tensor[..., K]`` one logit per foreground class.
        targets: ``Tensor[..., K]`` in ``[0, 1]`` (one-hot rows; all zero for background).

    Returns:
        ``Tensor[..., K]`` unreduced loss.
    """
    return _tv_sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")


def softmax_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
) -> Tensor:
    """Softmax focal loss over ``K + 1`` classes (index 0 = background).

    ``FL = -alpha_t (1 - p_t)^gamma log p_t`` where ``p_t = softmax(logits)[label]`` and
    ``alpha_t = alpha`` for ``label >= 1`` (foreground), ``1 - alpha`` for ``label == 0``.
    ``alpha < 0`` disables the weighting; ``gamma = 0`` gives (weighted) cross entropy.

    Args:
        logits: ``Tensor[..., K+1]``.
        labels: ``Tensor[...]`` int64 in ``0..K``. Callers mask ignored anchors themselves;
            negative labels are treated as background here and must be zero-weighted.

    Returns:
        ``Tensor[...]`` unreduced loss.
    """
    safe = labels.clamp(min=0)
    log_p = F.log_softmax(logits, dim=-1)  # (..., K+1)
    log_pt = log_p.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (...)
    loss = -log_pt
    if gamma != 0:
        loss = loss * (1.0 - log_pt.exp()).clamp(min=0).pow(gamma)
    if alpha >= 0:
        loss = loss * torch.where(safe > 0, alpha, 1.0 - alpha)
    return loss


@torch.no_grad()
def hard_negative_mask(
    loss: Tensor, anchor_labels: Tensor, neg_pos_ratio: float = DEFAULT_NEG_POS_RATIO
) -> Tensor:
    """SSD's hard negative mining: the anchors that count in the classification loss.

    Per image ``i`` with ``P_i`` foreground and ``N_i`` background anchors: every
    foreground anchor, and the ``min(N_i, ceil(neg_pos_ratio * max(P_i, 1)))`` background
    anchors with the largest ``loss`` (ties broken by anchor order). Ignored anchors
    (negative labels) are never kept.

    Args:
        loss: ``Tensor[B, N]`` per-anchor classification loss (only its order is used).
        anchor_labels: ``Tensor[B, N]`` int64, ``>= 1`` foreground, ``0`` background,
            negative ignored.
        neg_pos_ratio: background anchors kept per foreground anchor (SSD: 3).

    Returns:
        ``Tensor[B, N]`` bool.
    """
    if neg_pos_ratio <= 0:
        raise ValueError(f"hard negative mining neg_pos_ratio must be > 0, got {neg_pos_ratio}")
    fg = anchor_labels > 0  # (B, N)
    bg = anchor_labels == 0  # (B, N)
    num_fg = fg.sum(dim=1).clamp(min=1).to(torch.float64)  # (B,)
    num_neg = torch.minimum((neg_pos_ratio * num_fg).ceil().to(torch.int64), bg.sum(dim=1))  # (B,)
    neg_loss = torch.where(bg, loss.detach(), torch.full_like(loss, -torch.inf))  # (B, N)
    order = neg_loss.argsort(dim=1, descending=True, stable=True)  # (B, N)
    rank = order.argsort(dim=1, stable=True)  # (B, N): rank of each anchor's loss
    return fg | (bg & (rank < num_neg[:, None]))


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """Element-wise smooth L1 (Huber with slope 1): ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``.

    ``beta = 0`` is L1. Returns ``Tensor`` of the broadcast shape of the inputs.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1_loss beta must be >= 0, got {beta}")
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="none")


def dense_detection_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchor_labels: Tensor,
    box_targets: Tensor,
    *,
    activation: Activation = "softmax",
    cls_loss: ClsLoss = "focal",
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
    beta: float = DEFAULT_BETA,
    neg_pos_ratio: float = DEFAULT_NEG_POS_RATIO,
) -> dict[str, Tensor]:
    """Classification + box loss of Eq. (1) over all anchors of a batch.

    Args:
        cls_logits: ``Tensor[B, N, K+1]`` (``softmax``, index 0 = background) or
            ``Tensor[B, N, K]`` (``sigmoid``), flattened over levels in anchor order.
        box_deltas: ``Tensor[B, N, 2D]`` predicted Eq. (3) deltas.
        anchor_labels: ``Tensor[B, N]`` int64: ``1..K`` foreground, ``0`` background,
            negative ignored (no loss at all).
        box_targets: ``Tensor[B, N, 2D]`` encoded targets; read only where the label is
            ``>= 1`` but must be finite everywhere.
        activation: ``"softmax"`` or ``"sigmoid"``.
        cls_loss: ``"focal"``, ``"ce"`` (cross entropy of Eq. (1) over every anchor; binary
            cross entropy for ``sigmoid``) or ``"ce_ohem"`` (cross entropy with SSD's hard
            negative mining, softmax only; module docstring).
        alpha: focal ``alpha`` (foreground weight; background gets ``1 - alpha``).
        gamma: focal ``gamma``.
        beta: smooth-L1 ``beta`` (module docstring).
        neg_pos_ratio: background anchors per foreground anchor kept by ``"ce_ohem"``.

    Returns:
        ``{"loss_cls", "loss_box"}`` scalars, each a batch sum divided by
        ``max(1, #foreground anchors)``. With no foreground anchor ``loss_box`` is exactly 0
        (and still attached to the graph).
    """
    if cls_logits.shape[:2] != anchor_labels.shape or box_deltas.shape != box_targets.shape:
        raise ValueError(
            "dense_detection_loss shape mismatch: "
            f"cls_logits {tuple(cls_logits.shape)}, anchor_labels {tuple(anchor_labels.shape)}, "
            f"box_deltas {tuple(box_deltas.shape)}, box_targets {tuple(box_targets.shape)}"
        )
    fg = anchor_labels > 0  # (B, N)
    valid = (anchor_labels >= 0).to(cls_logits.dtype)  # (B, N)
    normaliser = fg.sum().clamp(min=1).to(cls_logits.dtype)

    if activation == "softmax":
        if cls_loss == "focal":
            per_anchor = softmax_focal_loss(cls_logits, anchor_labels, alpha, gamma)  # (B, N)
        elif cls_loss in ("ce", "ce_ohem"):
            per_anchor = F.cross_entropy(
                cls_logits.flatten(0, 1), anchor_labels.clamp(min=0).flatten(), reduction="none"
            ).view_as(valid)  # (B, N)
            if cls_loss == "ce_ohem":
                kept = hard_negative_mask(per_anchor, anchor_labels, neg_pos_ratio)  # (B, N)
                valid = kept.to(cls_logits.dtype)
        else:
            raise ValueError(f"cls_loss must be one of {CLS_LOSSES}, got {cls_loss!r}")
    elif activation == "sigmoid":
        num_fg_classes = cls_logits.shape[-1]
        onehot = F.one_hot(anchor_labels.clamp(min=0), num_fg_classes + 1)[..., 1:]  # (B, N, K)
        onehot = onehot.to(cls_logits.dtype)
        if cls_loss == "focal":
            elementwise = sigmoid_focal_loss(cls_logits, onehot, alpha, gamma)  # (B, N, K)
        elif cls_loss == "ce":
            elementwise = F.binary_cross_entropy_with_logits(cls_logits, onehot, reduction="none")
        else:
            raise ValueError(
                f"cls_loss must be 'focal' or 'ce' with sigmoid outputs, got {cls_loss!r}"
            )
        per_anchor = elementwise.sum(dim=-1)  # (B, N)
    else:
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")

    loss_cls = (per_anchor * valid).sum() / normaliser
    box = smooth_l1_loss(box_deltas, box_targets, beta=beta).sum(dim=-1)  # (B, N)
    loss_box = (box * fg.to(box.dtype)).sum() / normaliser
    return {"loss_cls": loss_cls, "loss_box": loss_box}
