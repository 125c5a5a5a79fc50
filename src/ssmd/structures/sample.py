"""Typed samples and batches shared by datasets, transforms, methods and the engine.

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy`` absolute pixels (voxels in 3D),
float32. Labels are class indices ``1..K``; ``0`` is reserved for background.

A sample says how many spatial dimensions it has (``spatial_dims``, 2 or 3) instead of
leaving it to be guessed from ``image.ndim``: a 2D image is ``(C, H, W)`` with boxes
``Tensor[N, 4]``, a 3D volume ``(C, D, H, W)`` with boxes ``Tensor[N, 6]``
(``x1 y1 z1 x2 y2 z2``, ``x`` along ``W`` and ``z`` along ``D``). The constructor checks the
image, boxes, labels, ignore regions and ``orig_size`` against it and names the field,
the sample and the value when they disagree. A :class:`Batch` carries ``spatial_dims``
too, so a batch is a :class:`Batch` (or a list of box tensors) by type, never by ``ndim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SPATIAL_DIMS", "Batch", "Sample", "collate"]

SPATIAL_DIMS: tuple[int, ...] = (2, 3)
"""The supported numbers of spatial dimensions."""


def _shape_name(spatial_dims: int) -> str:
    return "(C, H, W)" if spatial_dims == 2 else "(C, D, H, W)"


@dataclass
class Sample:
    """One image (2D) or volume (3D) and its annotation.

    Attributes:
        image: ``Tensor[C, H, W]`` (2D) or ``Tensor[C, D, H, W]`` (3D) float32 (values in
            ``[0, 1]`` before normalisation).
        boxes: ``Tensor[N, 2 * spatial_dims]`` float32, ``xyxy`` (``xyzxyz``) absolute pixels
            of ``image`` as it is now (integer boxes are converted to float32).
        labels: ``Tensor[N]`` int64 in ``1..K``.
        image_id: integer id (COCO ``image_id``; 1..N in sorted path order for folders).
        path: source file of the image (for error messages and overlays).
        image_label: optional image-level label (weak supervision, classification).
        is_labeled: whether ``boxes``/``labels`` may be used as supervision.
        orig_size: spatial size ``(H, W)`` / ``(D, H, W)`` of the image as read from disk
            (default: the size of ``image``).
        scale: factor from original to current pixel coordinates (set by resizing), so
            ``boxes / scale`` are boxes in the original image when ``axis_scale`` is ``None``.
        ignore: ``Tensor[M, 2 * spatial_dims]`` regions to ignore (COCO ``iscrowd``), ``xyxy``;
            the default empty tensor takes the width of ``spatial_dims``.
        dropped_boxes: boxes removed by transforms (degenerate after clipping, or too little
            of them left inside a crop), counted.
        spatial_dims: 2 or 3, checked against ``image`` and ``boxes``.
        axis_scale: extra per-axis factors in box order ``(x, y[, z])`` on top of ``scale``,
            set by an anisotropic :class:`~ssmd.data.transforms.Zoom`; ``None`` = isotropic.
            :meth:`original_boxes` applies both.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, or a field whose shape does not fit it (the
            message names the field, the sample and the shape).
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    image_id: int
    path: str = ""
    image_label: int | None = None
    is_labeled: bool = True
    orig_size: tuple[int, ...] = ()
    scale: float = 1.0
    ignore: Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.float32))
    dropped_boxes: int = 0
    spatial_dims: int = 2
    axis_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        d = self.spatial_dims
        where = f"sample {self.path or self.image_id}"
        if d not in SPATIAL_DIMS:
            raise ValueError(f"{where}: Sample.spatial_dims = {d!r}: expected 2 or 3")
        if self.image.ndim != d + 1:
            raise ValueError(
                f"{where}: Sample.image has shape {tuple(self.image.shape)}, expected "
                f"{_shape_name(d)} for spatial_dims={d}"
            )
        if self.boxes.ndim != 2 or int(self.boxes.shape[1]) != 2 * d:
            raise ValueError(
                f"{where}: Sample.boxes has shape {tuple(self.boxes.shape)}, expected "
                f"(N, {2 * d}) for spatial_dims={d}"
            )
        if self.labels.ndim != 1 or int(self.labels.shape[0]) != int(self.boxes.shape[0]):
            raise ValueError(
                f"{where}: Sample.labels has shape {tuple(self.labels.shape)}, expected "
                f"({int(self.boxes.shape[0])},), one per box"
            )
        if not self.boxes.is_floating_point():  # e.g. torch.tensor([[0, 0, 4, 4]])
            self.boxes = self.boxes.to(torch.float32)
        if not self.ignore.is_floating_point():
            self.ignore = self.ignore.to(torch.float32)
        if self.ignore.numel() == 0 and tuple(self.ignore.shape) != (0, 2 * d):
            self.ignore = self.ignore.reshape(0, 2 * d)
        if self.ignore.ndim != 2 or int(self.ignore.shape[1]) != 2 * d:
            raise ValueError(
                f"{where}: Sample.ignore has shape {tuple(self.ignore.shape)}, expected "
                f"(M, {2 * d}) for spatial_dims={d}"
            )
        if not self.orig_size or not any(self.orig_size):
            self.orig_size = tuple(int(s) for s in self.image.shape[1:])
        else:
            self.orig_size = tuple(int(s) for s in self.orig_size)
        if len(self.orig_size) != d:
            raise ValueError(
                f"{where}: Sample.orig_size = {self.orig_size}: expected {d} sizes for "
                f"spatial_dims={d}"
            )
        if self.axis_scale is not None and len(self.axis_scale) != d:
            raise ValueError(
                f"{where}: Sample.axis_scale = {self.axis_scale}: expected {d} factors"
            )

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """Current spatial size of ``image`` in tensor order: ``(H, W)`` or ``(D, H, W)``."""
        return tuple(int(s) for s in self.image.shape[1:])

    def box_scale(self) -> Tensor:
        """Per-coordinate factor ``Tensor[2 * D]`` from original to current box coordinates."""
        axes = self.axis_scale or (1.0,) * self.spatial_dims
        per_axis = [self.scale * a for a in axes]  # x, y[, z]
        return torch.tensor(per_axis * 2, dtype=torch.float32)  # (2 * D,)

    def original_boxes(self, boxes: Tensor) -> Tensor:
        """``xyxy`` boxes of the current image mapped back to the original image's pixels."""
        return boxes / self.box_scale().to(boxes)

    def replace(self, **changes: Any) -> Sample:
        """A copy with ``changes`` applied (tensors are shared, not copied)."""
        return replace(self, **changes)


