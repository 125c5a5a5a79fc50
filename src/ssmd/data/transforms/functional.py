"""Functional transforms on image tensors and ``xyxy`` boxes: all box math lives here.

Images are ``Tensor[C, H, W]`` or a batch ``Tensor[B, C, H, W]``; boxes are
``Tensor[N, 4]`` ``xyxy`` absolute pixels with exclusive ``x2``/``y2``
(:mod:`ssmd.structures.boxes`) for a single image, or a list of ``B`` such tensors for a
batch. Geometric functions return boxes clipped to the output image but keep their
number and order (so SSL methods can match boxes across views); dropping boxes that
became degenerate is :func:`drop_degenerate`'s job, done by the ``Sample`` transforms.

Pixel-coordinate conventions (the same as ``torchvision``): pixel ``(r, c)`` covers
``[c, c+1) x [r, r+1)``, so an image of width ``W`` spans ``x`` in ``[0, W]`` and its
centre is ``(W/2, H/2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ssmd.structures.boxes import clip_boxes, nondegenerate

__all__ = [
    "ct_window",
    "cutout",
    "cutout_squares",
    "drop_degenerate",
    "fill_squares",
    "hflip",
    "hflip_boxes",
    "normalize",
    "pad_to_multiple",
    "resize",
    "resize_boxes",
    "rotate",
    "rotate_boxes",
    "squares_mask",
    "vflip",
    "vflip_boxes",
    "visible_fraction",
]

BoxesT = TypeVar("BoxesT", Tensor, list[Tensor])


def _check_images(images: Tensor) -> None:
    if images.ndim not in (3, 4):
        raise ValueError(
            f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}"
        )


def _map_boxes(boxes: BoxesT, images: Tensor, fn: Callable[[Tensor], Tensor]) -> BoxesT:
    if isinstance(boxes, Tensor):
        if images.ndim != 3:
            raise ValueError("a batch of images (B, C, H, W) needs a list of B box tensors")
        return fn(boxes)
    if images.ndim != 4 or len(boxes) != images.shape[0]:
        raise ValueError(
            f"{len(boxes)} box tensors for images of shape {tuple(images.shape)}: need one per image"
        )
    return [fn(b) for b in boxes]


# ---------------------------------------------------------------------------- flips
def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror ``xyxy`` boxes ``Tensor[N, 4]`` left-right in an image of ``width``: ``x1' = W - x2, x2' = W - x1``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def vflip_boxes(boxes: Tensor, height: int) -> Tensor:
    """Mirror ``xyxy`` boxes top-bottom in an image of ``height``: ``y1' = H - y2, y2' = H - y1``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, height - y2, x2, height - y1], dim=-1)


def hflip(images: Tensor, boxes: BoxesT) -> tuple[Tensor, BoxesT]:
    """Flip images ``(C, H, W)``/``(B, C, H, W)`` and their boxes left-right (exact)."""
    _check_images(images)
    w = int(images.shape[-1])
    return images.flip(-1), _map_boxes(boxes, images, lambda b: hflip_boxes(b, w))


def vflip(images: Tensor, boxes: BoxesT) -> tuple[Tensor, BoxesT]:
    """Flip images and their boxes top-bottom (exact)."""
    _check_images(images)
    h = int(images.shape[-2])
    return images.flip(-2), _map_boxes(boxes, images, lambda b: vflip_boxes(b, h))


# ---------------------------------------------------------------------------- rotation
def _cos_sin(angle_deg: float) -> tuple[float, float]:
    """Exact values at multiples of 90 degrees (so those rotations are exact)."""
    a = float(angle_deg) % 360.0
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    if a in exact:
        return exact[a]
    rad = math.radians(a)
    return math.cos(rad), math.sin(rad)


def rotate_boxes(boxes: Tensor, angle_deg: float, size: tuple[int, int]) -> Tensor:
    """Rotate ``xyxy`` boxes with their image about its centre, then clip.

    The new box is the axis-aligned box of the four rotated corners (so it grows for
    angles that are not multiples of 90 degrees: the exact enclosing box of the rotated
    rectangle, not of the object inside it). Positive angles rotate counter-clockwise
    as displayed (y down), as ``torchvision``'s ``rotate``; the canvas keeps its size.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy.
        angle_deg: rotation angle in degrees.
        size: ``(H, W)`` of the image.

    Returns:
        ``Tensor[N, 4]`` xyxy clipped to the image (same ``N`` and order).
    """
    h, w = size
    c, s = _cos_sin(angle_deg)
    cx, cy = w / 2.0, h / 2.0
    x1, y1, x2, y2 = boxes.unbind(-1)
    xs = torch.stack([x1, x2, x1, x2], dim=-1) - cx  # (N, 4) corner offsets
    ys = torch.stack([y1, y1, y2, y2], dim=-1) - cy  # (N, 4)
    # y points down, so a counter-clockwise turn on screen is x' = x c + y s, y' = -x s + y c
    xr = cx + xs * c + ys * s  # (N, 4)
    yr = cy - xs * s + ys * c  # (N, 4)
    out = torch.stack(
        [
            xr.min(dim=-1).values,
            yr.min(dim=-1).values,
            xr.max(dim=-1).values,
            yr.max(dim=-1).values,
        ],
        dim=-1,
    )  # (N, 4)
    return clip_boxes(out, (h, w))


