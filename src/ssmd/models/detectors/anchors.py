"""Dense anchor grids for a feature pyramid (RetinaNet-style, 9 anchors per location).

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy`` absolute pixels, ``float32``.

**Ordering.** For pyramid level ``l`` with feature size ``(H_l, W_l)`` the anchors are
returned as ``Tensor[H_l * W_l * A, 4]`` whose flat index is::

    i = (y * W_l + x) * A + a,     a = ratio_index * len(scales) + scale_index

i.e. ``(y, x, a)`` row-major — the order of ``dense.permute(0, 3, 4, 1, 2).reshape(B, -1, C)``
applied to a head map of shape ``(B, A, C, H_l, W_l)``, so the ``i``-th flattened prediction
belongs to the ``i``-th anchor. In 3D the grid index is ``(z, y, x, a)``.

**Centres.** The anchor centre of cell ``x`` is ``(x + 0.5) * stride`` (likewise ``y``), not
``x * stride`` as in torchvision. On an input whose size is a multiple of the largest stride,
every level then tiles the image exactly and the grid is mirror-symmetric: anchor
``(l, a, y, x)`` reflected about the vertical centre line of the image is anchor
``(l, a, y, W_l - 1 - x)``. Flip-consistency methods (CSD, SSMD) rely on this to compare the
dense maps of an image and its flip position by position.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DEFAULT_ASPECT_RATIOS", "DEFAULT_SCALES", "DEFAULT_STRIDES", "AnchorGenerator"]

DEFAULT_ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
DEFAULT_SCALES: tuple[float, ...] = (1.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))
DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)

_CacheKey = tuple[tuple[int, ...], tuple[tuple[int, ...], ...], str, torch.dtype]


class AnchorGenerator:
    """Anchors of every pyramid level, cached per (image size, feature sizes, device, dtype).

    Each location of level ``l`` carries ``A = len(aspect_ratios) * len(scales)`` anchors of
    side ``sizes[l] * scale`` and aspect ratio ``ratio = height / width`` (torchvision's
    convention): ``h = s * sqrt(ratio)``, ``w = s / sqrt(ratio)``, so the area is ``s^2``. In 3D
    the ratio shapes the ``x``-``y`` plane and the depth is ``s`` (anisotropic 3D anchors are
    a later issue).

    Args:
        sizes: base anchor side per level, e.g. ``(32, 64, 128, 256, 512)`` (RetinaNet on
            COCO) or ``(8, 16, 32, 64, 128)`` for small nuclei.
        aspect_ratios: ``height / width`` ratios shared by all levels.
        scales: size multipliers shared by all levels (default ``2^0, 2^(1/3), 2^(2/3)``).
        strides: feature stride of each level in input pixels (``P3..P7``: 8..128).
        spatial_dims: 2 for images, 3 for volumes.
        cache_size: how many anchor sets (one per distinct input size) to keep.
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
        scales: Sequence[float] = DEFAULT_SCALES,
        strides: Sequence[int] = DEFAULT_STRIDES,
        spatial_dims: int = 2,
        cache_size: int = 16,
    ) -> None:
        if len(sizes) != len(strides):
            raise ValueError(
                f"AnchorGenerator needs one size per level: sizes={tuple(sizes)} strides={tuple(strides)}"
            )
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for name, values in (
            ("sizes", sizes),
            ("aspect_ratios", aspect_ratios),
            ("scales", scales),
            ("strides", strides),
        ):
            if len(values) == 0 or any(v <= 0 for v in values):
                raise ValueError(
                    f"AnchorGenerator {name} must be non-empty and positive, got {tuple(values)}"
                )
        self.sizes = tuple(float(s) for s in sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.scales = tuple(float(s) for s in scales)
        self.strides = tuple(int(s) for s in strides)
        self.spatial_dims = spatial_dims
        self.cache_size = cache_size
        self._cache: OrderedDict[_CacheKey, list[Tensor]] = OrderedDict()

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.strides)

    @property
    def num_anchors_per_location(self) -> int:
        """``A``: anchors at every grid location (same for all levels)."""
        return len(self.aspect_ratios) * len(self.scales)

    def cell_anchors(self, level: int) -> Tensor:
        """Zero-centred anchors of ``level``, ``Tensor[A, 2D]`` float64, in ``a`` order.

        ``a = ratio_index * len(scales) + scale_index``.
        """
        d = self.spatial_dims
        rows = []
        for ratio in self.aspect_ratios:
            for scale in self.scales:
                s = self.sizes[level] * scale
                w, h = s / math.sqrt(ratio), s * math.sqrt(ratio)
                half = [w / 2, h / 2] + ([s / 2] if d == 3 else [])
                rows.append([-v for v in half] + half)
        return torch.tensor(rows, dtype=torch.float64)  # (A, 2D)

    def grid_anchors(
        self,
        level: int,
        feature_size: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Anchors of one level for a feature map of size ``(H_l, W_l)`` (``(D_l, H_l, W_l)`` in 3D).

        Returns:
            ``Tensor[prod(feature_size) * A, 2D]`` ``xyxy`` in ``(y, x, a)`` order (module docstring).
        """
        d = self.spatial_dims
        if len(feature_size) != d:
            raise ValueError(f"feature size {tuple(feature_size)} is not {d}D")
        stride = self.stride_of(level)
        # Tensor axes are (…, y, x); box coordinates are (x, y, …): reverse once.
        axes = [(torch.arange(n, dtype=torch.float64) + 0.5) * stride for n in feature_size]
        grids = torch.meshgrid(*axes, indexing="ij")  # D tensors (H_l, W_l)
        flat = [g.reshape(-1) for g in reversed(grids)]  # D x (HW,) as x, y[, z]
        centres = torch.stack(flat, dim=1)  # (HW, D)
        shifts = torch.cat([centres, centres], dim=1)  # (HW, 2D)
        cell = self.cell_anchors(level)  # (A, 2D)
        anchors = (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 2 * d)  # (HW * A, 2D)
        return anchors.to(device=device, dtype=dtype)

    def stride_of(self, level: int) -> int:
        """Stride of ``level`` in input pixels."""
        return self.strides[level]

    def anchors_for(
        self,
        image_size: Sequence[int],
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Per-level anchors for an input of ``image_size`` with pyramid ``feature_sizes``.

        Cached: repeated calls with the same sizes return the same tensors (do not modify them).

        Args:
            image_size: ``(H, W)`` of the (padded) input; part of the cache key.
            feature_sizes: ``(H_l, W_l)`` of each level, ``P3`` first.
            device: where the anchors live.
            dtype: anchor dtype (computed in float64, then cast).

        Returns:
            ``num_levels`` tensors ``[H_l * W_l * A, 2D]``, ``xyxy`` absolute pixels, ``(y, x, a)`` order.
        """
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"AnchorGenerator has {self.num_levels} levels (strides {self.strides}) "
                f"but got {len(feature_sizes)} feature maps {[tuple(f) for f in feature_sizes]}"
            )
        key: _CacheKey = (
            tuple(int(s) for s in image_size),
            tuple(tuple(int(s) for s in f) for f in feature_sizes),
            str(torch.device(device)),
            dtype,
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        anchors = [
            self.grid_anchors(lvl, fs, device, dtype) for lvl, fs in enumerate(feature_sizes)
        ]
        self._cache[key] = anchors
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return anchors

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
            f"scales={tuple(round(s, 4) for s in self.scales)}, strides={self.strides}, "
            f"spatial_dims={self.spatial_dims})"
        )
