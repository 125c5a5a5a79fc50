"""Raw per-level outputs of a dense detector, and their flat per-anchor order.

:class:`DenseOutputs` is what :meth:`ssmd.models.detectors.retinanet.RetinaNet.forward`
returns and what every consistency loss (:mod:`ssmd.losses.consistency`) compares; it lives
here, below both ``models`` and ``losses``, so that neither imports the other for it.

**Flat order.** :meth:`DenseOutputs.flat_cls_logits` / :meth:`DenseOutputs.flat_box_deltas`
concatenate the levels ``P3..P7``; within a level the index is ``(y * W_l + x) * A + a``
(``dense.permute(0, 3, 4, 1, 2)``), the order of the detector's anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DenseOutputs", "flatten_levels"]


def flatten_levels(maps: Sequence[Tensor]) -> Tensor:
    """Concatenate per-level dense maps into per-anchor rows, in anchor order.

    Args:
        maps: per level ``Tensor[B, A, C, *S_l]`` with ``S_l = (H_l, W_l)`` (or ``(D_l, H_l, W_l)``).

    Returns:
        ``Tensor[B, sum_l prod(S_l) * A, C]``; row ``(y * W_l + x) * A + a`` of level ``l``
        (after the rows of the finer levels) is ``maps[l][:, a, :, y, x]``.
    """
    rows = []
    for m in maps:
        b, _, c = m.shape[:3]
        spatial = tuple(range(3, m.ndim))
        rows.append(m.permute(0, *spatial, 1, 2).reshape(b, -1, c))  # (B, HWA, C)
    return torch.cat(rows, dim=1)  # (B, N, C)


@dataclass
class DenseOutputs:
    """Raw per-level predictions of a dense detector for one batch.

    Attributes:
        cls_logits: per level ``Tensor[B, A, C', H_l, W_l]``; ``C' = K + 1`` (softmax, index
            0 = background) or ``K`` (sigmoid).
        box_deltas: per level ``Tensor[B, A, 4, H_l, W_l]``, Eq. (3) deltas ``(dx, dy, dw, dh)``.
        image_size: ``(H, W)`` of the (padded) input batch.
    """

    cls_logits: list[Tensor]
    box_deltas: list[Tensor]
    image_size: tuple[int, ...]

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.cls_logits)

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.cls_logits[0].shape[0])

    @property
    def feature_sizes(self) -> list[tuple[int, ...]]:
        """``(H_l, W_l)`` of each level."""
        return [tuple(int(s) for s in m.shape[3:]) for m in self.cls_logits]

    def flat_cls_logits(self) -> Tensor:
        """``Tensor[B, N, C']``, ``N = sum_l H_l W_l A``, in anchor order (module docstring)."""
        return flatten_levels(self.cls_logits)

    def flat_box_deltas(self) -> Tensor:
        """``Tensor[B, N, 4]`` in anchor order."""
        return flatten_levels(self.box_deltas)

    def rows(self, start: int, stop: int) -> DenseOutputs:
        """The predictions of images ``start:stop`` of the batch (the detector contract)."""
        return DenseOutputs(
            [t[start:stop] for t in self.cls_logits],  # (B', A, C', H_l, W_l)
            [t[start:stop] for t in self.box_deltas],  # (B', A, 4, H_l, W_l)
            self.image_size,
        )

    def detach(self) -> DenseOutputs:
        """A copy whose tensors are detached from the graph (e.g. teacher predictions)."""
        return DenseOutputs(
            [t.detach() for t in self.cls_logits],
            [t.detach() for t in self.box_deltas],
            self.image_size,
        )

    def hflip(self) -> DenseOutputs:
        """The predictions re-indexed as if made on the horizontally flipped image.

        Position ``x`` moves to ``W_l - 1 - x`` on every level and ``dx`` changes sign
        (sizes and the other offsets are unchanged), so that for a mirror-symmetric anchor
        grid (input width a multiple of the largest stride) the boxes decoded from the result
        are the mirror images of the boxes decoded from ``self``. This is the transform CSD
        and SSMD apply before comparing an image's and its flip's dense maps.
        """
        ref = self.box_deltas[0]
        sign = torch.ones(ref.shape[2], dtype=ref.dtype, device=ref.device)  # (2D,)
        sign[0] = -1.0  # dx
        view = (1, 1, -1) + (1,) * (ref.ndim - 3)  # broadcast over (B, A, 2D, H, W)
        return DenseOutputs(
            [t.flip(-1) for t in self.cls_logits],
            [t.flip(-1) * sign.view(view) for t in self.box_deltas],  # (B, A, 4, H, W)
            self.image_size,
        )
