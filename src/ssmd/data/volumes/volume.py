"""A CT/MR volume with its geometry, world <-> voxel mapping, and resampling.

Conventions (those of ITK/SimpleITK and of LUNA16):

- ``array`` is ``(Z, Y, X)`` (or ``(C, Z, Y, X)``), the order of
  ``SimpleITK.GetArrayFromImage``: ``array[k, j, i]`` is voxel ``(i, j, k)``.
- ``spacing``, ``origin`` and every point or index are ``(x, y, z)``.
- World coordinates are patient **LPS** millimetres (DICOM / ITK / LUNA16 ``coordX,
  coordY, coordZ``). NIfTI's RAS is converted on reading (:mod:`.nifti`).
- ``direction`` is the ``3 x 3`` matrix whose column ``k`` is the world direction of
  voxel axis ``k`` (``SimpleITK.Image.GetDirection()`` reshaped row-major).
- The world position of the *centre* of voxel ``i = (i, j, k)`` is
  ``p = origin + direction @ (spacing * i)``; so
  ``i = (direction @ diag(spacing))^-1 (p - origin)``, continuous (no rounding), as
  ``TransformPhysicalPointToContinuousIndex`` computes it. With identity direction this
  is LUNA16's ``i = (coordX - originX) / spacingX``.

3D boxes built from volumes are ``xyxy`` absolute voxels ``(x1, y1, z1, x2, y2, z2)``
(:mod:`ssmd.structures.boxes`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Volume", "VolumeGeometry", "resample", "resample_isotropic"]

Vec3 = tuple[float, float, float]


def _vec3(v: Sequence[float] | np.ndarray, name: str) -> Vec3:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise ValueError(f"{name} = {v!r}: need 3 finite numbers (x, y, z)")
    return float(a[0]), float(a[1]), float(a[2])


def _direction(d: Any) -> np.ndarray:
    m = np.asarray(d, dtype=np.float64)
    if m.size == 9:
        m = m.reshape(3, 3)
    if m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-6:
        raise ValueError(f"direction must be an invertible 3x3 matrix, got {d!r}")
    return m


class _WorldMapping(abc.ABC):
    """World <-> voxel maps shared by :class:`VolumeGeometry` and :class:`Volume`."""

    spacing: Vec3
    origin: Vec3
    direction: np.ndarray

    @property
    @abc.abstractmethod
    def size_xyz(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` voxel counts (each subclass knows its own)."""

    def index_to_world_matrix(self) -> np.ndarray:
        """``(3, 3)`` matrix ``direction @ diag(spacing)``: index steps -> world mm."""
        return self.direction @ np.diag(self.spacing)

    def world_to_voxel(self, points: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(x, y, z)`` of world points (LPS mm).

        Args:
            points: ``(3,)`` or ``(N, 3)`` world ``(x, y, z)``.

        Returns:
            float64 array of the same shape: ``(direction @ diag(spacing))^-1 (p - origin)``.
        """
        p = np.asarray(points, dtype=np.float64)
        m = np.linalg.inv(self.index_to_world_matrix())
        return (p - np.asarray(self.origin)) @ m.T  # (N, 3)

    def voxel_to_world(self, indices: Sequence[float] | np.ndarray) -> np.ndarray:
        """World points (LPS mm) of continuous voxel indices ``(x, y, z)`` (``(3,)`` or ``(N, 3)``)."""
        i = np.asarray(indices, dtype=np.float64)
        return i @ self.index_to_world_matrix().T + np.asarray(self.origin)  # (N, 3)

    def contains_index(self, indices: Sequence[float] | np.ndarray) -> np.ndarray:
        """Whether continuous indices lie inside: ``-0.5 <= i < size - 0.5`` on every axis.

        The volume covers each voxel's full extent, so a point is inside when it falls in
        some voxel (half-open at the upper edge, like rounding half up).
        """
        i = np.asarray(indices, dtype=np.float64)
        size = np.asarray(self.size_xyz, dtype=np.float64)
        return np.all((i >= -0.5) & (i < size - 0.5), axis=-1)


@dataclass
class VolumeGeometry(_WorldMapping):
    """The geometry of a volume without its voxels (read from a header).

    Attributes:
        size: ``(X, Y, Z)`` voxel counts.
        spacing: voxel size ``(x, y, z)`` mm.
        origin: world position (LPS mm) of the centre of voxel ``(0, 0, 0)``.
        direction: ``(3, 3)``; column ``k`` = world direction of voxel axis ``k``.
        source: the file it describes.
    """

    size: tuple[int, int, int]
    spacing: Vec3
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""

    def __post_init__(self) -> None:
        sz = tuple(int(v) for v in self.size)
        if len(sz) != 3 or min(sz) < 1:
            raise ValueError(f"size = {self.size!r}: need 3 positive voxel counts (X, Y, Z)")
        self.size = (sz[0], sz[1], sz[2])
        self.spacing = _vec3(self.spacing, "spacing")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing = {self.spacing}: every voxel size must be > 0 mm")
        self.origin = _vec3(self.origin, "origin")
        self.direction = _direction(self.direction)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` voxel counts."""
        return self.size


@dataclass
class Volume(_WorldMapping):
    """A 3D image and its physical geometry.

    Attributes:
        array: ``(Z, Y, X)`` or ``(C, Z, Y, X)`` numpy array (HU for CT once read by
            the readers of this package).
        spacing: voxel size ``(x, y, z)`` in mm, all > 0.
        origin: world position (LPS mm) of the centre of voxel ``(0, 0, 0)``.
        direction: ``(3, 3)`` float64; column ``k`` = world direction of voxel axis ``k``.
        source: file or folder it was read from (for error messages).
        meta: reader-specific facts (e.g. DICOM series UID, slice files, spacing report).
    """

    array: np.ndarray
    spacing: Vec3
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"volume array must be (Z, Y, X) or (C, Z, Y, X), got shape {self.array.shape}"
            )
        self.spacing = _vec3(self.spacing, "spacing")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing = {self.spacing}: every voxel size must be > 0 mm")
        self.origin = _vec3(self.origin, "origin")
        self.direction = _direction(self.direction)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape ``(Z, Y, X)`` (array order)."""
        z, y, x = self.array.shape[-3:]
        return int(z), int(y), int(x)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Spatial size ``(X, Y, Z)`` (ITK order, as in an ``.mhd``'s ``DimSize``)."""
        z, y, x = self.shape_zyx
        return x, y, z

    @property
    def geometry(self) -> VolumeGeometry:
        """The geometry alone."""
        return VolumeGeometry(
            self.size_xyz, self.spacing, self.origin, self.direction.copy(), self.source
        )

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A copy with another array (same geometry unless ``changes`` say otherwise)."""
        return replace(self, array=array, meta=dict(self.meta), **changes)


def _interp_axis(a: np.ndarray, axis: int, t: np.ndarray, order: int) -> np.ndarray:
    """Sample ``a`` along ``axis`` at continuous positions ``t`` (edges clamp to the last voxel)."""
    n = a.shape[axis]
    t = np.clip(t, 0.0, n - 1.0)
    if order == 0:
        return np.take(a, np.floor(t + 0.5).astype(np.int64), axis=axis)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (t - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(t)
    w = w.reshape(shape)
    lo = np.take(a, i0, axis=axis).astype(np.float32)
    hi = np.take(a, i1, axis=axis).astype(np.float32)
    return lo * (1.0 - w) + hi * w


def resample(volume: Volume, spacing: Sequence[float] | float, order: int = 1) -> Volume:
    """Resample to a new voxel size, keeping origin and direction.

    The new grid has ``floor(size * old_spacing / new_spacing + 0.5)`` voxels per axis
    (rounded half up, at least 1), so the physical extent ``size * spacing`` is kept up to one new voxel,
    and its voxel ``j`` sits at old continuous index ``j * new_spacing / old_spacing``
    (voxel ``0`` keeps its world position, so :meth:`Volume.world_to_voxel` stays exact
    on the new grid). Interpolation is separable: trilinear (``order=1``, float32
    output, what SimpleITK's ``sitkLinear`` gives inside the volume) or nearest
    (``order=0``, dtype kept, for masks). Samples past the last voxel centre take the
    edge value.

    Args:
        volume: the input.
        spacing: new ``(x, y, z)`` spacing in mm, or one number for isotropic voxels.
        order: 1 (linear) or 0 (nearest).
    """
    if order not in (0, 1):
        raise ValueError(f"order = {order!r}: use 1 (linear) or 0 (nearest)")
    if isinstance(spacing, (int, float)):
        new = _vec3((spacing, spacing, spacing), "spacing")
    else:
        new = _vec3(spacing, "spacing")
    if min(new) <= 0:
        raise ValueError(f"spacing = {new}: every voxel size must be > 0 mm")
    a = volume.array
    off = a.ndim - 3  # 1 for (C, Z, Y, X)
    out = a
    for k in range(3):  # k = x, y, z
        axis = off + 2 - k  # array axis of voxel axis k
        n_old = a.shape[axis]
        ratio = new[k] / volume.spacing[k]
        n_new = max(1, math.floor(n_old * volume.spacing[k] / new[k] + 0.5))  # round half up
        if n_new == n_old and math.isclose(ratio, 1.0, rel_tol=0, abs_tol=1e-12):
            continue
        out = _interp_axis(out, axis, np.arange(n_new, dtype=np.float64) * ratio, order)
    if order == 1 and out.dtype != np.float32:
        out = out.astype(np.float32)
    return volume.with_array(np.ascontiguousarray(out), spacing=new)


def resample_isotropic(volume: Volume, spacing: float = 1.0, order: int = 1) -> Volume:
    """:func:`resample` to ``spacing`` mm in every direction."""
    return resample(volume, float(spacing), order=order)
