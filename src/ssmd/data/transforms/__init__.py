"""Transforms that move an image and its ``xyxy`` boxes together.

``Sample -> Sample`` classes in :mod:`.transforms`; the tensor-level functions they use
(also usable on batches by SSL methods) in :mod:`.functional`.
"""

from __future__ import annotations

from ssmd.data.transforms import functional
from ssmd.data.transforms.functional import (
    ct_window,
    cutout,
    drop_degenerate,
    hflip,
    normalize,
    pad_to_multiple,
    resize,
    rotate,
    rotate_boxes,
    vflip,
)
from ssmd.data.transforms.transforms import (
    Compose,
    CTWindow,
    Cutout,
    HFlip,
    Normalize,
    RandomHFlip,
    RandomRotate,
    RandomVFlip,
    Resize,
    Rotate,
    VFlip,
)

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
    "ct_window",
    "cutout",
    "drop_degenerate",
    "functional",
    "hflip",
    "normalize",
    "pad_to_multiple",
    "resize",
    "rotate",
    "rotate_boxes",
    "vflip",
]
