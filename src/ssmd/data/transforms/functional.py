"""Functional transforms on 2D and 3D image tensors and ``xyxy`` boxes: all box math lives here.

Layouts. One image is ``Tensor[C, *spatial]`` (``(C, H, W)`` or ``(C, D, H, W)``) with its
boxes ``Tensor[N, 2 * D]``; a batch is ``Tensor[B, C, *spatial]`` with a *list* of ``B``
box tensors. Which of the two a call gets is told by the type of ``boxes`` (one tensor or a
list), and the number of spatial dimensions ``D`` by the boxes' width (4: ``xyxy``, 6:
``xyzxyz``, :mod:`ssmd.structures.boxes`) or an explicit ``spatial_dims``; the image's
``ndim`` is only *checked* against them, never used to guess (a ``(C, D, H, W)`` volume
and a ``(B, C, H, W)`` batch have the same ``ndim``). Functions that take no boxes
(:func:`cutout`, :func:`normalize`, :func:`pad_to_multiple`) take ``spatial_dims``, whose
default 2 is the 2D callers'; 3D callers must pass 3.

Axes. Box coordinates are ordered ``x, y[, z]`` and tensors ``[..., (D,) H, W]``: box axis
``k`` (``0 = "x"``, ``1 = "y"``, ``2 = "z"``) is tensor dimension ``-1 - k``. Sizes given as
tuples follow tensor order (``(H, W)``, ``(D, H, W)``), as in
:func:`~ssmd.structures.boxes.clip_boxes`; per-axis factors and cutout/crop sizes given as
sequences follow box order (``(x, y[, z])``).

Geometric functions return boxes clipped to the output image but keep their number and
order (so SSL methods can match boxes across views); dropping boxes that became
degenerate (or, for crops, lost too much of their area) is the ``Sample`` transforms' job.

Pixel-coordinate conventions (the same as ``torchvision``): pixel ``(r, c)`` covers
``[c, c+1) x [r, r+1)``, so an image of width ``W`` spans ``x`` in ``[0, W]`` and its
centre is ``(W/2, H/2)``; boxes have exclusive ``x2``/``y2``/``z2``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ssmd.structures.boxes import box_area, clip_boxes, nondegenerate, spatial_dims_of

__all__ = [
    "AXES",
    "Axis",
    "axis_index",
    "crop",
    "crop_boxes",
    "ct_window",
    "cutout",
    "cutout_regions",
    "cutout_squares",
    "drop_degenerate",
    "fill_regions",
    "fill_squares",
    "flip",
    "flip_boxes",
    "hflip",
    "hflip_boxes",
    "kept_fraction",
    "normalize",
    "pad_to_multiple",
    "regions_mask",
    "rescale",
    "resize",
    "resize_boxes",
    "rotate",
    "rotate_boxes",
    "rotation_plane",
    "squares_mask",
    "vflip",
    "vflip_boxes",
    "visible_fraction",
]

BoxesT = TypeVar("BoxesT", Tensor, list[Tensor])

Axis = int | str
"""A spatial axis: ``"x"``/``"y"``/``"z"`` or its box-coordinate index ``0``/``1``/``2``."""

AXES: tuple[str, ...] = ("x", "y", "z")


# ---------------------------------------------------------------------------- layout
def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims = {spatial_dims!r}: expected 2 or 3")


def _shape_name(spatial_dims: int) -> str:
    return "(C, H, W)" if spatial_dims == 2 else "(C, D, H, W)"


def axis_index(axis: Axis, spatial_dims: int) -> int:
    """Box-coordinate index (``x = 0``, ``y = 1``, ``z = 2``) of ``axis``; tensor dim ``-1 - k``."""
    _check_spatial_dims(spatial_dims)
    if isinstance(axis, str):
        if axis not in AXES[:spatial_dims]:
            raise ValueError(
                f"axis = {axis!r}: expected one of {AXES[:spatial_dims]} for "
                f"spatial_dims={spatial_dims}"
            )
        return AXES.index(axis)
    if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < spatial_dims:
        raise ValueError(
            f"axis = {axis!r}: expected an index in 0..{spatial_dims - 1} or a name in "
            f"{AXES[:spatial_dims]}"
        )
    return int(axis)


def _image_layout(images: Tensor, spatial_dims: int) -> bool:
    """Whether ``images`` is a batch ``(B, C, *spatial)``, given ``spatial_dims`` explicitly."""
    _check_spatial_dims(spatial_dims)
    if images.ndim == spatial_dims + 1:
        return False
    if images.ndim == spatial_dims + 2:
        return True
    shape = _shape_name(spatial_dims)
    raise ValueError(
        f"images must be {shape} or (B, {shape[1:]} for spatial_dims={spatial_dims}, "
        f"got shape {tuple(images.shape)}"
    )


def _boxes_dims(boxes: Tensor | list[Tensor], spatial_dims: int | None) -> int:
    tensors = [boxes] if isinstance(boxes, Tensor) else list(boxes)
    widths = {spatial_dims_of(b) for b in tensors}  # raises on a width other than 4 or 6
    if spatial_dims is not None:
        _check_spatial_dims(spatial_dims)
        if widths - {spatial_dims}:
            raise ValueError(
                f"spatial_dims = {spatial_dims} but boxes have {2 * min(widths - {spatial_dims})} "
                f"coordinates (expected {2 * spatial_dims})"
            )
        return spatial_dims
    if len(widths) > 1:
        raise ValueError(
            f"boxes of one batch mix 2D and 3D widths: {sorted(2 * w for w in widths)}"
        )
    return widths.pop() if widths else 2


def _layout(
    images: Tensor, boxes: Tensor | list[Tensor], spatial_dims: int | None
) -> tuple[int, bool]:
    """``(D, batched)``: ``D`` from the boxes (or ``spatial_dims``), batched from their type."""
    d = _boxes_dims(boxes, spatial_dims)
    if isinstance(boxes, Tensor):
        if images.ndim != d + 1:
            raise ValueError(
                f"one image {_shape_name(d)} goes with a Tensor[N, {2 * d}] of boxes, got images "
                f"of shape {tuple(images.shape)}; a batch (B, C, *spatial) needs a list of B "
                "box tensors"
            )
        return d, False
    if images.ndim != d + 2 or len(boxes) != images.shape[0]:
        raise ValueError(
            f"{len(boxes)} box tensors for images of shape {tuple(images.shape)} "
            f"({d}D boxes): a batch (B, C, *spatial) needs one per image"
        )
    return d, True


def _map_boxes(boxes: BoxesT, fn: Callable[[Tensor], Tensor]) -> BoxesT:
    if isinstance(boxes, Tensor):
        return fn(boxes)
    return [fn(b) for b in boxes]


def _spatial(images: Tensor, d: int) -> tuple[int, ...]:
    return tuple(int(s) for s in images.shape[-d:])  # tensor order


def _region_index(r: Sequence[int], d: int) -> tuple[slice, ...]:
    """Tensor-order slices of an ``xyxy`` box ``r`` with ``d`` axes."""
    return tuple(slice(r[k], r[k + d]) for k in reversed(range(d)))  # tensor order


def _per_axis(value: float | Sequence[float], d: int, what: str) -> list[float]:
    """A scalar or ``d`` values in box order ``(x, y[, z])``, as a list of ``d`` floats."""
    if isinstance(value, (int, float)):
        return [float(value)] * d
    values = [float(v) for v in value]
    if len(values) != d:
        raise ValueError(f"{what} = {list(value)}: expected one value or {d} (x, y[, z])")
    return values


# ---------------------------------------------------------------------------- flips
def flip_boxes(boxes: Tensor, axis: Axis, size: int) -> Tensor:
    """Mirror ``xyxy`` boxes ``Tensor[N, 2D]`` along ``axis`` of extent ``size``.

    Along box axis ``k``: ``lo' = S - hi``, ``hi' = S - lo``; the other coordinates are kept.
    """
    d = spatial_dims_of(boxes)
    k = axis_index(axis, d)
    out = boxes.clone()
    out[..., k] = size - boxes[..., k + d]
    out[..., k + d] = size - boxes[..., k]
    return out


def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror ``xyxy`` boxes left-right (along ``x``) in an image of ``width``: ``x1' = W - x2``."""
    return flip_boxes(boxes, "x", width)


