"""Image reading and small file helpers shared by the dataset formats.

Every reader raises :class:`~ssmd.utils.errors.DataError` naming the file, the field
(``"image"`` for pixel data, ``"image.mode"`` for an unsupported pixel format, ...) and
the offending value, so a bad file in a folder of thousands is found at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ssmd.utils.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "PIL_ERRORS",
    "atomic_write_bytes",
    "atomic_write_json",
    "image_array",
    "image_size",
    "read_image",
    "to_rgb_float",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes (lower case) that the image readers accept."""

# Errors PIL raises for truncated, corrupt or unknown files (DataError is a ValueError:
# callers that re-raise must let it through).
PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels.

    Raises:
        DataError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError as exc:
        raise DataError(path, "image", str(path), "file does not exist") from exc
    except PIL_ERRORS as exc:
        raise DataError(path, "image", str(path), f"not a readable image ({exc})") from exc


def image_array(path: str | Path) -> np.ndarray:
    """Decode an image file to a numpy array as stored: ``(H, W)`` or ``(H, W, C)``.

    Palette (``P``) images are expanded to RGB(A); bit-depth is preserved (uint8,
    uint16, int32 or float32).

    Raises:
        DataError: the file is missing, truncated or corrupt.
    """
    try:
        with Image.open(path) as opened:
            im: Image.Image = opened
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            im.load()
            return np.asarray(im)
    except FileNotFoundError as exc:
        raise DataError(path, "image", str(path), "file does not exist") from exc
    except PIL_ERRORS as exc:
        raise DataError(path, "image", str(path), f"cannot decode image ({exc})") from exc


def to_rgb_float(array: np.ndarray, path: str | Path = "<array>") -> Tensor:
    """Convert a decoded image array to ``Tensor[3, H, W]`` float32 in ``[0, 1]``.

    Integer images are divided by the maximum of their dtype (255 for 8-bit, 65535 for
    16-bit); ``int32`` arrays (PIL mode ``I``) are treated as 16-bit and rejected if
    any value falls outside ``0..65535``. Float images must already lie in ``[0, 1]``.
    Grey ``(H, W)`` is replicated to 3 channels, grey+alpha keeps the grey, RGBA drops
    alpha.

    Raises:
        DataError: unsupported dtype, channel count or value range.
    """
    a = array
    if a.ndim == 2:
        a = a[:, :, None]  # (H, W, 1)
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise DataError(path, "image.shape", tuple(array.shape), "expected (H, W) or (H, W, 1..4)")
    if a.shape[2] in (2, 4):
        a = a[:, :, :-1]  # drop alpha: (H, W, 1) or (H, W, 3)
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16 or a.dtype.str in ("<u2", ">u2"):
        f = a.astype(np.float32) / 65535.0
    elif a.dtype == np.int32:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(path, "image.values", (lo, hi), "32-bit integer image outside 0..65535")
        f = a.astype(np.float32) / 65535.0
    elif a.dtype in (np.float32, np.float64):
        f = a.astype(np.float32)
        lo_f, hi_f = float(f.min()), float(f.max())
        if not (np.isfinite(lo_f) and np.isfinite(hi_f)) or lo_f < 0.0 or hi_f > 1.0:
            raise DataError(path, "image.values", (lo_f, hi_f), "float image must lie in [0, 1]")
    else:
        raise DataError(path, "image.dtype", str(a.dtype), "unsupported pixel type")
    if f.shape[2] == 1:
        f = np.repeat(f, 3, axis=2)  # grey -> (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))  # (3, H, W)


def read_image(path: str | Path) -> Tensor:
    """Read an image file as ``Tensor[3, H, W]`` float32 in ``[0, 1]`` (see :func:`to_rgb_float`)."""
    return to_rgb_float(image_array(path), path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    Readers (other processes, DataLoader workers) never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
