"""``Sample -> Sample`` transforms: the image, its boxes and ignore regions move together.

Every geometric transform ends the same way (:func:`_finish`): boxes are clipped to the
new image, boxes with a side < 1 px are dropped together with their labels and counted
in :attr:`~ssmd.structures.sample.Sample.dropped_boxes`; ignore regions are clipped but
kept (an empty ignore region ignores nothing). The math is in
:mod:`ssmd.data.transforms.functional`.

Random transforms draw from ``generator`` when given, else from torch's global RNG
(seeded by the engine). Transforms never modify their input sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ssmd.data.transforms import functional as F
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample

__all__ = [
    "CTWindow",
    "Compose",
    "Cutout",
    "HFlip",
    "Normalize",
    "RandomHFlip",
    "RandomRotate",
    "RandomVFlip",
    "Resize",
    "Rotate",
    "VFlip",
]


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


def _finish(
    sample: Sample, image: Tensor, boxes: Tensor, ignore: Tensor, **changes: object
) -> Sample:
    """New sample with ``image``; boxes clipped and degenerate ones dropped and counted."""
    size = (int(image.shape[-2]), int(image.shape[-1]))
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


class HFlip:
    """Flip left-right (always)."""

    def __call__(self, sample: Sample) -> Sample:
        boxes, ignore = _flip_pair(sample, horizontal=True)
        return _finish(sample, sample.image.flip(-1), boxes, ignore)

    def __repr__(self) -> str:
        return "HFlip()"


class VFlip:
    """Flip top-bottom (always)."""

    def __call__(self, sample: Sample) -> Sample:
        boxes, ignore = _flip_pair(sample, horizontal=False)
        return _finish(sample, sample.image.flip(-2), boxes, ignore)

    def __repr__(self) -> str:
        return "VFlip()"


def _flip_pair(sample: Sample, horizontal: bool) -> tuple[Tensor, Tensor]:
    h, w = int(sample.image.shape[-2]), int(sample.image.shape[-1])
    if horizontal:
        return F.hflip_boxes(sample.boxes, w), F.hflip_boxes(sample.ignore, w)
    return F.vflip_boxes(sample.boxes, h), F.vflip_boxes(sample.ignore, h)


class RandomHFlip:
    """Flip left-right with probability ``p``.

    Args:
        p: flip probability in ``[0, 1]``.
        generator: RNG; default torch's global one.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHFlip p = {p}: must lie in [0, 1]")
        self.p = p
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        return HFlip()(sample) if _uniform(self.generator) < self.p else sample

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class RandomVFlip:
    """Flip top-bottom with probability ``p``.

    Args:
        p: flip probability in ``[0, 1]``.
        generator: RNG; default torch's global one.
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomVFlip p = {p}: must lie in [0, 1]")
        self.p = p
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        return VFlip()(sample) if _uniform(self.generator) < self.p else sample

    def __repr__(self) -> str:
        return f"RandomVFlip(p={self.p})"


class Rotate:
    """Rotate by a fixed angle (degrees, counter-clockwise) about the image centre.

    Boxes become the axis-aligned box of their rotated corners
    (:func:`~ssmd.data.transforms.functional.rotate_boxes`).

    Args:
        angle_deg: the angle.
        fill: value of pixels rotated in from outside.
    """

    def __init__(self, angle_deg: float, fill: float = 0.0) -> None:
        self.angle_deg = float(angle_deg)
        self.fill = fill

    def __call__(self, sample: Sample) -> Sample:
        image, boxes = F.rotate(sample.image, sample.boxes, self.angle_deg, self.fill)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        ignore = F.rotate_boxes(sample.ignore, self.angle_deg, size)
        return _finish(sample, image, boxes, ignore)

    def __repr__(self) -> str:
        return f"Rotate(angle_deg={self.angle_deg})"


class RandomRotate:
    """Rotate by an angle drawn uniformly from ``[-max_deg, max_deg]``.

    Args:
        max_deg: largest absolute angle, degrees.
        fill: value of pixels rotated in from outside.
        generator: RNG; default torch's global one.
    """

    def __init__(
        self, max_deg: float, fill: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        if max_deg < 0:
            raise ValueError(f"RandomRotate max_deg = {max_deg}: must be >= 0")
        self.max_deg = float(max_deg)
        self.fill = fill
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        angle = (2.0 * _uniform(self.generator) - 1.0) * self.max_deg
        return Rotate(angle, self.fill)(sample)

    def __repr__(self) -> str:
        return f"RandomRotate(max_deg={self.max_deg})"


class Resize:
    """Resize so the longer side is ``size``, keep the aspect ratio, pad bottom/right to ``pad_to``.

    Multiplies :attr:`~ssmd.structures.sample.Sample.scale` by the factor (so
    ``boxes / scale`` are boxes in the original image). See
    :func:`~ssmd.data.transforms.functional.resize`.

    Args:
        size: target length of the longer side.
        pad_to: pad ``H`` and ``W`` up to a multiple of this (1 = no padding).
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
            sample.image, sample.boxes, self.size, self.pad_to, self.fill
        )
        ignore = F.resize_boxes(sample.ignore, scale)
        return _finish(sample, image, boxes, ignore, scale=sample.scale * scale)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, pad_to={self.pad_to})"


class Cutout:
    """Fill ``n`` random squares of side ``size`` with ``value`` (boxes unchanged).

    Args:
        n: number of squares.
        size: side in pixels.
        value: fill value.
        generator: RNG; default torch's global one.
    """

    def __init__(
        self, n: int, size: int, value: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        if n < 0 or size < 1:
            raise ValueError(f"Cutout n = {n}, size = {size}: need n >= 0, size >= 1")
        self.n = n
        self.size = size
        self.value = value
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        image = F.cutout(sample.image, self.n, self.size, self.generator, self.value)
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
        return sample.replace(image=F.normalize(sample.image, self.mean, self.std))

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