def vflip_boxes(boxes: Tensor, height: int) -> Tensor:
    """Mirror ``xyxy`` boxes top-bottom (along ``y``) in an image of ``height``: ``y1' = H - y2``."""
    return flip_boxes(boxes, "y", height)


def flip(
    images: Tensor, boxes: BoxesT, axis: Axis, spatial_dims: int | None = None
) -> tuple[Tensor, BoxesT]:
    """Flip images ``(C, *spatial)``/``(B, C, *spatial)`` and their boxes along ``axis`` (exact).

    Args:
        images: one image or a batch (module docstring).
        boxes: ``Tensor[N, 2D]`` for one image, a list of ``B`` of them for a batch.
        axis: ``"x"``, ``"y"`` or (3D) ``"z"``, or its index.
        spatial_dims: checked against the boxes' width when given.
    """
    d, _ = _layout(images, boxes, spatial_dims)
    k = axis_index(axis, d)
    n = int(images.shape[-1 - k])
    return images.flip(-1 - k), _map_boxes(boxes, lambda b: flip_boxes(b, k, n))


def hflip(images: Tensor, boxes: BoxesT, spatial_dims: int | None = None) -> tuple[Tensor, BoxesT]:
    """Flip images and their boxes left-right (along ``x``, the last tensor axis; exact)."""
    return flip(images, boxes, "x", spatial_dims)


