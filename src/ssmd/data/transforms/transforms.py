"""``Sample -> Sample`` transforms, 2D and 3D: the image, its boxes and ignore regions move together.

One code path serves both: every transform reads the sample's ``spatial_dims`` and works on
``image`` ``(C, *spatial)`` and boxes ``Tensor[N, 2 * spatial_dims]``; axes are named in box
order (``"x"``: the last tensor axis, ``"y"``, ``"z"``: the first spatial axis of a volume).

Every geometric transform ends the same way (:func:`_finish`): boxes are clipped to the
new image, boxes with a side < 1 px are dropped together with their labels and counted
in :attr:`~ssmd.structures.sample.Sample.dropped_boxes`; ignore regions are clipped but
kept (an empty ignore region ignores nothing). Crops also drop the boxes that keep less
than ``min_visible`` of their area (volume), with their labels, and count them the same
way. The math is in :mod:`ssmd.data.transforms.functional`.

Random transforms draw from ``generator`` when given, else from torch's global RNG
(seeded by the engine). Transforms never modify their input sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ssmd.data.transforms import functional as F
from ssmd.data.transforms.functional import AXES, Axis
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample

__all__ = [
    "CTWindow",
    "Compose",
    "Crop",
    "Cutout",
    "Flip",
    "HFlip",
    "Normalize",
    "RandomFlip",
    "RandomHFlip",
    "RandomRotate",
    "RandomSpatialCrop",
    "RandomVFlip",
    "Resize",
    "Rotate",
    "VFlip",
    "Zoom",
]


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


def _finish(
    sample: Sample, image: Tensor, boxes: Tensor, ignore: Tensor, **changes: object
) -> Sample:
    """New sample with ``image``; boxes clipped and degenerate ones dropped and counted."""
    size = tuple(int(s) for s in image.shape[-sample.spatial_dims :])  # (D,) H, W
    kept, labels, dropped = F.drop_degenerate(boxes, sample.labels, size)
    ign = clip_boxes(ignore, size)
    return sample.replace(
        image=image,
        boxes=kept,
        labels=labels,
        ignore=ign,
        dropped_boxes=sample.dropped_boxes + dropped,
        **changes,
    )


def _check_axis(axis: Axis | None, what: str, allow_none: bool = False) -> None:
    ok = (allow_none and axis is None) or axis in AXES or axis in (0, 1, 2)
    if not ok or isinstance(axis, bool):
        raise ValueError(f"{what} axis = {axis!r}: expected one of {AXES} or 0, 1, 2")


def _check_p(p: float, what: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} p = {p}: must lie in [0, 1]")


class Compose:
    """Apply transforms in order.

    Args:
        transforms: ``Sample -> Sample`` callables.
    """

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose got a non-callable transform {t!r}")
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# ---------------------------------------------------------------------------- flips
class Flip:
    """Mirror along one spatial axis (always); exact.

    Args:
        axis: ``"x"`` (left-right), ``"y"`` (top-bottom) or, in 3D, ``"z"``; or its index.
    """

    def __init__(self, axis: Axis = "x") -> None:
        _check_axis(axis, type(self).__name__)
        self.axis = axis

    def __call__(self, sample: Sample) -> Sample:
        k = F.axis_index(self.axis, sample.spatial_dims)
        n = int(sample.image.shape[-1 - k])
        boxes = F.flip_boxes(sample.boxes, k, n)
        ignore = F.flip_boxes(sample.ignore, k, n)
        return _finish(sample, sample.image.flip(-1 - k), boxes, ignore)

    def __repr__(self) -> str:
        return f"Flip(axis={self.axis!r})"


class HFlip(Flip):
    """Flip left-right (along ``x``, always)."""

    def __init__(self) -> None:
        super().__init__("x")

    def __repr__(self) -> str:
        return "HFlip()"


class VFlip(Flip):
    """Flip top-bottom (along ``y``, always)."""

    def __init__(self) -> None:
        super().__init__("y")

    def __repr__(self) -> str:
        return "VFlip()"


class RandomFlip:
    """Flip along ``axis`` with probability ``p`` (one uniform draw per call).

    Args:
        axis: the axis (see :class:`Flip`).
        p: flip probability in ``[0, 1]``.
        generator: RNG; default torch's global one.
    """

    def __init__(
        self, axis: Axis = "x", p: float = 0.5, generator: torch.Generator | None = None
    ) -> None:
        _check_p(p, type(self).__name__)
        self.flip = Flip(axis)
        self.p = p
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        return self.flip(sample) if _uniform(self.generator) < self.p else sample

    def __repr__(self) -> str:
        return f"RandomFlip(axis={self.flip.axis!r}, p={self.p})"


class RandomHFlip(RandomFlip):
    """Flip left-right with probability ``p``.

    Args:
        p: flip probability in ``[0, 1]``.
        generator: RNG; default torch's global one.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__("x", p, generator)

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class RandomVFlip(RandomFlip):
    """Flip top-bottom with probability ``p``.

    Args:
        p: flip probability in ``[0, 1]``.
        generator: RNG; default torch's global one.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__("y", p, generator)

    def __repr__(self) -> str:
        return f"RandomVFlip(p={self.p})"


# ---------------------------------------------------------------------------- rotation
class Rotate:
    """Rotate by a fixed angle (degrees, counter-clockwise) about the image centre and ``axis``.

    In 2D the rotation turns the ``(x, y)`` plane; in 3D it turns the plane of the two
    axes other than ``axis`` (about ``"z"``, the default: every axial slice as in 2D).
    Boxes become the axis-aligned box of their rotated corners, clipped; multiples of 90
    degrees are exact (:func:`~ssmd.data.transforms.functional.rotate_boxes`).

    Args:
        angle_deg: the angle.
        fill: value of pixels rotated in from outside.
        axis: rotation axis (``None``: ``"z"``).
    """

    def __init__(self, angle_deg: float, fill: float = 0.0, axis: Axis | None = None) -> None:
        _check_axis(axis, "Rotate", allow_none=True)
        self.angle_deg = float(angle_deg)
        self.fill = fill
        self.axis = axis

    def __call__(self, sample: Sample) -> Sample:
        d = sample.spatial_dims
        image, boxes = F.rotate(
            sample.image, sample.boxes, self.angle_deg, self.fill, axis=self.axis, spatial_dims=d
        )
        size = tuple(int(s) for s in image.shape[-d:])
        ignore = F.rotate_boxes(sample.ignore, self.angle_deg, size, axis=self.axis)
        return _finish(sample, image, boxes, ignore)

    def __repr__(self) -> str:
        axis = "" if self.axis is None else f", axis={self.axis!r}"
        return f"Rotate(angle_deg={self.angle_deg}{axis})"


class RandomRotate:
    """Rotate by an angle drawn uniformly from ``[-max_deg, max_deg]`` (about ``axis``).

    Args:
        max_deg: largest absolute angle, degrees.
        fill: value of pixels rotated in from outside.
        generator: RNG; default torch's global one.
        axis: rotation axis (``None``: ``"z"``; see :class:`Rotate`).
    """

    def __init__(
        self,
        max_deg: float,
        fill: float = 0.0,
        generator: torch.Generator | None = None,
        axis: Axis | None = None,
    ) -> None:
        if max_deg < 0:
            raise ValueError(f"RandomRotate max_deg = {max_deg}: must be >= 0")
        _check_axis(axis, "RandomRotate", allow_none=True)
        self.max_deg = float(max_deg)
        self.fill = fill
        self.generator = generator
        self.axis = axis

    def __call__(self, sample: Sample) -> Sample:
        angle = (2.0 * _uniform(self.generator) - 1.0) * self.max_deg
        return Rotate(angle, self.fill, self.axis)(sample)

    def __repr__(self) -> str:
        axis = "" if self.axis is None else f", axis={self.axis!r}"
        return f"RandomRotate(max_deg={self.max_deg}{axis})"


# ---------------------------------------------------------------------------- resize
class Resize:
    """Resize so the longest side is ``size``, keep the aspect ratio, pad each axis to ``pad_to``.

    Multiplies :attr:`~ssmd.structures.sample.Sample.scale` by the factor (so
    ``boxes / scale`` are boxes in the original image). See
    :func:`~ssmd.data.transforms.functional.resize` (3D: trilinear).

    Args:
        size: target length of the longest side.
        pad_to: pad every spatial size up to a multiple of this (1 = no padding).
        fill: padding value.
    """

    def __init__(self, size: int, pad_to: int = 128, fill: float = 0.0) -> None:
        if size < 1 or pad_to < 1:
            raise ValueError(f"Resize size = {size}, pad_to = {pad_to}: both must be >= 1")
        self.size = size
        self.pad_to = pad_to
        self.fill = fill

    def __call__(self, sample: Sample) -> Sample:
        image, boxes, scale = F.resize(
            sample.image,
            sample.boxes,
            self.size,
            self.pad_to,
            self.fill,
            spatial_dims=sample.spatial_dims,
        )
        ignore = F.resize_boxes(sample.ignore, scale)
        return _finish(sample, image, boxes, ignore, scale=sample.scale * scale)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, pad_to={self.pad_to})"


class Zoom:
    """Resize by fixed factors per axis (e.g. anisotropic CT spacing to isotropic voxels).

    The size along axis ``k`` becomes ``round(S_k * s_k)`` and boxes are multiplied by
    ``s_k`` (:func:`~ssmd.data.transforms.functional.rescale`). An isotropic factor multiplies
    :attr:`~ssmd.structures.sample.Sample.scale`; unequal factors multiply
    :attr:`~ssmd.structures.sample.Sample.axis_scale` instead, so
    :meth:`~ssmd.structures.sample.Sample.original_boxes` maps boxes back either way.

    Args:
        scale: one factor, or one per axis in box order ``(x, y[, z])``; each > 0.
        pad_to: pad every spatial size up to a multiple of this (1 = no padding).
        fill: padding value.
    """

    def __init__(self, scale: float | Sequence[float], pad_to: int = 1, fill: float = 0.0) -> None:
        factors = [float(scale)] if isinstance(scale, (int, float)) else [float(s) for s in scale]
        if not factors or len(factors) > 3 or any(not f > 0 for f in factors) or pad_to < 1:
            raise ValueError(
                f"Zoom scale = {scale}, pad_to = {pad_to}: need 1 to 3 factors > 0, pad_to >= 1"
            )
        self.scale: float | tuple[float, ...] = (
            float(scale) if isinstance(scale, (int, float)) else tuple(factors)
        )
        self.pad_to = pad_to
        self.fill = fill

    def __call__(self, sample: Sample) -> Sample:
        d = sample.spatial_dims
        image, boxes = F.rescale(
            sample.image, sample.boxes, self.scale, self.pad_to, self.fill, spatial_dims=d
        )
        ignore = F.resize_boxes(sample.ignore, self.scale)
        factors = [self.scale] * d if isinstance(self.scale, float) else list(self.scale)
        if len(set(factors)) == 1:
            return _finish(sample, image, boxes, ignore, scale=sample.scale * factors[0])
        prev = sample.axis_scale or (1.0,) * d
        axis_scale = tuple(p * f for p, f in zip(prev, factors, strict=True))
        return _finish(sample, image, boxes, ignore, axis_scale=axis_scale)

    def __repr__(self) -> str:
        return f"Zoom(scale={self.scale}, pad_to={self.pad_to})"


# ---------------------------------------------------------------------------- crop
def _check_min_visible(min_visible: float, what: str) -> None:
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"{what} min_visible = {min_visible}: must lie in [0, 1]")


def _crop(sample: Sample, region: Sequence[int], min_visible: float) -> Sample:
    """Cut ``region`` (``xyxy`` ints) out of ``sample``; drop boxes keeping < ``min_visible``."""
    image, clipped = F.crop(sample.image, sample.boxes, region, spatial_dims=sample.spatial_dims)
    keep = F.kept_fraction(sample.boxes, clipped) >= min_visible  # (N,)
    dropped = int((~keep).sum())
    out = sample.replace(
        boxes=clipped[keep],
        labels=sample.labels[keep],
        dropped_boxes=sample.dropped_boxes + dropped,
    )
    ignore = F.crop_boxes(sample.ignore, region)
    return _finish(out, image.clone(), out.boxes, ignore)


class Crop:
    """Cut out a fixed window (2D rectangle or 3D cuboid).

    Boxes are moved into the window and clipped to it; a box keeping less than
    ``min_visible`` of its area (volume) is dropped *with its label* and counted in
    :attr:`~ssmd.structures.sample.Sample.dropped_boxes`, as is one left with a side
    < 1 px. Ignore regions are clipped and kept. With the default ``min_visible = 0`` only
    boxes with nothing (or a sliver < 1 px) inside the window go, as MONAI's
    ``SpatialCropBox``.

    Args:
        region: the window, integer ``xyxy`` (``x1 y1 [z1] x2 y2 [z2]``) inside the image.
        min_visible: smallest kept fraction of a box's area/volume, in ``[0, 1]``.
    """

    def __init__(self, region: Sequence[int], min_visible: float = 0.0) -> None:
        if len(region) not in (4, 6):
            raise ValueError(f"Crop region = {list(region)}: expected 4 (2D) or 6 (3D) integers")
        _check_min_visible(min_visible, "Crop")
        self.region = [int(r) for r in region]
        self.min_visible = float(min_visible)

    def __call__(self, sample: Sample) -> Sample:
        if len(self.region) != 2 * sample.spatial_dims:
            raise ValueError(
                f"Crop region = {self.region} for a {sample.spatial_dims}D sample "
                f"{sample.path or sample.image_id}: expected {2 * sample.spatial_dims} integers"
            )
        return _crop(sample, self.region, self.min_visible)

    def __repr__(self) -> str:
        return f"Crop(region={self.region}, min_visible={self.min_visible})"


class RandomSpatialCrop:
    """A random window of ``size`` (the whole axis where the image is smaller), 2D or 3D.

    The window's low corner is uniform over the positions inside the image, drawn axis by
    axis in tensor order (``(z,) y, x``). Boxes and labels as in :class:`Crop`.

    Args:
        size: window side, or one per axis in box order ``(x, y[, z])``.
        min_visible: smallest kept fraction of a box's area/volume (see :class:`Crop`).
        generator: RNG; default torch's global one.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        min_visible: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        sizes = [int(size)] if isinstance(size, int) else [int(s) for s in size]
        if not 1 <= len(sizes) <= 3 or any(s < 1 for s in sizes):
            raise ValueError(f"RandomSpatialCrop size = {size}: need 1 to 3 sides >= 1")
        _check_min_visible(min_visible, "RandomSpatialCrop")
        self.size: int | tuple[int, ...] = int(size) if isinstance(size, int) else tuple(sizes)
        self.min_visible = float(min_visible)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        d = sample.spatial_dims
        sides = [self.size] * d if isinstance(self.size, int) else list(self.size)
        if len(sides) != d:
            raise ValueError(
                f"RandomSpatialCrop size = {self.size} for a {d}D sample "
                f"{sample.path or sample.image_id}: expected one side or {d}"
            )
        extents = [int(sample.image.shape[-1 - k]) for k in range(d)]  # box order
        window = [min(s, e) for s, e in zip(sides, extents, strict=True)]
        lo = [0] * d
        for k in reversed(range(d)):  # (z,) y, x
            hi = extents[k] - window[k] + 1
            lo[k] = int(torch.randint(0, hi, (), generator=self.generator).item())
        region = lo + [lo[k] + window[k] for k in range(d)]
        return _crop(sample, region, self.min_visible)

    def __repr__(self) -> str:
        return f"RandomSpatialCrop(size={self.size}, min_visible={self.min_visible})"