@dataclass
class Batch:
    """A padded batch of samples.

    Attributes:
        images: ``Tensor[B, C, H, W]`` (2D) or ``Tensor[B, C, D, H, W]`` (3D), zero-padded at the
            end of every spatial axis (bottom/right/back) to the largest sample.
        boxes: list of ``B`` tensors ``[N_i, 2 * spatial_dims]`` (``xyxy``).
        labels: list of ``B`` tensors ``[N_i]``.
        image_ids: list of ``B`` ints.
        paths: list of ``B`` source paths.
        image_sizes: list of ``B`` spatial sizes ``(H, W)``/``(D, H, W)`` before batch padding.
        scales: list of ``B`` resize factors (original -> current).
        orig_sizes: list of ``B`` original spatial sizes.
        is_labeled: ``Tensor[B]`` bool.
        image_labels: list of optional image-level labels.
        ignore: list of ``B`` ignore-region tensors ``[M_i, 2 * spatial_dims]``.
        spatial_dims: 2 or 3, shared by every sample.
        axis_scales: list of ``B`` per-axis extra factors (:attr:`Sample.axis_scale`).
    """

    images: Tensor
    boxes: list[Tensor]
    labels: list[Tensor]
    image_ids: list[int]
    paths: list[str]
    image_sizes: list[tuple[int, ...]]
    scales: list[float]
    orig_sizes: list[tuple[int, ...]]
    is_labeled: Tensor
    image_labels: list[int | None]
    ignore: list[Tensor]
    spatial_dims: int = 2
    axis_scales: list[tuple[float, ...] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def targets(self) -> list[dict[str, Tensor]]:
        """Per-image ``{"boxes", "labels"}`` dicts, the form the detector losses take."""
        return [{"boxes": b, "labels": lab} for b, lab in zip(self.boxes, self.labels, strict=True)]

    def to(self, device: torch.device | str) -> Batch:
        """Move tensors to ``device``."""
        return replace(
            self,
            images=self.images.to(device),
            boxes=[b.to(device) for b in self.boxes],
            labels=[lab.to(device) for lab in self.labels],
            is_labeled=self.is_labeled.to(device),
            ignore=[g.to(device) for g in self.ignore],
        )


def collate(samples: list[Sample]) -> Batch:
    """Stack samples with different numbers of boxes (and sizes) into a :class:`Batch`.

    Every spatial axis is zero-padded at its end (bottom/right in 2D, also the back in 3D)
    to the largest size in the batch, so box coordinates stay valid.

    Raises:
        ValueError: an empty list, or samples that differ in ``spatial_dims`` or channels
            (the message lists every sample's value).
    """
    if not samples:
        raise ValueError("collate got an empty list of samples")
    dims = {s.spatial_dims for s in samples}
    if len(dims) != 1:
        raise ValueError(
            "samples in one batch have different spatial_dims "
            + ", ".join(f"{s.path or s.image_id}: {s.spatial_dims}" for s in samples)
        )
    d = dims.pop()
    channels = {int(s.image.shape[0]) for s in samples}
    if len(channels) != 1:
        raise ValueError(
            "samples in one batch have different channel counts "
            + ", ".join(f"{s.path or s.image_id}: {int(s.image.shape[0])}" for s in samples)
        )
    sizes = [s.spatial_size for s in samples]
    target = [max(sz[k] for sz in sizes) for k in range(d)]  # tensor order (D,) H, W

    def pad(s: Sample, sz: tuple[int, ...]) -> Tensor:
        # F.pad takes (last_lo, last_hi, second_last_lo, ...): the last axis first
        amounts: list[int] = []
        for k in reversed(range(d)):
            amounts += [0, target[k] - sz[k]]
        return F.pad(s.image, amounts)

    images = torch.stack([pad(s, sz) for s, sz in zip(samples, sizes, strict=True)])
    # images: (B, C, *target)
    return Batch(
        images=images,
        boxes=[s.boxes for s in samples],
        labels=[s.labels for s in samples],
        image_ids=[s.image_id for s in samples],
        paths=[s.path for s in samples],
        image_sizes=sizes,
        scales=[s.scale for s in samples],
        orig_sizes=[s.orig_size for s in samples],
        is_labeled=torch.tensor([s.is_labeled for s in samples], dtype=torch.bool),
        image_labels=[s.image_label for s in samples],
        ignore=[s.ignore for s in samples],
        spatial_dims=d,
        axis_scales=[s.axis_scale for s in samples],
    )