def vflip(images: Tensor, boxes: BoxesT, spatial_dims: int | None = None) -> tuple[Tensor, BoxesT]:
    """Flip images and their boxes top-bottom (along ``y``; exact)."""
    return flip(images, boxes, "y", spatial_dims)


# ---------------------------------------------------------------------------- rotation
def _cos_sin(angle_deg: float) -> tuple[float, float]:
    """Exact values at multiples of 90 degrees (so those rotations are exact)."""
    a = float(angle_deg) % 360.0
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    if a in exact:
        return exact[a]
    rad = math.radians(a)
    return math.cos(rad), math.sin(rad)


def rotation_plane(axis: Axis | None, spatial_dims: int) -> tuple[int, int]:
    """Box axes ``(u, v)`` turned by a rotation about ``axis`` (``None``: ``"z"``).

    The plane of the other two axes, in cyclic order: about ``z`` it is ``(x, y)`` (the only
    2D rotation), about ``x`` ``(y, z)``, about ``y`` ``(z, x)``. A rotation about ``z`` of a
    volume is therefore the 2D rotation of every ``z``-slice.
    """
    _check_spatial_dims(spatial_dims)
    if spatial_dims == 2:
        if axis not in (None, "z", 2):
            raise ValueError(
                f"rotation axis = {axis!r}: a 2D rotation turns the (x, y) plane, so the axis "
                "is 'z' (or None)"
            )
        return 0, 1
    k = 2 if axis is None else axis_index(axis, 3)
    return (k + 1) % 3, (k + 2) % 3


def rotate_boxes(
    boxes: Tensor, angle_deg: float, size: Sequence[int], axis: Axis | None = None
) -> Tensor:
    """Rotate ``xyxy`` boxes with their image about its centre and ``axis``, then clip.

    In the rotated plane ``(u, v)`` (:func:`rotation_plane`) the new box is the axis-aligned
    box of the four rotated corners (so it grows for angles that are not multiples of 90
    degrees: the exact enclosing box of the rotated rectangle, not of the object inside
    it); the coordinates along ``axis`` do not change. Positive angles turn from ``+u``
    towards ``-v``, i.e. counter-clockwise as displayed in 2D (``y`` down), as
    ``torchvision``'s ``rotate``; the canvas keeps its size.

    Args:
        boxes: ``Tensor[N, 2D]`` xyxy.
        angle_deg: rotation angle in degrees.
        size: spatial size of the image in tensor order, ``(H, W)`` or ``(D, H, W)``.
        axis: rotation axis (``None``: ``"z"``, the only one in 2D).

    Returns:
        ``Tensor[N, 2D]`` xyxy clipped to the image (same ``N`` and order).
    """
    d = spatial_dims_of(boxes)
    if len(size) != d:
        raise ValueError(f"size {tuple(size)} does not match {d}D boxes")
    u, v = rotation_plane(axis, d)
    c, s = _cos_sin(angle_deg)
    cu, cv = size[d - 1 - u] / 2.0, size[d - 1 - v] / 2.0
    u1, v1, u2, v2 = boxes[..., u], boxes[..., v], boxes[..., u + d], boxes[..., v + d]
    us = torch.stack([u1, u2, u1, u2], dim=-1) - cu  # (N, 4) corner offsets
    vs = torch.stack([v1, v1, v2, v2], dim=-1) - cv  # (N, 4)
    # v points down, so a counter-clockwise turn on screen is u' = u c + v s, v' = -u s + v c
    ur = cu + us * c + vs * s  # (N, 4)
    vr = cv - us * s + vs * c  # (N, 4)
    out = boxes.clone()
    out[..., u] = ur.min(dim=-1).values
    out[..., v] = vr.min(dim=-1).values
    out[..., u + d] = ur.max(dim=-1).values
    out[..., v + d] = vr.max(dim=-1).values
    return clip_boxes(out, tuple(int(x) for x in size))