def _rotate_image(image: Tensor, angle_deg: float, fill: float) -> Tensor:
    a = float(angle_deg) % 360.0
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if a == 0.0:
        return image.clone()
    if a == 180.0:
        return image.flip(-1).flip(-2)
    if a in (90.0, 270.0) and h == w:
        return torch.rot90(image, k=1 if a == 90.0 else 3, dims=(-2, -1))  # counter-clockwise
    return TF.rotate(image, a, interpolation=InterpolationMode.BILINEAR, fill=[fill])


def rotate(
    images: Tensor,
    boxes: BoxesT,
    angle_deg: float | Sequence[float],
    fill: float = 0.0,
) -> tuple[Tensor, BoxesT]:
    """Rotate images and boxes about the image centre, keeping the canvas size.

    Positive angles are counter-clockwise (``torchvision`` convention). Multiples of 90
    degrees are exact (pixel permutations on square images, flips for 180); other angles
    use bilinear interpolation and fill uncovered pixels with ``fill``. Boxes: see
    :func:`rotate_boxes` (clipped, not filtered).

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)``.
        boxes: ``Tensor[N, 4]`` or a list of ``B`` of them.
        angle_deg: one angle, or one per image of a batch.
        fill: value of pixels rotated in from outside.
    """
    _check_images(images)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    if isinstance(angle_deg, (int, float)):
        angle = float(angle_deg)
        return _rotate_image(images, angle, fill), _map_boxes(
            boxes, images, lambda b: rotate_boxes(b, angle, size)
        )
    angles = [float(a) for a in angle_deg]
    if images.ndim != 4 or not isinstance(boxes, list) or len(angles) != images.shape[0]:
        raise ValueError(f"{len(angles)} angles need a batch of as many images and box tensors")
    out = torch.stack([_rotate_image(im, a, fill) for im, a in zip(images, angles, strict=True)])
    new_boxes = [rotate_boxes(b, a, size) for b, a in zip(boxes, angles, strict=True)]
    return out, new_boxes


# ---------------------------------------------------------------------------- resize / pad
def resize_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scale ``xyxy`` boxes by ``scale`` (both axes)."""
    return boxes * scale


def pad_to_multiple(images: Tensor, multiple: int, fill: float = 0.0) -> Tensor:
    """Pad images at the bottom and right so ``H`` and ``W`` are multiples of ``multiple``.

    Boxes do not move (the origin is top-left).
    """
    _check_images(images)
    if multiple <= 1:
        return images
    h, w = int(images.shape[-2]), int(images.shape[-1])
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return torch.nn.functional.pad(images, (0, pw, 0, ph), value=fill)  # (.., H + ph, W + pw)


def resize(
    images: Tensor, boxes: BoxesT, size: int, pad_to: int = 128, fill: float = 0.0
) -> tuple[Tensor, BoxesT, float]:
    """Resize so the longer side is ``size`` (aspect ratio kept), then pad to ``pad_to``.

    The new size is ``(round(H * s), round(W * s))`` with ``s = size / max(H, W)``;
    boxes are multiplied by ``s`` (one factor for both axes, so ``boxes / s`` gives back
    the original boxes; the rounding of the image size moves edges by < 0.5 px) and
    clipped to the resized image. Padding goes to the bottom/right, so with
    ``pad_to=128`` the strides 8..128 of FPN levels P3..P7 divide ``H`` and ``W``
    exactly. Bilinear interpolation with antialiasing.

    Returns:
        ``(images, boxes, s)``.
    """
    _check_images(images)
    if size < 1:
        raise ValueError(f"resize size = {size}: must be >= 1")
    h, w = int(images.shape[-2]), int(images.shape[-1])
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = images
    if (nh, nw) != (h, w):
        out = TF.resize(images, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
    out = pad_to_multiple(out, pad_to, fill)
    return (
        out,
        _map_boxes(boxes, images, lambda b: clip_boxes(resize_boxes(b, scale), (nh, nw))),
        scale,
    )


# ---------------------------------------------------------------------------- cutout / intensity
def cutout_squares(
    batch: int, n: int, size: int, height: int, width: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``n`` cutout squares per image: ``Tensor[batch, n, 4]`` ``xyxy`` (int64 pixels).

    The top-left corner is uniform over the positions that keep the square inside the
    image; ``x2 = x1 + size`` is exclusive, as every box of the library.
    """
    if n < 0 or size < 1 or size > min(height, width):
        raise ValueError(
            f"cutout n={n}, size={size}: need n >= 0 and 1 <= size <= {min(height, width)}"
        )
    ys = torch.randint(0, height - size + 1, (batch, n), generator=generator)  # (B, n)
    xs = torch.randint(0, width - size + 1, (batch, n), generator=generator)  # (B, n)
    return torch.stack([xs, ys, xs + size, ys + size], dim=-1)  # (B, n, 4)


