"""Typed samples and batches shared by datasets, transforms, methods and the engine.

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy``, absolute pixels, float32.
Labels are class indices ``1..K``; ``0`` is reserved for background.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Batch", "Sample", "collate"]


@dataclass
class Sample:
    """One image and its annotation.

    Attributes:
        image: ``Tensor[C, H, W]`` float32 (values in ``[0, 1]`` before normalisation).
        boxes: ``Tensor[N, 4]`` float32, ``xyxy`` absolute pixels of ``image`` as it is now.
        labels: ``Tensor[N]`` int64 in ``1..K``.
        image_id: integer id (COCO ``image_id``; 1..N in sorted path order for folders).
        path: source file of the image (for error messages and overlays).
        image_label: optional image-level label (weak supervision, classification).
        is_labeled: whether ``boxes``/``labels`` may be used as supervision.
        orig_size: ``(H, W)`` of the image as read from disk.
        scale: factor from original to current pixel coordinates (set by resizing), so
            ``boxes / scale`` are boxes in the original image.
        ignore: ``Tensor[M, 4]`` regions to ignore (COCO ``iscrowd``), ``xyxy``.
        dropped_boxes: boxes removed by transforms (degenerate after clipping), counted.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    image_id: int
    path: str = ""
    image_label: int | None = None
    is_labeled: bool = True
    orig_size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    ignore: Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.float32))
    dropped_boxes: int = 0

    def __post_init__(self) -> None:
        if self.orig_size == (0, 0) and self.image.ndim == 3:
            self.orig_size = (int(self.image.shape[1]), int(self.image.shape[2]))

    def replace(self, **changes: Any) -> Sample:
        """A copy with ``changes`` applied (tensors are shared, not copied)."""
        return replace(self, **changes)


@dataclass
class Batch:
    """A padded batch of samples.

    Attributes:
        images: ``Tensor[B, C, H, W]``, zero-padded at the bottom/right to the largest sample.
        boxes: list of ``B`` tensors ``[N_i, 4]`` (``xyxy``).
        labels: list of ``B`` tensors ``[N_i]``.
        image_ids: list of ``B`` ints.
        paths: list of ``B`` source paths.
        image_sizes: list of ``B`` ``(H, W)`` of each image before batch padding.
        scales: list of ``B`` resize factors (original -> current).
        orig_sizes: list of ``B`` ``(H, W)`` original sizes.
        is_labeled: ``Tensor[B]`` bool.
        image_labels: list of optional image-level labels.
        ignore: list of ``B`` ignore-region tensors ``[M_i, 4]``.
    """

    images: Tensor
    boxes: list[Tensor]
    labels: list[Tensor]
    image_ids: list[int]
    paths: list[str]
    image_sizes: list[tuple[int, int]]
    scales: list[float]
    orig_sizes: list[tuple[int, int]]
    is_labeled: Tensor
    image_labels: list[int | None]
    ignore: list[Tensor]

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

    Images are zero-padded at the bottom and right to the largest height and width
    in the batch, so box coordinates stay valid.
    """
    if not samples:
        raise ValueError("collate got an empty list of samples")
    channels = {int(s.image.shape[0]) for s in samples}
    if len(channels) != 1:
        raise ValueError(
            "samples in one batch have different channel counts "
            + ", ".join(f"{s.path or s.image_id}: {int(s.image.shape[0])}" for s in samples)
        )
    h = max(int(s.image.shape[1]) for s in samples)
    w = max(int(s.image.shape[2]) for s in samples)
    images = torch.stack(
        [F.pad(s.image, (0, w - s.image.shape[2], 0, h - s.image.shape[1])) for s in samples]
    )  # (B, C, H, W)
    return Batch(
        images=images,
        boxes=[s.boxes for s in samples],
        labels=[s.labels for s in samples],
        image_ids=[s.image_id for s in samples],
        paths=[s.path for s in samples],
        image_sizes=[(int(s.image.shape[1]), int(s.image.shape[2])) for s in samples],
        scales=[s.scale for s in samples],
        orig_sizes=[s.orig_size for s in samples],
        is_labeled=torch.tensor([s.is_labeled for s in samples], dtype=torch.bool),
        image_labels=[s.image_label for s in samples],
        ignore=[s.ignore for s in samples],
    )