def _rotate_image(image: Tensor, angle_deg: float, fill: float, u: int, v: int) -> Tensor:
    """Rotate the tensor plane of box axes ``(u, v)`` (tensor dims ``-1-u``, ``-1-v``)."""
    a = float(angle_deg) % 360.0
    du, dv = -1 - u, -1 - v
    if a == 0.0:
        return image.clone()
    if a == 180.0:
        return image.flip(du).flip(dv)
    if a in (90.0, 270.0) and image.shape[du] == image.shape[dv]:
        return torch.rot90(image, k=1 if a == 90.0 else 3, dims=(dv, du))  # counter-clockwise
    if (dv, du) == (-2, -1):
        return TF.rotate(image, a, interpolation=InterpolationMode.BILINEAR, fill=[fill])
    moved = image.movedim((dv, du), (-2, -1))  # (..., S_v, S_u): the plane as rows, columns
    out = TF.rotate(moved, a, interpolation=InterpolationMode.BILINEAR, fill=[fill])
    return out.movedim((-2, -1), (dv, du))


def rotate(
    images: Tensor,
    boxes: BoxesT,
    angle_deg: float | Sequence[float],
    fill: float = 0.0,
    axis: Axis | None = None,
    spatial_dims: int | None = None,
) -> tuple[Tensor, BoxesT]:
    """Rotate images and boxes about the image centre and ``axis``, keeping the canvas size.

    Positive angles are counter-clockwise in the rotated plane (``torchvision`` convention,
    :func:`rotate_boxes`). Multiples of 90 degrees are exact (pixel permutations when the
    rotated plane is square, flips for 180); other angles use bilinear interpolation within
    each plane perpendicular to ``axis`` (exactly the 2D rotation of every slice) and fill
    uncovered pixels with ``fill``. Boxes: see :func:`rotate_boxes` (clipped, not filtered).

    Args:
        images: ``(C, *spatial)`` or ``(B, C, *spatial)``.
        boxes: ``Tensor[N, 2D]`` or a list of ``B`` of them.
        angle_deg: one angle, or one per image of a batch.
        fill: value of pixels rotated in from outside.
        axis: rotation axis; ``None`` = ``"z"`` (2D: the only one; 3D: the ``(x, y)`` plane).
        spatial_dims: checked against the boxes' width when given.
    """
    d, batched = _layout(images, boxes, spatial_dims)
    u, v = rotation_plane(axis, d)
    size = _spatial(images, d)
    if isinstance(angle_deg, (int, float)):
        angle = float(angle_deg)
        return _rotate_image(images, angle, fill, u, v), _map_boxes(
            boxes, lambda b: rotate_boxes(b, angle, size, axis)
        )
    angles = [float(a) for a in angle_deg]
    if not batched or not isinstance(boxes, list) or len(angles) != images.shape[0]:
        raise ValueError(f"{len(angles)} angles need a batch of as many images and box tensors")
    out = torch.stack(
        [_rotate_image(im, a, fill, u, v) for im, a in zip(images, angles, strict=True)]
    )  # (B, C, *spatial)
    new_boxes = [rotate_boxes(b, a, size, axis) for b, a in zip(boxes, angles, strict=True)]
    return out, new_boxes


# ---------------------------------------------------------------------------- resize / pad
def resize_boxes(boxes: Tensor, scale: float | Sequence[float]) -> Tensor:
    """Scale ``xyxy`` boxes by ``scale``: one factor for every axis, or one per axis ``(x, y[, z])``."""
    if isinstance(scale, (int, float)):
        return boxes * scale
    d = spatial_dims_of(boxes)
    factors = _per_axis(scale, d, "resize scale")
    dtype = torch.promote_types(boxes.dtype, torch.float32)  # integer boxes become float
    f = torch.tensor(factors * 2, dtype=dtype, device=boxes.device)  # (2D,)
    return boxes * f