def squares_mask(squares: Tensor, height: int, width: int) -> Tensor:
    """Pixels covered by the squares of :func:`cutout_squares`: ``Tensor[B, H, W]`` bool."""
    mask = torch.zeros((int(squares.shape[0]), height, width), dtype=torch.bool)
    for i, per_image in enumerate(squares.tolist()):
        for x1, y1, x2, y2 in per_image:
            mask[i, y1:y2, x1:x2] = True
    return mask


def visible_fraction(boxes: Tensor, erased: Tensor) -> Tensor:
    """Fraction of each box's pixels that are *not* erased.

    Args:
        boxes: ``Tensor[N, 4]`` ``xyxy`` absolute pixels of one image.
        erased: ``Tensor[H, W]`` bool, e.g. one image of :func:`squares_mask`.

    Returns:
        ``Tensor[N]`` in ``[0, 1]``; the box is rounded outwards to whole pixels and clipped
        to the image (a box with no pixel inside counts as fully visible).
    """
    h, w = int(erased.shape[-2]), int(erased.shape[-1])
    if boxes.numel() == 0:
        return boxes.new_ones((0,))
    # integral image with a zero first row/column: S[y, x] = erased[:y, :x].sum()
    integral = torch.zeros((h + 1, w + 1), dtype=torch.float64)
    integral[1:, 1:] = erased.to(torch.float64).cumsum(0).cumsum(1)
    x1 = boxes[:, 0].floor().clamp(0, w).long()
    y1 = boxes[:, 1].floor().clamp(0, h).long()
    x2 = boxes[:, 2].ceil().clamp(0, w).long()
    y2 = boxes[:, 3].ceil().clamp(0, h).long()
    area = ((x2 - x1) * (y2 - y1)).to(torch.float64)  # (N,)
    covered = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]  # (N,)
    frac = torch.where(area > 0, 1.0 - covered / area.clamp_min(1.0), torch.ones_like(area))
    return frac.to(boxes.dtype)


def fill_squares(images: Tensor, squares: Tensor, value: float = 0.0) -> Tensor:
    """A copy of ``(B, C, H, W)`` ``images`` with each image's ``squares`` set to ``value``."""
    out = images.clone()
    for i, per_image in enumerate(squares.tolist()):
        for x1, y1, x2, y2 in per_image:
            out[i, :, y1:y2, x1:x2] = value
    return out


def cutout(
    images: Tensor,
    n: int,
    size: int,
    generator: torch.Generator | None = None,
    value: float = 0.0,
) -> Tensor:
    """Fill ``n`` squares of side ``size`` with ``value``, independently per image.

    Squares lie fully inside the image (top-left corner uniform over valid positions,
    :func:`cutout_squares`) and may overlap each other. Boxes are unchanged (objects may
    be partly hidden, as in DeVries & Taylor's Cutout).

    Args:
        images: ``(C, H, W)`` or ``(B, C, H, W)``; not modified.
        n: squares per image.
        size: square side in pixels, at most ``min(H, W)``.
        generator: RNG; default torch's global one.
        value: fill value.

    Returns:
        A new tensor of the same shape.
    """
    _check_images(images)
    h, w = int(images.shape[-2]), int(images.shape[-1])
    batch = images if images.ndim == 4 else images[None]  # (B, C, H, W) view
    squares = cutout_squares(int(batch.shape[0]), n, size, h, w, generator)  # (B, n, 4)
    out = fill_squares(batch, squares, value)
    return out if images.ndim == 4 else out[0]


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean[c]) / std[c]`` per channel of ``(C, H, W)``/``(B, C, H, W)`` images."""
    _check_images(images)
    c = int(images.shape[-3])
    if len(mean) != c or len(std) != c or any(s <= 0 for s in std):
        raise ValueError(f"normalize mean={list(mean)}, std={list(std)}: need {c} values, std > 0")
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(c, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(c, 1, 1)
    return (images - m) / s


def ct_window(images: Tensor, lo: float, hi: float) -> Tensor:
    """Clip Hounsfield units to ``[lo, hi]`` and map linearly to ``[-1, 1]``."""
    if not hi > lo:
        raise ValueError(f"CT window lo={lo}, hi={hi}: need hi > lo")
    return (images.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


def drop_degenerate(
    boxes: Tensor, labels: Tensor, size: tuple[int, int], min_size: float = 1.0
) -> tuple[Tensor, Tensor, int]:
    """Clip boxes to an image of ``size`` ``(H, W)`` and drop those with a side < ``min_size``.

    Returns:
        ``(boxes Tensor[M, 4], labels Tensor[M], number dropped)``.
    """
    clipped = clip_boxes(boxes, size)
    keep = nondegenerate(clipped, min_size)  # (N,)
    return clipped[keep], labels[keep], int((~keep).sum())
