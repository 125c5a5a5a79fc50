"""Losses: supervised detection losses (Eq. (1)); consistency losses come with the SSL methods."""

from __future__ import annotations

from ssmd.losses.detection import (
    dense_detection_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
)

__all__ = ["dense_detection_loss", "sigmoid_focal_loss", "smooth_l1_loss", "softmax_focal_loss"]