def pad_to_multiple(
    images: Tensor, multiple: int, fill: float = 0.0, spatial_dims: int = 2
) -> Tensor:
    """Pad images at the end of every spatial axis so each size is a multiple of ``multiple``.

    2D: bottom and right; 3D: also the back. Boxes do not move (the origin is the first
    pixel).

    Args:
        images: ``(C, *spatial)`` or ``(B, C, *spatial)``.
        multiple: the divisor (``<= 1``: no padding).
        fill: padding value.
        spatial_dims: 2 or 3 (3D callers must say so).
    """
    _image_layout(images, spatial_dims)
    if multiple <= 1:
        return images
    pads = [(-s) % multiple for s in _spatial(images, spatial_dims)]  # tensor order
    if not any(pads):
        return images
    amounts: list[int] = []
    for p in reversed(pads):  # F.pad starts from the last axis
        amounts += [0, p]
    return torch.nn.functional.pad(images, amounts, value=fill)  # (.., S_k + pad_k, ...)


def _resize_image(images: Tensor, new_size: tuple[int, ...], d: int, batched: bool) -> Tensor:
    """Bilinear with antialiasing in 2D (``torchvision``); trilinear in 3D (no antialiasing)."""
    if new_size == _spatial(images, d):
        return images
    if d == 2:
        return TF.resize(
            images, list(new_size), interpolation=InterpolationMode.BILINEAR, antialias=True
        )
    x = images if batched else images[None]  # (B, C, D, H, W)
    out = torch.nn.functional.interpolate(x, size=new_size, mode="trilinear", align_corners=False)
    return out if batched else out[0]


def rescale(
    images: Tensor,
    boxes: BoxesT,
    scale: float | Sequence[float],
    pad_to: int = 1,
    fill: float = 0.0,
    spatial_dims: int | None = None,
) -> tuple[Tensor, BoxesT]:
    """Resize by ``scale`` per axis, then pad to a multiple of ``pad_to``.

    The new size along box axis ``k`` is ``max(1, round(S_k * s_k))``; boxes are multiplied
    by ``s_k`` along that axis (so dividing by it gives back the original boxes; the
    rounding of the image size moves edges by < 0.5 px) and clipped to the resized image.

    Args:
        images: ``(C, *spatial)`` or ``(B, C, *spatial)``.
        boxes: ``Tensor[N, 2D]`` or a list of ``B`` of them.
        scale: one factor, or one per axis in box order ``(x, y[, z])``; each > 0.
        pad_to: pad every spatial size up to a multiple of this (1 = no padding).
        fill: padding value.
        spatial_dims: checked against the boxes' width when given.
    """
    d, batched = _layout(images, boxes, spatial_dims)
    factors = _per_axis(scale, d, "rescale scale")
    if any(not f > 0 for f in factors):
        raise ValueError(f"rescale scale = {scale}: every factor must be > 0")
    size = _spatial(images, d)
    new = tuple(max(1, round(size[t] * factors[d - 1 - t])) for t in range(d))  # tensor order
    out = pad_to_multiple(_resize_image(images, new, d, batched), pad_to, fill, spatial_dims=d)
    return out, _map_boxes(boxes, lambda b: clip_boxes(resize_boxes(b, scale), new))


def resize(
    images: Tensor,
    boxes: BoxesT,
    size: int,
    pad_to: int = 128,
    fill: float = 0.0,
    spatial_dims: int | None = None,
) -> tuple[Tensor, BoxesT, float]:
    """Resize so the longest side is ``size`` (aspect ratio kept), then pad to ``pad_to``.

    The new size is ``round(S_k * s)`` along every axis with ``s = size / max(S)``; boxes are
    multiplied by ``s`` (one factor for all axes, so ``boxes / s`` gives back the original
    boxes; the rounding of the image size moves edges by < 0.5 px) and clipped to the
    resized image. Padding goes to the end of every axis, so with ``pad_to=128`` the strides
    8..128 of FPN levels P3..P7 divide every size exactly. 2D: bilinear interpolation with
    antialiasing; 3D: trilinear, without antialiasing (``torch`` has none in 3D).

    Returns:
        ``(images, boxes, s)``.
    """
    d, batched = _layout(images, boxes, spatial_dims)
    if size < 1:
        raise ValueError(f"resize size = {size}: must be >= 1")
    old = _spatial(images, d)
    scale = size / max(old)
    new = tuple(max(1, round(s * scale)) for s in old)
    out = pad_to_multiple(_resize_image(images, new, d, batched), pad_to, fill, spatial_dims=d)
    return (
        out,
        _map_boxes(boxes, lambda b: clip_boxes(resize_boxes(b, scale), new)),
        scale,
    )


