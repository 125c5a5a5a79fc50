"""Transforms that move an image (2D or 3D) and its ``xyxy`` boxes together.

``Sample -> Sample`` classes in :mod:`.transforms`; the tensor-level functions they use
(also usable on batches by SSL methods) in :mod:`.functional`. Both serve 2D and 3D from
the same code, driven by ``Sample.spatial_dims`` (or the boxes' width, 4 or 6).
"""

from __future__ import annotations

from ssmd.data.transforms import functional
from ssmd.data.transforms.functional import (
    crop,
    ct_window,
    cutout,
    drop_degenerate,
    flip,
    hflip,
    normalize,
    pad_to_multiple,
    rescale,
    resize,
    rotate,
    rotate_boxes,
    vflip,
)
from ssmd.data.transforms.transforms import (
    Compose,
    Crop,
    CTWindow,
    Cutout,
    Flip,
    HFlip,
    Normalize,
    RandomFlip,
    RandomHFlip,
    RandomRotate,
    RandomSpatialCrop,
    RandomVFlip,
    Resize,
    Rotate,
    VFlip,
    Zoom,
)

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
    "crop",
    "ct_window",
    "cutout",
    "drop_degenerate",
    "flip",
    "functional",
    "hflip",
    "normalize",
    "pad_to_multiple",
    "rescale",
    "resize",
    "rotate",
    "rotate_boxes",
    "vflip",
]
