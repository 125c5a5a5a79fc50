"""Patch sampling and flips for 3D training (volume + boxes together).

Training a 3D detector on whole CT volumes does not fit a batch (or a CPU), so every drawn
volume is cut to a patch (MONAI's ``RandCropBoxByPosNegLabeld`` in spirit): with probability
``pos_fraction`` a patch that contains a randomly chosen nodule (its centre at a random
place of the patch's inner half), else a patch at a uniformly random place (mostly
background -- the negatives). Boxes are shifted into the patch, clipped, and kept when at
least ``min_visible`` of their volume lies inside; the others are counted in
``Sample.dropped_boxes``. A volume smaller than the patch along an axis is zero-padded at
the end of that axis.

Both transforms draw from torch's global RNG, which the trainer checkpoints, so
:class:`~ssmd.engine.loader.BatchStream` with them as ``augment`` is resumable exactly.
Boxes are ``xyxy`` voxels ``(x1, y1, z1, x2, y2, z2)``; images ``Tensor[C, D, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ssmd.structures.boxes import box_area
from ssmd.structures.sample import Sample

__all__ = ["RandomFlip3d", "RandomPatch3d", "crop_boxes_3d"]


def _check3d(sample: Sample, who: str) -> None:
    if sample.spatial_dims != 3:
        raise ValueError(
            f"{who} takes 3D samples; sample {sample.path or sample.image_id} has "
            f"spatial_dims={sample.spatial_dims}"
        )


def crop_boxes_3d(
    boxes: torch.Tensor, start_xyz: Sequence[int], size_xyz: Sequence[int], min_visible: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes of the crop ``[start, start + size)`` (per axis ``x, y, z``).

    Returns:
        ``(boxes Tensor[M, 6] in crop voxels, keep Tensor[N] bool)``: the kept boxes are
        those with at least ``min_visible`` of their volume inside the crop.
    """
    start = torch.tensor(list(start_xyz) * 2, dtype=boxes.dtype)  # (6,)
    limit = torch.tensor(list(size_xyz), dtype=boxes.dtype)  # (3,)
    shifted = boxes - start  # (N, 6)
    lo = torch.minimum(shifted[:, :3].clamp(min=0), limit)
    hi = torch.minimum(shifted[:, 3:].clamp(min=0), limit)
    clipped = torch.cat([lo, hi], dim=1)  # (N, 6)
    full = box_area(boxes)
    keep = (box_area(clipped) >= min_visible * full) & (full > 0)
    return clipped[keep], keep


class RandomPatch3d:
    """Cut a training patch around a nodule or at random (module docstring).

    Args:
        size: patch size ``(D, H, W)`` in voxels (one int: a cube).
        pos_fraction: probability of a patch around a nodule (when the volume has one).
        min_visible: fraction of a box's volume that must lie in the patch to keep it.
    """

    def __init__(
        self, size: int | Sequence[int], pos_fraction: float = 0.5, min_visible: float = 0.5
    ) -> None:
        s = [int(size)] * 3 if isinstance(size, int) else [int(v) for v in size]
        if len(s) != 3 or min(s) < 1:
            raise ValueError(f"patch size = {size!r}: need 3 positive sizes (D, H, W)")
        if not 0.0 <= pos_fraction <= 1.0 or not 0.0 < min_visible <= 1.0:
            raise ValueError(
                f"pos_fraction = {pos_fraction}, min_visible = {min_visible}: need [0, 1] and (0, 1]"
            )
        self.size_dhw = (s[0], s[1], s[2])
        self.pos_fraction = float(pos_fraction)
        self.min_visible = float(min_visible)

    def _start(self, length: int, patch: int, centre: float | None) -> int:
        room = max(0, length - patch)
        if centre is None:
            return int(torch.randint(0, room + 1, ()).item())
        # the nodule centre falls in the inner half of the patch
        offset = patch / 4 + float(torch.rand(())) * patch / 2
        return int(min(max(round(centre - offset), 0), room))

    def __call__(self, sample: Sample) -> Sample:
        _check3d(sample, "RandomPatch3d")
        d, h, w = sample.spatial_size
        pd, ph, pw = self.size_dhw
        centre: list[float | None] = [None, None, None]  # x, y, z
        n = int(sample.boxes.shape[0])
        if n and float(torch.rand(())) < self.pos_fraction:
            b = sample.boxes[int(torch.randint(0, n, ()).item())]
            centre = [float(b[k] + b[k + 3]) / 2 for k in range(3)]
        x0 = self._start(w, pw, centre[0])
        y0 = self._start(h, ph, centre[1])
        z0 = self._start(d, pd, centre[2])
        image = sample.image[:, z0 : z0 + pd, y0 : y0 + ph, x0 : x0 + pw]
        pad = [0, pw - image.shape[3], 0, ph - image.shape[2], 0, pd - image.shape[1]]
        if any(pad):
            image = F.pad(image, pad)  # (C, pd, ph, pw)
        boxes, keep = crop_boxes_3d(sample.boxes, (x0, y0, z0), (pw, ph, pd), self.min_visible)
        ignore, _ = crop_boxes_3d(sample.ignore, (x0, y0, z0), (pw, ph, pd), 1e-6)
        return sample.replace(
            image=image.contiguous(),
            boxes=boxes,
            labels=sample.labels[keep],
            ignore=ignore,
            dropped_boxes=sample.dropped_boxes + int((~keep).sum()),
        )


class RandomFlip3d:
    """Flip a 3D sample along each of ``axes`` (``"x"``, ``"y"``, ``"z"``) with probability ``p``."""

    def __init__(self, p: float = 0.5, axes: Sequence[str] = ("x", "y", "z")) -> None:
        if not 0.0 <= p <= 1.0 or not set(axes) <= {"x", "y", "z"}:
            raise ValueError(f"RandomFlip3d p = {p}, axes = {tuple(axes)}: need p in [0, 1], x/y/z")
        self.p = float(p)
        self.axes = tuple(axes)

    def __call__(self, sample: Sample) -> Sample:
        _check3d(sample, "RandomFlip3d")
        image, boxes, ignore = sample.image, sample.boxes, sample.ignore
        for name in self.axes:
            if float(torch.rand(())) >= self.p:
                continue
            k = "xyz".index(name)  # box axis; tensor dim -1 - k
            length = float(image.shape[-1 - k])
            image = image.flip(-1 - k)
            for t in ("boxes", "ignore"):
                src = boxes if t == "boxes" else ignore
                out = src.clone()
                out[:, k], out[:, k + 3] = length - src[:, k + 3], length - src[:, k]
                if t == "boxes":
                    boxes = out
                else:
                    ignore = out
        return sample.replace(image=image.contiguous(), boxes=boxes, ignore=ignore)