# ---------------------------------------------------------------------------- crop
def _check_region(region: Sequence[int], size: tuple[int, ...]) -> list[int]:
    d = len(size)
    r = [int(x) for x in region]
    if len(r) != 2 * d or any(int(x) != x for x in region):
        raise ValueError(f"crop region = {list(region)}: expected {2 * d} integers xyxy")
    for k in range(d):
        extent = size[d - 1 - k]
        if not 0 <= r[k] < r[k + d] <= extent:
            raise ValueError(
                f"crop region = {r}: along {AXES[k]} need 0 <= {r[k]} < {r[k + d]} <= {extent} "
                f"(image size {size})"
            )
    return r


def crop_boxes(boxes: Tensor, region: Sequence[int]) -> Tensor:
    """Boxes in the coordinates of the window ``region`` (``xyxy``, box order), clipped to it."""
    d = spatial_dims_of(boxes)
    lo, hi = list(region[:d]), list(region[d:])
    shift = torch.tensor(lo * 2, dtype=boxes.dtype, device=boxes.device)  # (2D,)
    window = tuple(int(hi[k] - lo[k]) for k in reversed(range(d)))  # tensor order
    return clip_boxes(boxes - shift, window)


def _window(images: Tensor, region: Sequence[int], d: int) -> Tensor:
    index: tuple[Any, ...] = (Ellipsis, *_region_index(region, d))
    return images[index]  # (..., *window)


def crop(
    images: Tensor, boxes: BoxesT, region: Sequence[int], spatial_dims: int | None = None
) -> tuple[Tensor, BoxesT]:
    """The window ``region`` of the images, and the boxes moved into it and clipped.

    Args:
        images: ``(C, *spatial)`` or ``(B, C, *spatial)``.
        boxes: ``Tensor[N, 2D]`` or a list of ``B`` of them.
        region: the window as an integer ``xyxy`` box (``x1 y1 [z1] x2 y2 [z2]``, exclusive
            upper edges) inside the image, non-empty along every axis.
        spatial_dims: checked against the boxes' width when given.

    Returns:
        ``(images, boxes)``; the image is a view of the input (the ``Sample`` transform
        copies it). Boxes keep their number and order (see :func:`kept_fraction`).
    """
    d = _layout(images, boxes, spatial_dims)[0]
    r = _check_region(region, _spatial(images, d))
    return _window(images, r, d), _map_boxes(boxes, lambda b: crop_boxes(b, r))


def kept_fraction(before: Tensor, after: Tensor) -> Tensor:
    """Fraction ``Tensor[N]`` of each box's area (volume) left: ``area(after) / area(before)``.

    Boxes with no area before count as fully kept (``1``).
    """
    a0, a1 = box_area(before), box_area(after)  # (N,)
    return torch.where(a0 > 0, a1 / a0.clamp(min=1e-12), torch.ones_like(a0))


