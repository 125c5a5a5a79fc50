"""Weak and strong views of an unlabeled batch for teacher-student pseudo-labeling.

The online pseudo-label teacher (:mod:`ssmd.methods.online_teacher`) shows the teacher a
*weak* view of each unlabeled image and trains the student on a *strong* view of the same
image, with the teacher's boxes as targets (Unbiased Teacher, Liu et al. 2021; Soft Teacher,
Xu et al. 2021). As in mmdetection's semi-supervised detectors, every view records the
geometric map from the base image (the batch the engine drew) to itself, so boxes are
projected between views exactly: ``student_map(teacher_map^-1(boxes))``.

The maps here are axis-aligned (flips and scalings), ``x' = a_x x + b_x``,
``y' = a_y y + b_y`` per image (:class:`AxisAlignedMap`); boxes are ``xyxy`` absolute
pixels with exclusive ``x2``/``y2`` (:mod:`ssmd.structures.boxes`), so a flip in an image of
width ``W`` is ``x' = W - x`` and swaps ``x1`` and ``x2``, as
:func:`~ssmd.data.transforms.functional.hflip_boxes`.

Views (2D, ``images`` ``Tensor[B, C, H, W]`` normalised):

* weak (:func:`weak_view`): a horizontal flip with probability ``p`` per image, each image
  flipped inside its own ``image_sizes`` region so that batch padding stays bottom/right and
  the teacher's boxes can be clipped to the image as the detector's ``postprocess`` does;
* strong (:func:`strong_view`): intensity jitter (:func:`intensity_jitter`: brightness and
  contrast in units of the image's own standard deviation, so they mean the same for any
  normalisation, and a saturation jitter that is the identity on grey images), then one
  scale factor per batch (:func:`scale_jitter`, bilinear, boxes scaled exactly, padded to
  ``size_divisor``), then cutout (squares of ``cutout_size`` px at ``cutout_reference`` px
  width, scaled with the width, as the SSMD and pseudo-labeling cutouts; boxes unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ssmd.data.transforms.functional import cutout, pad_to_multiple
from ssmd.methods.perturb import scaled_cutout_size

__all__ = [
    "AxisAlignedMap",
    "View",
    "intensity_jitter",
    "scale_jitter",
    "strong_view",
    "weak_view",
]


def _check_batch(images: Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(
            f"views need a 2D batch of images (B, C, H, W), got shape {tuple(images.shape)}"
        )


@dataclass(frozen=True)
class AxisAlignedMap:
    """Per-image axis-aligned map ``x' = a_x x + b_x``, ``y' = a_y y + b_y``.

    Attributes:
        coef: ``Tensor[B, 4]`` float64 rows ``(a_x, b_x, a_y, b_y)``; ``a != 0``.
    """

    coef: Tensor

    @staticmethod
    def identity(batch: int) -> AxisAlignedMap:
        """The identity for ``batch`` images."""
        return AxisAlignedMap(torch.tensor([[1.0, 0.0, 1.0, 0.0]] * batch, dtype=torch.float64))

    def __len__(self) -> int:
        return int(self.coef.shape[0])

    def then(self, other: AxisAlignedMap) -> AxisAlignedMap:
        """``other`` after ``self``: ``x -> other(self(x))``."""
        if len(other) != len(self):
            raise ValueError(f"cannot compose maps of {len(self)} and {len(other)} images")
        a1, b1, c1, d1 = self.coef.unbind(-1)
        a2, b2, c2, d2 = other.coef.unbind(-1)
        return AxisAlignedMap(torch.stack([a2 * a1, a2 * b1 + b2, c2 * c1, c2 * d1 + d2], -1))

    def inverse(self) -> AxisAlignedMap:
        """``x = (x' - b) / a`` per axis."""
        a, b, c, d = self.coef.unbind(-1)
        return AxisAlignedMap(torch.stack([1.0 / a, -b / a, 1.0 / c, -d / c], dim=-1))

    def apply(self, boxes: Sequence[Tensor]) -> list[Tensor]:
        """Map per-image ``xyxy`` boxes ``Tensor[N_i, 4]``; a negative factor swaps the corners."""
        if len(boxes) != len(self):
            raise ValueError(f"{len(boxes)} box tensors for a map of {len(self)} images")
        out = []
        for b, (a_x, b_x, a_y, b_y) in zip(boxes, self.coef.tolist(), strict=True):
            x1, y1, x2, y2 = b.unbind(-1)
            xa, xb = a_x * x1 + b_x, a_x * x2 + b_x
            ya, yb = a_y * y1 + b_y, a_y * y2 + b_y
            lo = [torch.minimum(xa, xb), torch.minimum(ya, yb)]
            hi = [torch.maximum(xa, xb), torch.maximum(ya, yb)]
            out.append(torch.stack([*lo, *hi], dim=-1))  # (N_i, 4)
        return out


@dataclass(frozen=True)
class View:
    """A view of a batch: its images and the map from the base images to them.

    Attributes:
        images: ``Tensor[B, C, H', W']``.
        transform: base pixel coordinates -> this view's pixel coordinates.
        image_sizes: ``(H, W)`` of each image's region in this view (before batch padding).
    """

    images: Tensor
    transform: AxisAlignedMap
    image_sizes: list[tuple[int, int]]


def weak_view(
    images: Tensor,
    image_sizes: Sequence[Sequence[int]] | None = None,
    p: float = 0.5,
    flips: Tensor | None = None,
) -> View:
    """The teacher's view: each image flipped left-right inside its own region with probability ``p``.

    Args:
        images: ``Tensor[B, C, H, W]``; not modified.
        image_sizes: ``(H_i, W_i)`` of each image before batch padding (default: the tensor's).
        p: flip probability (torch's global RNG).
        flips: ``Tensor[B]`` bool to use instead of drawing (tests).

    Returns:
        The view; its map is ``x' = W_i - x`` for flipped images, the identity otherwise.
    """
    _check_batch(images)
    b, _, h, w = images.shape
    sizes = (
        [(int(h), int(w))] * b
        if image_sizes is None
        else [(int(s[0]), int(s[1])) for s in image_sizes]
    )
    if len(sizes) != b:
        raise ValueError(f"got {len(sizes)} image_sizes for a batch of {b} images")
    if flips is None:
        flips = torch.rand(b) < p
    out = images.clone()
    coef = AxisAlignedMap.identity(b).coef
    for i, flip in enumerate(flips.tolist()):
        if flip:
            hi, wi = sizes[i]
            out[i, :, :hi, :wi] = images[i, :, :hi, :wi].flip(-1)
            coef[i, 0], coef[i, 1] = -1.0, float(wi)
    return View(out, AxisAlignedMap(coef), sizes)


def intensity_jitter(
    images: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    p: float = 0.8,
) -> Tensor:
    """Colour / intensity jitter per image, with probability ``p`` (torch's global RNG).

    With ``m``, ``s`` the image's mean and standard deviation over all its values:
    ``x <- x + d s`` (``d ~ U(-brightness, brightness)``), then ``x <- (x - m) c + m``
    (``c ~ U(1 - contrast, 1 + contrast)``), then ``x <- g + (x - g) t`` with ``g`` the
    per-pixel mean over channels and ``t ~ U(1 - saturation, 1 + saturation)``. Brightness and
    contrast are scale-free, so they mean the same for any normalisation (the tensor is
    normalised); the saturation term is exactly the identity on grey images (all channels
    equal, or one channel), so the same jitter serves grey and colour data.

    Args:
        images: ``Tensor[B, C, H, W]``; not modified.

    Returns:
        A new tensor of the same shape.
    """
    _check_batch(images)
    b = int(images.shape[0])
    on = (torch.rand(b) < p).to(images.device).view(b, 1, 1, 1)  # (B, 1, 1, 1) bool

    def draw(amount: float) -> Tensor:
        return (2.0 * torch.rand(b, 1, 1, 1) - 1.0).to(images) * amount  # (B, 1, 1, 1)

    d, c, t = draw(brightness), 1.0 + draw(contrast), 1.0 + draw(saturation)
    std = images.std(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = images + d * std
    mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = (out - mean) * c + mean
    grey = out.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    out = grey + (out - grey) * t
    return torch.where(on, out, images)  # images left alone stay bit-identical


def scale_jitter(
    images: Tensor, scale: float, size_divisor: int = 32
) -> tuple[Tensor, AxisAlignedMap]:
    """Resize the whole batch by ``scale`` (bilinear) and pad bottom/right to ``size_divisor``.

    The new size is ``(round(H scale), round(W scale))``; boxes map exactly by the per-axis
    factors ``W'/W`` and ``H'/H`` (pixel edges map to pixel edges with
    ``align_corners=False``), which the returned map records.

    Returns:
        ``(images, map)``.
    """
    _check_batch(images)
    if scale <= 0:
        raise ValueError(f"scale jitter factor = {scale}: must be > 0")
    b, _, h, w = images.shape
    nh, nw = max(1, round(int(h) * scale)), max(1, round(int(w) * scale))
    out = images
    if (nh, nw) != (int(h), int(w)):
        out = TF.resize(images, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
    out = pad_to_multiple(out, size_divisor)
    coef = torch.tensor([[nw / int(w), 0.0, nh / int(h), 0.0]] * b, dtype=torch.float64)
    return out, AxisAlignedMap(coef)


def strong_view(
    images: Tensor,
    image_sizes: Sequence[Sequence[int]] | None = None,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    jitter_p: float = 0.8,
    scale_range: tuple[float, float] = (0.8, 1.2),
    size_divisor: int = 32,
    cutout_n: int = 5,
    cutout_size: int = 70,
    cutout_reference: int = 448,
) -> View:
    """The student's view: intensity jitter, scale jitter, cutout (module docstring).

    Args:
        images: ``Tensor[B, C, H, W]``, normalised; not modified.
        image_sizes: ``(H_i, W_i)`` before batch padding (default: the tensor's).
        scale_range: ``(lo, hi)`` of the batch's scale factor, uniform; ``(1, 1)`` disables it.
        size_divisor: the scaled batch is padded to a multiple of it (1: no padding).
        cutout_n: squares per image (0: none).

    Returns:
        The view (its image sizes are the scaled ones).
    """
    _check_batch(images)
    b, _, h, w = images.shape
    sizes = (
        [(int(h), int(w))] * b
        if image_sizes is None
        else [(int(s[0]), int(s[1])) for s in image_sizes]
    )
    lo, hi = float(scale_range[0]), float(scale_range[1])
    out = intensity_jitter(images, brightness, contrast, saturation, jitter_p)
    transform = AxisAlignedMap.identity(b)
    if (lo, hi) != (1.0, 1.0):
        s = lo + (hi - lo) * float(torch.rand(()))
        out, transform = scale_jitter(out, s, size_divisor)
    a_x, a_y = float(transform.coef[0, 0]), float(transform.coef[0, 2])
    sizes = [(round(sh * a_y), round(sw * a_x)) for sh, sw in sizes]
    if cutout_n > 0:
        side = min(
            scaled_cutout_size(cutout_size, int(out.shape[-1]), cutout_reference),
            int(out.shape[-2]),
            int(out.shape[-1]),
        )
        out = cutout(out, cutout_n, side)
    return View(out, transform, sizes)
