"""Scale policies: how the pixels of an image are mapped before the detector sees them.

``longer_side`` (the original default) resizes every image so its longer side is
``data.input_size``: a 256 px image is enlarged, a 1,388 px one shrunk, so the same nucleus
varies several-fold in pixels between images. ``native`` keeps each image's own pixel
grid (times a fixed ``data.scale``), so an object keeps its pixel size whatever the image
size; training then draws random crops (``data.train_crop``, with
:class:`~ssmd.data.transforms.RandomSpatialCrop`; a box keeping less than half its area is
dropped) and large images are predicted
whole or tile by tile (``eval.tile_size``, :func:`ssmd.models.inferers.tiled_predict`).
Issue 25 measures the two on held-out imaging types (``docs/benchmarks.md``).

Boxes are ``xyxy`` absolute pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from ssmd.data.transforms import functional as F
from ssmd.data.transforms.transforms import Resize, _finish
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample

__all__ = ["SCALE_POLICIES", "Rescale", "scale_policy_transform"]

SCALE_POLICIES = ("longer_side", "native")


class Rescale:
    """Resize by a fixed factor (``1.0``: keep the native grid), then pad to ``pad_to``.

    Multiplies :attr:`Sample.scale` by the factor, so ``boxes / scale`` are original boxes.
    """

    def __init__(self, factor: float = 1.0, pad_to: int = 128, fill: float = 0.0) -> None:
        if not factor > 0 or pad_to < 1:
            raise ValueError(f"Rescale factor = {factor}, pad_to = {pad_to}: need factor > 0")
        self.factor = float(factor)
        self.pad_to = pad_to
        self.fill = fill

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        h, w = int(image.shape[-2]), int(image.shape[-1])
        nh, nw = max(1, round(h * self.factor)), max(1, round(w * self.factor))
        if (nh, nw) != (h, w):
            image = TF.resize(
                image, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True
            )
        image = F.pad_to_multiple(image, self.pad_to, self.fill)
        boxes = clip_boxes(sample.boxes * self.factor, (nh, nw))
        ignore = sample.ignore * self.factor
        return _finish(sample, image, boxes, ignore, scale=sample.scale * self.factor)

    def __repr__(self) -> str:
        return f"Rescale(factor={self.factor}, pad_to={self.pad_to})"


def scale_policy_transform(
    policy: str, input_size: int, scale: float = 1.0, pad_to: int = 128
) -> Callable[[Sample], Sample]:
    """The deterministic preparation of ``data.scale_policy``.

    Raises:
        ValueError: an unknown policy, naming ``data.scale_policy`` and the known ones.
    """
    if policy == "longer_side":
        return Resize(int(input_size), pad_to=pad_to)
    if policy == "native":
        return Rescale(float(scale), pad_to=pad_to)
    raise ValueError(f"data.scale_policy = {policy!r}: expected one of {', '.join(SCALE_POLICIES)}")
