"""Sliding-window detection over whole volumes (2D tiles' rule, in N-D).

The volume is covered by overlapping patches (:func:`ssmd.models.inferers.tile_starts` per
axis); each patch is predicted on its own (its boxes clipped to the unpadded patch), boxes are
shifted back to volume voxels, and a box is kept only from the patch that *owns* its centre
(overlaps are split at their midlines, :func:`ssmd.models.inferers._owned_range`), so an
object seen by several patches is counted once when the overlap is at least its size; a
final class-wise 3D NMS (:func:`ssmd.structures.boxes.batched_nms`) merges what remains.

MONAI's ``sliding_window_inference`` blends *dense maps* of neighbouring windows; a
detector's anchors are per-window, so MONAI's own ``RetinaNetDetector`` needs a special
head-output merging for it. Boxes are merged here instead -- the rule 2D tiling already uses
(:func:`ssmd.models.inferers.tiled_predict`) -- which needs nothing of the detector but
``predict``.

Boxes are ``xyxy`` voxels ``(x1, y1, z1, x2, y2, z2)``; volumes ``Tensor[C, D, H, W]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmd.models.inferers import _owned_range, tile_starts
from ssmd.structures.boxes import batched_nms

__all__ = ["sliding_window_detect"]


def _triple(v: int | Sequence[int], name: str) -> tuple[int, int, int]:
    t = [int(v)] * 3 if isinstance(v, int) else [int(x) for x in v]
    if len(t) != 3:
        raise ValueError(f"{name} = {v!r}: need one int or three (D, H, W)")
    return t[0], t[1], t[2]


@torch.no_grad()
def sliding_window_detect(
    model: nn.Module,
    volume: Tensor,
    patch_size: int | Sequence[int],
    overlap: int | Sequence[int],
    batch_size: int = 2,
    nms_thresh: float = 0.1,
    detections: int = 100,
    pad_to: int = 16,
) -> dict[str, Tensor]:
    """Detections of ``model`` on one ``Tensor[C, D, H, W]`` volume, patch by patch.

    Args:
        model: a 3D detector with ``predict(images, image_sizes)`` (eval mode is the
            caller's business).
        volume: the normalised volume.
        patch_size: ``(D, H, W)`` of a patch, multiples of ``pad_to``.
        overlap: minimum overlap of neighbouring patches per axis (at least the largest
            object's size in voxels).
        batch_size: patches per forward pass.
        nms_thresh: IoU of the final class-wise 3D NMS.
        detections: cap on the merged detections (highest scores kept).
        pad_to: patches at the end of a volume smaller than ``patch_size`` are zero-padded
            to a multiple of this (the detector's coarsest stride).

    Returns:
        ``{"boxes": Tensor[M, 6] volume voxels, "scores": Tensor[M], "labels": Tensor[M]}``,
        sorted by score.
    """
    if volume.dim() != 4:
        raise ValueError(
            f"sliding_window_detect takes one (C, D, H, W) volume, got {tuple(volume.shape)}"
        )
    patch = _triple(patch_size, "patch_size")
    over = _triple(overlap, "overlap")
    if any(p % pad_to for p in patch):
        raise ValueError(f"patch_size = {patch}: every side must be a multiple of {pad_to}")
    size = tuple(int(s) for s in volume.shape[1:])  # (D, H, W)
    starts = [tile_starts(size[a], patch[a], over[a]) for a in range(3)]
    windows: list[tuple[tuple[int, int, int], list[tuple[float, float]]]] = []
    for idx in itertools.product(*(range(len(s)) for s in starts)):
        origin = (starts[0][idx[0]], starts[1][idx[1]], starts[2][idx[2]])  # (z, y, x)
        owned = [_owned_range(starts[a], idx[a], patch[a], size[a]) for a in range(3)]
        windows.append((origin, owned))
    boxes_all: list[Tensor] = []
    scores_all: list[Tensor] = []
    labels_all: list[Tensor] = []
    for begin in range(0, len(windows), batch_size):
        chunk = windows[begin : begin + batch_size]
        crops = [
            volume[:, z : z + patch[0], y : y + patch[1], x : x + patch[2]]
            for (z, y, x), _ in chunk
        ]
        sizes = [tuple(int(s) for s in c.shape[1:]) for c in crops]
        target = [-(-max(s[a] for s in sizes) // pad_to) * pad_to for a in range(3)]
        batch = torch.stack(
            [
                F.pad(c, (0, target[2] - s[2], 0, target[1] - s[1], 0, target[0] - s[0]))
                for c, s in zip(crops, sizes, strict=True)
            ]
        )  # (b, C, D', H', W')
        dets = cast(Any, model).predict(batch, image_sizes=sizes)
        for det, ((z0, y0, x0), owned) in zip(dets, chunk, strict=True):
            shift = torch.tensor([x0, y0, z0, x0, y0, z0], dtype=det["boxes"].dtype)
            boxes = det["boxes"] + shift  # (M, 6) volume voxels
            centre = (boxes[:, :3] + boxes[:, 3:]) / 2  # (M, 3) x, y, z
            own = torch.ones(boxes.shape[0], dtype=torch.bool)
            for k in range(3):  # box axis k (x, y, z) is window axis 2 - k
                lo, hi = owned[2 - k]
                own &= (centre[:, k] >= lo) & (centre[:, k] < hi)
            boxes_all.append(boxes[own])
            scores_all.append(det["scores"][own])
            labels_all.append(det["labels"][own])
    boxes = torch.cat(boxes_all) if boxes_all else torch.zeros((0, 6))
    scores = torch.cat(scores_all) if scores_all else torch.zeros(0)
    labels = torch.cat(labels_all) if labels_all else torch.zeros(0, dtype=torch.int64)
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
