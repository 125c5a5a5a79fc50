"""Tiled (sliding-window) inference for detectors on images larger than a tile.

In the spirit of MONAI's ``SlidingWindowInferer``, but for boxes instead of dense maps: the
image is covered by overlapping tiles, each tile is predicted on its own, boxes are shifted
back to image pixels and merged. A box is kept only from the tile that *owns* its centre —
the tiles' overlaps are split at their midlines, so every pixel belongs to exactly one tile —
which finds an object that crosses a tile border exactly once as long as the overlap is at
least the object's size (its centre is then at least half its size from the owning tile's
inner edges). A final class-wise NMS removes what duplicates remain.

Boxes are ``xyxy`` absolute pixels (``x1 y1 x2 y2``) as everywhere in ssmd.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

__all__ = ["tile_starts", "tiled_predict"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with >= ``overlap``.

    The last tile ends at ``length`` (no tile hangs over the border unless ``length < tile``,
    then there is one tile at 0). Steps are equal up to rounding.

    Raises:
        ValueError: ``overlap`` not in ``[0, tile)``.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(
            f"tile = {tile}, overlap = {overlap}: need tile >= 1 and 0 <= overlap < tile"
        )
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = -(-(length - tile) // stride) + 1  # ceil: tiles needed at this stride
    last = length - tile
    return [round(i * last / (n - 1)) for i in range(n)]


def _owned_range(starts: list[int], i: int, tile: int, length: int) -> tuple[float, float]:
    """The part of tile ``i`` it owns: from the midline of its overlap with the previous tile
    to the midline of its overlap with the next one (the image border at the ends)."""
    lo = 0.0 if i == 0 else (starts[i] + starts[i - 1] + tile) / 2.0
    hi = float(length) if i == len(starts) - 1 else (starts[i + 1] + starts[i] + tile) / 2.0
    return lo, hi


@torch.no_grad()
def tiled_predict(
    model: nn.Module,
    image: Tensor,
    tile: int,
    overlap: int,
    batch_size: int = 4,
    nms_thresh: float = 0.5,
    detections_per_img: int = 1000,
    pad_to: int = 128,
) -> dict[str, Tensor]:
    """Detections of ``model`` on one ``Tensor[C, H, W]`` image, predicted tile by tile.

    Args:
        model: a detector with ``predict(images, image_sizes) -> list[{boxes, scores, labels}]``.
        image: the normalised image.
        tile: tile side in pixels (a multiple of ``pad_to``: the detector's largest stride).
        overlap: minimum overlap of neighbouring tiles; at least the largest object's size.
        batch_size: tiles per forward pass.
        nms_thresh: IoU of the final class-wise NMS over all tiles.
        detections_per_img: cap on the merged detections (highest scores kept).
        pad_to: edge tiles of an image smaller than ``tile`` are padded to this multiple.

    Returns:
        ``{"boxes": Tensor[M, 4] xyxy image pixels, "scores": Tensor[M], "labels": Tensor[M]}``
        sorted by score.
    """
    if image.dim() != 3:
        raise ValueError(f"tiled_predict takes one (C, H, W) image, got shape {tuple(image.shape)}")
    if tile % pad_to:
        raise ValueError(f"eval.tile_size = {tile}: must be a multiple of {pad_to}")
    height, width = int(image.shape[1]), int(image.shape[2])
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    crops: list[tuple[Tensor, int, int, tuple[float, float, float, float]]] = []
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            crop = image[:, y0 : y0 + tile, x0 : x0 + tile]
            y_lo, y_hi = _owned_range(ys, iy, tile, height)
            x_lo, x_hi = _owned_range(xs, ix, tile, width)
            crops.append((crop, x0, y0, (x_lo, y_lo, x_hi, y_hi)))
    boxes_all, scores_all, labels_all = [], [], []
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        sizes = [(int(c.shape[1]), int(c.shape[2])) for c, *_ in chunk]
        h = -(-max(s[0] for s in sizes) // pad_to) * pad_to
        w = -(-max(s[1] for s in sizes) // pad_to) * pad_to
        batch = torch.stack(
            [F.pad(c, (0, w - c.shape[2], 0, h - c.shape[1])) for c, *_ in chunk]
        )  # (b, C, h, w)
        dets = cast(Any, model).predict(batch, image_sizes=sizes)
        for det, (_, x0, y0, (x_lo, y_lo, x_hi, y_hi)) in zip(dets, chunk, strict=True):
            shift = torch.tensor([x0, y0, x0, y0], dtype=det["boxes"].dtype)
            boxes = det["boxes"] + shift  # (M, 4) image pixels
            cx = (boxes[:, 0] + boxes[:, 2]) / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2
            own = (cx >= x_lo) & (cx < x_hi) & (cy >= y_lo) & (cy < y_hi)
            boxes_all.append(boxes[own])
            scores_all.append(det["scores"][own])
            labels_all.append(det["labels"][own])
    boxes = torch.cat(boxes_all) if boxes_all else torch.zeros((0, 4))
    scores = torch.cat(scores_all) if scores_all else torch.zeros(0)
    labels = torch.cat(labels_all) if labels_all else torch.zeros(0, dtype=torch.int64)
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