# ---------------------------------------------------------------------------- cutout / intensity
def cutout_regions(
    batch: int,
    n: int,
    size: int | Sequence[int],
    spatial_size: Sequence[int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``n`` cutout boxes per image: ``Tensor[batch, n, 2D]`` ``xyxy`` (int64 pixels).

    The low corner is uniform over the positions that keep the box inside the image, drawn
    axis by axis in tensor order (``(z,) y, x``); ``hi = lo + size`` is exclusive, as every
    box of the library.

    Args:
        batch: number of images.
        n: boxes per image.
        size: side (a cube/square), or one per axis in box order ``(x, y[, z])``.
        spatial_size: image size in tensor order ``(H, W)``/``(D, H, W)``.
        generator: RNG; default torch's global one.
    """
    d = len(spatial_size)
    _check_spatial_dims(d)
    extents = [int(spatial_size[d - 1 - k]) for k in range(d)]  # box order
    sizes = [int(s) for s in _per_axis(size, d, "cutout size")]
    if n < 0 or any(not 1 <= s <= e for s, e in zip(sizes, extents, strict=True)):
        limit = str(min(extents)) if isinstance(size, int) else f"{extents} (x, y[, z])"
        raise ValueError(f"cutout n={n}, size={size}: need n >= 0 and 1 <= size <= {limit}")
    lo: list[Tensor] = [torch.empty(0)] * d
    for k in reversed(range(d)):  # (z,) y, x: the 2D order ys then xs
        lo[k] = torch.randint(0, extents[k] - sizes[k] + 1, (batch, n), generator=generator)
    low = torch.stack(lo, dim=-1)  # (B, n, D)
    return torch.cat([low, low + torch.tensor(sizes)], dim=-1)  # (B, n, 2D)


def cutout_squares(
    batch: int, n: int, size: int, height: int, width: int, generator: torch.Generator | None = None
) -> Tensor:
    """2D :func:`cutout_regions`: ``n`` squares per image, ``Tensor[batch, n, 4]`` ``xyxy``."""
    return cutout_regions(batch, n, size, (height, width), generator)


def regions_mask(regions: Tensor, spatial_size: Sequence[int]) -> Tensor:
    """Pixels covered by the boxes of :func:`cutout_regions`: ``Tensor[B, *spatial]`` bool."""
    d = len(spatial_size)
    if regions.ndim != 3 or int(regions.shape[-1]) != 2 * d:
        raise ValueError(
            f"regions of shape {tuple(regions.shape)} for a {d}D image: expected (B, n, {2 * d})"
        )
    mask = torch.zeros((int(regions.shape[0]), *(int(s) for s in spatial_size)), dtype=torch.bool)
    for i, per_image in enumerate(regions.tolist()):
        for r in per_image:
            index: tuple[int | slice, ...] = (i, *_region_index(r, d))
            mask[index] = True
    return mask


def squares_mask(squares: Tensor, height: int, width: int) -> Tensor:
    """Pixels covered by the squares of :func:`cutout_squares`: ``Tensor[B, H, W]`` bool."""
    return regions_mask(squares, (height, width))


def visible_fraction(boxes: Tensor, erased: Tensor) -> Tensor:
    """Fraction of each box's pixels (voxels) that are *not* erased.

    Args:
        boxes: ``Tensor[N, 2D]`` ``xyxy`` absolute pixels of one image.
        erased: ``Tensor[*spatial]`` bool (``(H, W)`` or ``(D, H, W)``), e.g. one image of
            :func:`regions_mask`.

    Returns:
        ``Tensor[N]`` in ``[0, 1]``; the box is rounded outwards to whole pixels and clipped
        to the image (a box with no pixel inside counts as fully visible).
    """
    d = spatial_dims_of(boxes)
    if erased.ndim != d:
        raise ValueError(
            f"erased mask of shape {tuple(erased.shape)} for {d}D boxes: expected {d} axes"
        )
    size = tuple(int(s) for s in erased.shape)  # tensor order
    if boxes.numel() == 0:
        return boxes.new_ones((0,))
    # integral image with a zero first slice on every axis: S[i] = erased[:i_0, :i_1, ...].sum()
    integral = torch.zeros([s + 1 for s in size], dtype=torch.float64)
    cum = erased.to(torch.float64)
    for t in range(d):
        cum = cum.cumsum(t)
    integral[(slice(1, None),) * d] = cum
    lo: list[Tensor] = []  # tensor order
    hi: list[Tensor] = []
    for t in range(d):
        k = d - 1 - t  # box axis of tensor dim t
        lo.append(boxes[:, k].floor().clamp(0, size[t]).long())
        hi.append(boxes[:, k + d].ceil().clamp(0, size[t]).long())
    extent = hi[0] - lo[0]
    for t in range(1, d):
        extent = extent * (hi[t] - lo[t])
    area = extent.to(torch.float64)  # (N,)
    covered = torch.zeros_like(area)  # (N,), inclusion-exclusion over the 2^D corners
    for corner in itertools.product((0, 1), repeat=d):
        value = integral[tuple(hi[t] if c else lo[t] for t, c in enumerate(corner))]
        covered = covered + value if (d - sum(corner)) % 2 == 0 else covered - value
    frac = torch.where(area > 0, 1.0 - covered / area.clamp_min(1.0), torch.ones_like(area))
    return frac.to(boxes.dtype)


def fill_regions(
    images: Tensor, regions: Tensor, value: float = 0.0, spatial_dims: int = 2
) -> Tensor:
    """A copy of ``(B, C, *spatial)`` ``images`` with each image's ``regions`` set to ``value``."""
    _check_spatial_dims(spatial_dims)
    if images.ndim != spatial_dims + 2 or int(regions.shape[-1]) != 2 * spatial_dims:
        raise ValueError(
            f"fill_regions: images {tuple(images.shape)} and regions {tuple(regions.shape)} "
            f"for spatial_dims={spatial_dims}: expected (B, C, *spatial) and (B, n, "
            f"{2 * spatial_dims})"
        )
    out = images.clone()
    for i, per_image in enumerate(regions.tolist()):
        for r in per_image:
            index: tuple[int | slice, ...] = (i, slice(None), *_region_index(r, spatial_dims))
            out[index] = value
    return out


def fill_squares(images: Tensor, squares: Tensor, value: float = 0.0) -> Tensor:
    """A copy of ``(B, C, H, W)`` ``images`` with each image's ``squares`` set to ``value``."""
    return fill_regions(images, squares, value, spatial_dims=2)


def cutout(
    images: Tensor,
    n: int,
    size: int | Sequence[int],
    generator: torch.Generator | None = None,
    value: float = 0.0,
    spatial_dims: int = 2,
) -> Tensor:
    """Fill ``n`` boxes of side ``size`` with ``value``, independently per image.

    The boxes (squares, cubes, or per-axis sizes) lie fully inside the image (low corner
    uniform over valid positions, :func:`cutout_regions`) and may overlap each other. Boxes
    of objects are unchanged (objects may be partly hidden, as in DeVries & Taylor's Cutout).

    Args:
        images: ``(C, *spatial)`` or ``(B, C, *spatial)``; not modified.
        n: boxes per image.
        size: side in pixels (at most the smallest image side), or one per axis ``(x, y[, z])``.
        generator: RNG; default torch's global one.
        value: fill value.
        spatial_dims: 2 or 3; tells one image from a batch (3D callers must pass 3).

    Returns:
        A new tensor of the same shape.
    """
    batched = _image_layout(images, spatial_dims)
    size_t = _spatial(images, spatial_dims)
    batch = images if batched else images[None]  # (B, C, *spatial) view
    regions = cutout_regions(int(batch.shape[0]), n, size, size_t, generator)  # (B, n, 2D)
    out = fill_regions(batch, regions, value, spatial_dims)
    return out if batched else out[0]


def normalize(
    images: Tensor, mean: Sequence[float], std: Sequence[float], spatial_dims: int = 2
) -> Tensor:
    """``(x - mean[c]) / std[c]`` per channel of ``(C, *spatial)``/``(B, C, *spatial)`` images."""
    _image_layout(images, spatial_dims)
    c = int(images.shape[-1 - spatial_dims])
    if len(mean) != c or len(std) != c or any(s <= 0 for s in std):
        raise ValueError(f"normalize mean={list(mean)}, std={list(std)}: need {c} values, std > 0")
    shape = (c,) + (1,) * spatial_dims
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images - m) / s


def ct_window(images: Tensor, lo: float, hi: float) -> Tensor:
    """Clip Hounsfield units to ``[lo, hi]`` and map linearly to ``[-1, 1]``."""
    if not hi > lo:
        raise ValueError(f"CT window lo={lo}, hi={hi}: need hi > lo")
    return (images.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


def drop_degenerate(
    boxes: Tensor, labels: Tensor, size: tuple[int, ...], min_size: float = 1.0
) -> tuple[Tensor, Tensor, int]:
    """Clip boxes to an image of spatial ``size`` (tensor order) and drop those with a side < ``min_size``.

    Returns:
        ``(boxes Tensor[M, 2D], labels Tensor[M], number dropped)``.
    """
    clipped = clip_boxes(boxes, size)
    keep = nondegenerate(clipped, min_size)  # (N,)
    return clipped[keep], labels[keep], int((~keep).sum())
