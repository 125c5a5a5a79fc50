"""IoU-based anchor-to-ground-truth assignment (RetinaNet's rule).

Matches the semantics of torchvision's ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``
with one guard added: a ground truth that overlaps no anchor at all (best IoU 0) does not
claim the anchors it has IoU 0 with.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BACKGROUND", "IGNORE", "Matcher"]

BACKGROUND = -1
"""Matcher code of an anchor whose best IoU is below the background threshold."""
IGNORE = -2
"""Matcher code of an anchor between the thresholds: contributes to no loss."""


class Matcher:
    """Assign every anchor the index of a ground-truth box, ``BACKGROUND`` or ``IGNORE``.

    For each anchor take the ground truth with the highest IoU ``v``:

    * ``v >= fg_iou_thresh`` — foreground, matched to that ground truth;
    * ``v < bg_iou_thresh`` — ``BACKGROUND`` (``-1``);
    * otherwise — ``IGNORE`` (``-2``).

    With ``allow_low_quality_matches``, every ground truth additionally claims the anchors
    with which it has its own highest IoU (all of them when tied) if that IoU is positive;
    such an anchor is matched to its best ground truth (torchvision's rule), so no object is
    left without a positive anchor.

    Args:
        fg_iou_thresh: foreground threshold (RetinaNet: 0.5).
        bg_iou_thresh: background threshold (RetinaNet: 0.4); must be ``<= fg_iou_thresh``.
        allow_low_quality_matches: see above.
    """

    def __init__(
        self,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        allow_low_quality_matches: bool = True,
    ) -> None:
        if bg_iou_thresh > fg_iou_thresh:
            raise ValueError(
                f"Matcher needs bg_iou_thresh <= fg_iou_thresh, got {bg_iou_thresh} > {fg_iou_thresh}"
            )
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tensor:
        """Match anchors to ground truths.

        Args:
            iou: ``Tensor[G, A]`` IoU of each of ``G`` ground-truth boxes with each of ``A`` anchors.
                ``G = 0`` is valid (an image without objects).

        Returns:
            ``Tensor[A]`` int64: the matched ground-truth index in ``0..G-1``, ``BACKGROUND``
            (``-1``) or ``IGNORE`` (``-2``).
        """
        if iou.ndim != 2:
            raise ValueError(f"Matcher expects an IoU matrix (G, A), got shape {tuple(iou.shape)}")
        num_anchors = iou.shape[1]
        if iou.shape[0] == 0:
            return torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=iou.device)
        best_iou, best_gt = iou.max(dim=0)  # (A,), (A,)
        matches = best_gt.clone()
        matches[best_iou < self.fg_iou_thresh] = IGNORE
        matches[best_iou < self.bg_iou_thresh] = BACKGROUND
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (G, 1)
            is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (G, A)
            claimed = is_best.any(dim=0)  # (A,)
            matches = torch.where(claimed, best_gt, matches)
        return matches
