"""The one box convention of ssmd, and every conversion to and from it.

Convention: ``xyxy`` in absolute pixel coordinates (voxels in 3D), ``float32``.
A 2D box is ``(x1, y1, x2, y2)``; a 3D box is ``(x1, y1, z1, x2, y2, z2)``. The
number of spatial dimensions is ``boxes.shape[-1] // 2``, so every function here
serves 2D and 3D alike where the math is the same. ``x2``/``y2`` are exclusive
edges: a mask whose nonzero pixels span columns ``c0..c1`` has ``x1 = c0`` and
``x2 = c1 + 1`` (so its width is the pixel count), the convention pycocotools uses
for ``bbox = [x, y, w, h]``.

All other formats (COCO ``xywh``, ``cxcywh``) are converted here and nowhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms as _tv_batched_nms

__all__ = [
    "BOX_FORMAT",
    "batched_nms",
    "box_area",
    "box_iou",
    "boxes_from_masks",
    "clip_boxes",
    "cxcywh_to_xyxy",
    "nondegenerate",
    "spatial_dims_of",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

BOX_FORMAT = "xyxy"


def spatial_dims_of(boxes: Tensor) -> int:
    """Number of spatial dimensions of ``boxes`` (``Tensor[..., 2 * D]``)."""
    last = boxes.shape[-1]
    if last not in (4, 6):
        raise ValueError(
            f"boxes must have 4 (2D) or 6 (3D) coordinates, got shape {tuple(boxes.shape)}"
        )
    return last // 2


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x, y, w, h[, z, d])``-style corner+size boxes to ``xyxy``.

    For 3D the input is ``(x, y, z, w, h, d)``.
    """
    d = spatial_dims_of(boxes)
    lo, size = boxes[..., :d], boxes[..., d:]
    return torch.cat([lo, lo + size], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``xyxy`` to corner+size ``(x, y, w, h)`` (COCO ``bbox``); 3D: ``(x, y, z, w, h, d)``."""
    d = spatial_dims_of(boxes)
    lo, hi = boxes[..., :d], boxes[..., d:]
    return torch.cat([lo, hi - lo], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``xyxy`` to centre+size ``(cx, cy, w, h)``; 3D: ``(cx, cy, cz, w, h, d)``."""
    d = spatial_dims_of(boxes)
    lo, hi = boxes[..., :d], boxes[..., d:]
    return torch.cat([(lo + hi) / 2, hi - lo], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Centre+size boxes to ``xyxy``."""
    d = spatial_dims_of(boxes)
    c, size = boxes[..., :d], boxes[..., d:]
    return torch.cat([c - size / 2, c + size / 2], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area (volume in 3D) of ``xyxy`` boxes ``Tensor[N, 2D]`` -> ``Tensor[N]``; negative sizes count as 0."""
    d = spatial_dims_of(boxes)
    return (boxes[..., d:] - boxes[..., :d]).clamp(min=0).prod(dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``xyxy`` boxes ``Tensor[N, 2D]`` and ``Tensor[M, 2D]`` -> ``Tensor[N, M]``.

    Works for 2D and 3D. Pairs with zero union get IoU 0.
    """
    d = spatial_dims_of(a)
    if spatial_dims_of(b) != d:
        raise ValueError(f"cannot compare {d}D boxes with {spatial_dims_of(b)}D boxes")
    lo = torch.maximum(a[:, None, :d], b[None, :, :d])  # (N, M, D)
    hi = torch.minimum(a[:, None, d:], b[None, :, d:])  # (N, M, D)
    inter = (hi - lo).clamp(min=0).prod(dim=-1)  # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def clip_boxes(boxes: Tensor, size: tuple[int, ...]) -> Tensor:
    """Clip ``xyxy`` boxes to an image of spatial ``size`` given as ``(H, W)`` or ``(D, H, W)``.

    ``size`` follows tensor order (rows first) while boxes are ``x`` first, so the
    limits are reversed here once.
    """
    d = spatial_dims_of(boxes)
    if len(size) != d:
        raise ValueError(f"size {size} does not match {d}D boxes")
    limits = torch.tensor(
        list(reversed(size)), dtype=boxes.dtype, device=boxes.device
    )  # (W, H[, D])
    lo = torch.minimum(boxes[..., :d].clamp(min=0), limits)
    hi = torch.minimum(boxes[..., d:].clamp(min=0), limits)
    return torch.cat([lo, hi], dim=-1)


def nondegenerate(boxes: Tensor, min_size: float = 1.0) -> Tensor:
    """Boolean mask ``Tensor[N]`` of boxes whose every side is at least ``min_size`` pixels."""
    d = spatial_dims_of(boxes)
    return ((boxes[..., d:] - boxes[..., :d]) >= min_size).all(dim=-1)


def boxes_from_masks(masks: Tensor, spatial_dims: int = 2) -> Tensor:
    """Tight ``xyxy`` boxes of binary masks ``Tensor[N, *spatial]`` -> ``Tensor[N, 2 * D]`` float32.

    2D masks are ``(N, H, W)`` and give ``(x1, y1, x2, y2)``; 3D masks (``spatial_dims=3``)
    are ``(N, D, H, W)`` and give ``(x1, y1, z1, x2, y2, z2)`` (``x`` along ``W``, ``z``
    along ``D``). ``x2 = last nonzero column + 1`` (see the module docstring). Every mask
    must have at least one nonzero pixel; callers validate and name the file first.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"boxes_from_masks spatial_dims = {spatial_dims}: expected 2 or 3")
    if masks.ndim != spatial_dims + 1:
        want = "(N, H, W)" if spatial_dims == 2 else "(N, D, H, W)"
        raise ValueError(
            f"masks must be {want} for spatial_dims={spatial_dims}, got shape {tuple(masks.shape)}"
        )
    if masks.shape[0] == 0:
        return torch.zeros((0, 2 * spatial_dims), dtype=torch.float32)
    m = masks.bool()
    if not bool(m.flatten(1).any(dim=1).all()):
        raise ValueError("boxes_from_masks got an all-empty mask")
    lo: list[Tensor] = []
    hi: list[Tensor] = []
    for k in range(spatial_dims):  # box axis k (x, y, z) is tensor dim -1 - k
        dim = masks.ndim - 1 - k
        others = [d for d in range(1, masks.ndim) if d != dim]
        along = m.any(dim=tuple(others))  # (N, S_k)
        n = int(m.shape[dim])
        ar = torch.arange(n)
        lo.append(torch.where(along, ar, n).min(dim=1).values)
        hi.append(torch.where(along, ar, -1).max(dim=1).values + 1)
    return torch.stack(lo + hi, dim=1).to(torch.float32)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-wise greedy NMS of ``xyxy`` boxes ``Tensor[N, 2D]``, 2D or 3D.

    2D boxes go to :func:`torchvision.ops.batched_nms` (same result, compiled). 3D boxes
    (``x1 y1 z1 x2 y2 z2``, which torchvision's NMS cannot take) are visited by decreasing
    score; a box is kept unless a kept box of its label has IoU ``> iou_threshold`` with it
    (torchvision's rule), using :func:`box_iou` on one ``(N, N)`` matrix.

    Args:
        boxes: ``Tensor[N, 2D]``.
        scores: ``Tensor[N]``.
        labels: ``Tensor[N]`` integer classes (boxes of different labels never suppress
            each other).
        iou_threshold: boxes overlapping a kept one by more than this are dropped.

    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, by decreasing score.
    """
    d = spatial_dims_of(boxes)
    if d == 2:
        return _tv_batched_nms(boxes, scores, labels, iou_threshold)
    n = int(boxes.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    b, lab = boxes[order], labels[order]
    over = (box_iou(b, b) > iou_threshold) & (lab[:, None] == lab[None, :])  # (N, N)
    removed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    over_cpu = over.cpu()
    removed_cpu = removed.cpu()
    kept: list[int] = []
    for i in range(n):
        if removed_cpu[i]:
            continue
        kept.append(i)
        removed_cpu |= over_cpu[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=boxes.device)]
