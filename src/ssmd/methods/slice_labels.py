"""Slice-level label propagation and missing ground-truth mining (the LP paper, Algorithms 1 and 2).

"Semi-supervised lesion detection with reliable label propagation and missing label mining"
(``shared/papers/ct-slice-label-propagation-missing-gt-mining.txt``). In CT datasets such as
DeepLesion only the key slice of a lesion is boxed, and some lesions of a key slice are not
boxed at all. Both algorithms use a detector trained on the key slices; both are pure
functions on boxes here (``xyxy`` pixels, one image's boxes as ``Tensor[N, 4]``), and the
recipe that trains, predicts, applies them and retrains is :mod:`ssmd.tasks.ct_slices`.

* :func:`propagate_labels` — **Algorithm 1**: the detector's boxes on a slice adjacent to a
  labeled slice whose IoU with one of that slice's ground-truth boxes is ``> tau`` become the
  adjacent slice's labels (lines 7-13; a box matching several ground-truth boxes is appended
  once). Done for the upper and the lower slice (line 15).
* :func:`mine_missing` — **Algorithm 2**: on a key slice, a prediction with score ``> alpha``
  that overlaps (IoU ``> tau``) a prediction on the slice above or below is kept (lines 8-14);
  a pair of predictions, above and below, with IoU ``> tau`` to each other, both scores
  ``> alpha``, and IoU 0 with every key-slice prediction, adds their coordinate average
  (lines 15-23); every candidate with IoU ``> 0`` with a ground-truth box is deleted
  (lines 24-28); the result joined with the ground truth is the key slice's new label set
  (line 29). The predictions come from the test-time ensemble of Sec. 3.2 (multi-scale +
  horizontal flip, :func:`ssmd.models.tta.ensemble_predict`).

Where the listing is silent: line 10 puts no score condition on the adjacent box
(``adjacent_score=0`` keeps it so; the text's "more than one corresponding box" is read as
"at least one"); lines 16-18 name one lower box ``b^{k-1}`` — we take, among the lower boxes
with score ``> alpha`` and IoU ``> tau``, the one of highest IoU; the averaged box's score is
the mean of the two. :class:`SliceLabels` (``method.name=label_propagation``) is the
retraining step: plain supervised training on the augmented labels, the recipe's job being
everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ssmd.methods.base import METHODS
from ssmd.methods.supervised import Supervised
from ssmd.structures.boxes import box_iou

__all__ = ["MinedBoxes", "SliceLabels", "mine_missing", "propagate_labels"]

KEY = "key"
AVERAGE = "average"


def _check(name: str, boxes: Tensor, scores: Tensor | None = None) -> None:
    if boxes.ndim != 2 or int(boxes.shape[1]) != 4:
        raise ValueError(f"{name}: boxes must be (N, 4) xyxy, got {tuple(boxes.shape)}")
    if scores is not None and tuple(scores.shape) != (int(boxes.shape[0]),):
        raise ValueError(f"{name}: scores must be ({boxes.shape[0]},), got {tuple(scores.shape)}")


def _iou(a: Tensor, b: Tensor) -> Tensor:
    if len(a) == 0 or len(b) == 0:
        return a.new_zeros((len(a), len(b)))
    return box_iou(a.float(), b.float())  # (len(a), len(b))


def propagate_labels(
    gt_boxes: Tensor, pred_boxes: Tensor, tau: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Algorithm 1, lines 7-13, for one adjacent slice.

    Args:
        gt_boxes: ``Tensor[O, 4]`` ground truth of the labeled slice ``x_i``.
        pred_boxes: ``Tensor[M, 4]`` the detector's boxes on the adjacent slice ``x~_i``.
        tau: IoU threshold (strict, ``IOU > tau``; 0.5 in the paper).

    Returns:
        ``(keep, matched)``: indices into ``pred_boxes`` of the propagated boxes (``Tensor[M']``
        int64, in prediction order) and the ground-truth box each overlaps most.
    """
    _check("propagate_labels gt_boxes", gt_boxes)
    _check("propagate_labels pred_boxes", pred_boxes)
    iou = _iou(pred_boxes, gt_boxes)  # (M, O)
    if iou.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    best, arg = iou.max(dim=1)
    keep = torch.nonzero(best > tau).flatten()
    return keep, arg[keep]


@dataclass(frozen=True)
class MinedBoxes:
    """Output of :func:`mine_missing` for one key slice.

    Attributes:
        boxes: ``Tensor[N, 4]`` mined boxes (not the ground truth), xyxy.
        scores: ``Tensor[N]``.
        sources: per box ``"key"`` (a key-slice prediction confirmed by a neighbour) or
            ``"average"`` (mean of an upper and a lower box missing on the key slice).
        origins: per box the prediction indices it came from: ``(key_index,)`` or
            ``(upper_index, lower_index)``.
        deleted: candidates removed for overlapping the ground truth (lines 24-28).
    """

    boxes: Tensor
    scores: Tensor
    sources: list[str]
    origins: list[tuple[int, ...]]
    deleted: int

    def labels_with(self, gt_boxes: Tensor) -> Tensor:
        """Line 29: ``y~_i = y~_i ∪ G_i`` (ground truth first), ``Tensor[M + N, 4]``."""
        return torch.cat([gt_boxes.float().reshape(-1, 4), self.boxes], dim=0)