# ---------------------------------------------------------------------------- cutout / intensity
class Cutout:
    """Fill ``n`` random boxes (squares, cubes) of side ``size`` with ``value``; boxes unchanged.

    Args:
        n: number of erased boxes.
        size: side in pixels, or one per axis in box order ``(x, y[, z])``.
        value: fill value.
        generator: RNG; default torch's global one.
    """

    def __init__(
        self,
        n: int,
        size: int | Sequence[int],
        value: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        sizes = [size] if isinstance(size, int) else list(size)
        if n < 0 or not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"Cutout n = {n}, size = {size}: need n >= 0, size >= 1")
        self.n = n
        self.size: int | tuple[int, ...] = size if isinstance(size, int) else tuple(sizes)
        self.value = value
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        image = F.cutout(
            sample.image,
            self.n,
            self.size,
            self.generator,
            self.value,
            spatial_dims=sample.spatial_dims,
        )
        return sample.replace(image=image)

    def __repr__(self) -> str:
        return f"Cutout(n={self.n}, size={self.size})"


class Normalize:
    """Per-channel ``(x - mean) / std``.

    Args:
        mean: one value per channel.
        std: one positive value per channel.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(
                f"Normalize mean={list(mean)}, std={list(std)}: equal lengths, std > 0"
            )
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(self, sample: Sample) -> Sample:
        image = F.normalize(sample.image, self.mean, self.std, spatial_dims=sample.spatial_dims)
        return sample.replace(image=image)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class CTWindow:
    """Clip Hounsfield units to ``[lo, hi]`` and scale to ``[-1, 1]``.

    Args:
        lo: lower window edge (HU), maps to -1.
        hi: upper window edge (HU), maps to 1.
    """

    def __init__(self, lo: float, hi: float) -> None:
        if not hi > lo:
            raise ValueError(f"CTWindow lo = {lo}, hi = {hi}: need hi > lo")
        self.lo = float(lo)
        self.hi = float(hi)

    def __call__(self, sample: Sample) -> Sample:
        return sample.replace(image=F.ct_window(sample.image, self.lo, self.hi))

    def __repr__(self) -> str:
        return f"CTWindow(lo={self.lo}, hi={self.hi})"
