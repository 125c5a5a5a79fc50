"""Anchor-relative box encoding, Eq. (3) of the SSMD paper.

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy`` absolute pixels, ``Tensor[..., 2 * D]``
(``D = 2`` for images, ``3`` for volumes). Deltas are ordered centre offsets first, then
log-sizes: ``(dx, dy[, dz], dw, dh[, dd])`` — the order of torchvision's ``BoxCoder`` in 2D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ssmd.structures.boxes import spatial_dims_of

__all__ = ["DEFAULT_SIZE_CLIP", "BoxCoder"]

DEFAULT_SIZE_CLIP = math.log(1000.0 / 16)
"""Upper clamp of the decoded log-size ratio, as in torchvision/Detectron, against ``exp`` overflow."""


class BoxCoder:
    """Encode ground-truth boxes relative to anchors and decode predicted deltas.

    Implements Eq. (3) of the SSMD paper on centres ``(x, y)`` and sizes ``(w, h)``::

        p_x = w_x * (x - x_a) / w_a      p_w = w_w * log(w / w_a)
        p_y = w_y * (y - y_a) / h_a      p_h = w_h * log(h / h_a)

    with optional per-coordinate ``weights`` (default all 1, i.e. exactly Eq. (3)). The
    same formula applies along ``z`` for 3D boxes.

    Args:
        weights: ``2 * D`` multipliers ``(w_x, w_y[, w_z], w_w, w_h[, w_d])``; the length
            fixes the spatial dimensionality the coder accepts.
        size_clip: decoded ``log(w / w_a)`` (after dividing by its weight) is clamped to
            at most this value; default ``log(1000 / 16)``.
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        size_clip: float = DEFAULT_SIZE_CLIP,
    ) -> None:
        if len(weights) not in (4, 6):
            raise ValueError(
                f"BoxCoder weights must have 4 (2D) or 6 (3D) entries, got {tuple(weights)}"
            )
        if any(w <= 0 for w in weights):
            raise ValueError(f"BoxCoder weights must be positive, got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.spatial_dims = len(weights) // 2
        self.size_clip = float(size_clip)

    def _weights(self, ref: Tensor) -> Tensor:
        return torch.tensor(self.weights, dtype=ref.dtype, device=ref.device)  # (2D,)

    def _check(self, t: Tensor, what: str) -> None:
        if spatial_dims_of(t) != self.spatial_dims:
            raise ValueError(
                f"BoxCoder built for {self.spatial_dims}D got {what} of shape {tuple(t.shape)}"
            )

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets of ``boxes`` w.r.t. ``anchors`` (Eq. (3)).

        Args:
            boxes: ``Tensor[..., 2D]`` ``xyxy`` target boxes with positive sizes.
            anchors: ``Tensor[..., 2D]`` ``xyxy`` anchors, broadcastable against ``boxes``.

        Returns:
            ``Tensor[..., 2D]`` deltas ``(dx, dy[, dz], dw, dh[, dd])``.
        """
        self._check(boxes, "boxes")
        self._check(anchors, "anchors")
        d = self.spatial_dims
        w = self._weights(boxes)
        a_size = anchors[..., d:] - anchors[..., :d]  # (..., D)
        a_ctr = anchors[..., :d] + 0.5 * a_size  # (..., D)
        b_size = boxes[..., d:] - boxes[..., :d]  # (..., D)
        b_ctr = boxes[..., :d] + 0.5 * b_size  # (..., D)
        d_ctr = w[:d] * (b_ctr - a_ctr) / a_size  # (..., D)
        d_size = w[d:] * torch.log(b_size / a_size)  # (..., D)
        return torch.cat([d_ctr, d_size], dim=-1)  # (..., 2D)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from ``deltas`` relative to ``anchors`` (inverse of :meth:`encode`).

        Args:
            deltas: ``Tensor[..., 2D]`` predicted ``(dx, dy[, dz], dw, dh[, dd])``.
            anchors: ``Tensor[..., 2D]`` ``xyxy`` anchors, broadcastable against ``deltas``.

        Returns:
            ``Tensor[..., 2D]`` ``xyxy`` boxes, absolute pixels. Not clipped to the image.
        """
        self._check(deltas, "deltas")
        self._check(anchors, "anchors")
        d = self.spatial_dims
        w = self._weights(deltas)
        anchors = anchors.to(deltas.dtype)
        a_size = anchors[..., d:] - anchors[..., :d]  # (..., D)
        a_ctr = anchors[..., :d] + 0.5 * a_size  # (..., D)
        ctr = deltas[..., :d] / w[:d] * a_size + a_ctr  # (..., D)
        log_ratio = (deltas[..., d:] / w[d:]).clamp(max=self.size_clip)  # (..., D)
        size = torch.exp(log_ratio) * a_size  # (..., D)
        return torch.cat([ctr - 0.5 * size, ctr + 0.5 * size], dim=-1)  # (..., 2D)