def mine_missing(
    gt_boxes: Tensor,
    key: tuple[Tensor, Tensor],
    upper: tuple[Tensor, Tensor],
    lower: tuple[Tensor, Tensor],
    alpha: float = 0.9,
    tau: float = 0.5,
    adjacent_score: float = 0.0,
) -> MinedBoxes:
    """Algorithm 2, lines 3-28, for one key slice (module docstring).

    Args:
        gt_boxes: ``Tensor[M, 4]`` ground truth ``G_i`` of the key slice.
        key: ``(boxes Tensor[O, 4], scores Tensor[O])`` predicted on the key slice ``x^k``.
        upper: the same on ``x^{k+1}``.
        lower: the same on ``x^{k-1}``.
        alpha: score threshold (strict; 0.9 in the paper).
        tau: IoU threshold (strict; 0.5).
        adjacent_score: minimum score of the neighbour box that confirms a key-slice box
            (line 10 sets none: 0).

    Returns:
        :class:`MinedBoxes`.
    """
    for name, (b, s) in (("key", key), ("upper", upper), ("lower", lower)):
        _check(f"mine_missing {name}", b, s)
    _check("mine_missing gt_boxes", gt_boxes)
    kb, ks = key[0].float(), key[1].float()
    ub, us = upper[0].float(), upper[1].float()
    lb, ls = lower[0].float(), lower[1].float()
    boxes: list[Tensor] = []
    scores: list[float] = []
    sources: list[str] = []
    origins: list[tuple[int, ...]] = []
    # lines 8-14: confident key-slice boxes confirmed on an adjacent slice
    adj = torch.cat([ub[us > adjacent_score], lb[ls > adjacent_score]], dim=0)  # (P', 4)
    confirm = _iou(kb, adj)  # (O, P')
    for j in range(len(kb)):
        if float(ks[j]) > alpha and bool((confirm[j] > tau).any()):
            boxes.append(kb[j])
            scores.append(float(ks[j]))
            sources.append(KEY)
            origins.append((j,))
    # lines 15-23: present above and below, absent on the key slice -> the average
    ul = _iou(ub, lb)  # (P, Q)
    uk = _iou(ub, kb)  # (P, O)
    for p in range(len(ub)):
        if float(us[p]) <= alpha or bool((uk[p] > 0).any()):
            continue
        ok = (ul[p] > tau) & (ls > alpha) if len(lb) else torch.zeros(0, dtype=torch.bool)
        if not bool(ok.any()):
            continue
        q = int(torch.where(ok, ul[p], torch.full_like(ul[p], -1.0)).argmax())
        boxes.append((ub[p] + lb[q]) / 2)
        scores.append((float(us[p]) + float(ls[q])) / 2)
        sources.append(AVERAGE)
        origins.append((p, q))
    # lines 24-28: delete candidates that overlap the ground truth
    cand = torch.stack(boxes) if boxes else torch.zeros((0, 4))
    overlap = (_iou(cand, gt_boxes.float().reshape(-1, 4)) > 0).any(dim=1)  # (N,)
    keep = [i for i in range(len(boxes)) if not bool(overlap[i])]
    return MinedBoxes(
        boxes=cand[keep] if keep else torch.zeros((0, 4)),
        scores=torch.tensor([scores[i] for i in keep], dtype=torch.float32),
        sources=[sources[i] for i in keep],
        origins=[origins[i] for i in keep],
        deleted=len(boxes) - len(keep),
    )


@METHODS.register("label_propagation")
class SliceLabels(Supervised):
    """Retraining on key slices plus propagated / mined labels (the LP paper's last step).

    ``ssmd train ... method.name=label_propagation`` runs the recipe ``ct_slices``
    (:mod:`ssmd.tasks.ct_slices`): train -> propagate (Algorithm 1) and / or mine
    (Algorithm 2) -> retrain; this class is the retraining, the detector's own loss on the
    augmented labeled set (Eq. (1) of the SSMD paper). Its parameters are the recipe's.
    """

    recipe: ClassVar[str | None] = "ct_slices"
    defaults: ClassVar[dict[str, Any]] = {
        "propagate": True,  # Algorithm 1
        "mine": False,  # Algorithm 2
        "distill": False,  # the paper's data-distillation baseline on the neighbour slices
        "distill_threshold": 0.9,
        "tau": 0.5,
        "alpha": 0.9,
        "adjacent_score": 0.0,
        "neighbour_offsets": [1],  # slices above and below that Algorithm 1 labels
        "tta_scales": [0.8, 1.0, 1.2],
        "tta_hflip": True,
        "tta_nms": 0.5,
        "num_neighbors": 4,  # k: 2k + 1 channels per sample
        "n_series": 40,  # synthetic_slices: series generated
        "unannotated_fraction": 0.3,  # synthetic_slices: lesions of train series left out
        "stage1_dir": None,
    }

    def __init__(self, model: torch.nn.Module, **params: Any) -> None:
        super().__init__(model)
        self.params = dict(params)
