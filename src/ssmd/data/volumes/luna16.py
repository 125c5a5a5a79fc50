"""LUNA16 nodule annotations: ``seriesuid,coordX,coordY,coordZ,diameter_mm`` -> 3D voxel boxes.

LUNA16's ``annotations.csv`` gives each nodule's centre in world millimetres (patient
LPS, the frame of the ``.mhd`` files) and its diameter. A nodule becomes:

- ``center_voxel``: the continuous voxel index ``(x, y, z)`` of the centre,
  :meth:`Volume.world_to_voxel <ssmd.data.volumes.volume.Volume.world_to_voxel>` -- exactly
  SimpleITK's ``TransformPhysicalPointToContinuousIndex`` (for LUNA16's identity
  direction, ``(coordX - originX) / spacingX``); integer values are voxel centres;
- a box ``(x1, y1, z1, x2, y2, z2)`` in ssmd's convention (:mod:`ssmd.structures.boxes`:
  absolute voxels, voxel ``k`` spans ``[k, k + 1)``, so voxel centre ``k`` is at box
  coordinate ``k + 0.5``): the cube circumscribing the nodule sphere,
  ``center_voxel + 0.5 -+ diameter_mm / (2 * spacing)`` per axis. This assumes the
  volume's axes are aligned with the world axes (direction a signed permutation, as
  in every LUNA16 scan); other directions raise.

Rules for nodules that do not fit (counted and reported by
:class:`ssmd.data.datasets.luna16.Luna16Dataset`, never dropped silently):

- **outside**: the centre does not fall in any voxel of the scan (continuous index
  outside ``[-0.5, size - 0.5)`` on some axis) -- the nodule is not in this volume;
  it gets no box;
- **clipped**: the centre is inside but the cube sticks out; the box is clipped to
  ``[0, size]`` and kept.

Every CSV problem raises :class:`~ssmd.utils.errors.DataError` naming the file, the line
and column, and the value.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmd.data.volumes.volume import Volume, VolumeGeometry
from ssmd.utils.errors import DataError

__all__ = [
    "LUNA16_COLUMNS",
    "LunaNodule",
    "NoduleBox",
    "nodule_box",
    "read_luna16_annotations",
    "voxel_box_to_world",
]

LUNA16_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
"""Required columns of a LUNA16 annotations file (more columns may follow)."""


@dataclass(frozen=True)
class LunaNodule:
    """One row of a LUNA16 annotations file.

    Attributes:
        seriesuid: the scan (``<seriesuid>.mhd``).
        center_world: ``(coordX, coordY, coordZ)`` in LPS mm.
        diameter_mm: nodule diameter, > 0.
        line: line of the CSV file (the header is line 1).
    """

    seriesuid: str
    center_world: tuple[float, float, float]
    diameter_mm: float
    line: int


@dataclass(frozen=True)
class NoduleBox:
    """A nodule placed in a volume (see the module docstring).

    Attributes:
        center_voxel: continuous voxel index ``(x, y, z)`` of the centre.
        box: ``(x1, y1, z1, x2, y2, z2)`` absolute voxels (clipped when ``clipped``).
        inside: the centre falls in a voxel of the volume.
        clipped: the unclipped cube extended beyond the volume.
    """

    center_voxel: tuple[float, float, float]
    box: tuple[float, float, float, float, float, float]
    inside: bool
    clipped: bool


def read_luna16_annotations(path: str | Path) -> list[LunaNodule]:
    """Read and validate a LUNA16 ``annotations.csv`` (file order kept).

    Raises:
        DataError: missing file or column, an empty ``seriesuid``, a non-finite
            coordinate, or a diameter that is not > 0 (a ``candidates.csv``, whose
            5th column is ``class``, is named as such).
    """
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(path, "file", str(path), "does not exist") from exc
    with fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in LUNA16_COLUMNS if c not in cols]
        if missing:
            hint = (
                " (this looks like candidates.csv; use annotations.csv)" if "class" in cols else ""
            )
            raise DataError(path, "columns", cols, f"missing LUNA16 column(s) {missing}{hint}")
        out: list[LunaNodule] = []
        for row in reader:
            line = reader.line_num
            uid = (row["seriesuid"] or "").strip()
            if not uid:
                raise DataError(path, f"line {line}: seriesuid", row["seriesuid"], "empty")
            vals = []
            for c in LUNA16_COLUMNS[1:]:
                try:
                    v = float(row[c])
                except (TypeError, ValueError):
                    raise DataError(path, f"line {line}: {c}", row[c], "not a number") from None
                if not math.isfinite(v):
                    raise DataError(path, f"line {line}: {c}", row[c], "not finite")
                vals.append(v)
            if vals[3] <= 0:
                raise DataError(
                    path, f"line {line}: diameter_mm", row["diameter_mm"], "must be > 0"
                )
            out.append(LunaNodule(uid, (vals[0], vals[1], vals[2]), vals[3], line))
    return out


def _axis_permutation(volume: Volume | VolumeGeometry) -> np.ndarray:
    """For each voxel axis, the world axis it runs along (direction must be a signed permutation)."""
    d = volume.direction
    perm = np.argmax(np.abs(d), axis=0)  # world axis of voxel axis k
    if sorted(perm.tolist()) != [0, 1, 2] or not np.allclose(np.abs(d).max(axis=0), 1.0, atol=1e-6):
        raise DataError(
            volume.source, "direction", d.tolist(),
            "nodule cubes need voxel axes aligned with the world axes (LUNA16 scans are)",
        )  # fmt: skip
    return perm


def nodule_box(
    volume: Volume | VolumeGeometry, center_world: tuple[float, float, float], diameter_mm: float
) -> NoduleBox:
    """Place a nodule (world centre, diameter) in ``volume`` (module docstring)."""
    _axis_permutation(volume)
    c = volume.world_to_voxel(np.asarray(center_world, dtype=np.float64))  # (3,) x, y, z
    half = diameter_mm / 2.0 / np.asarray(volume.spacing)  # (3,) voxels
    lo, hi = c + 0.5 - half, c + 0.5 + half
    size = np.asarray(volume.size_xyz, dtype=np.float64)
    inside = bool(volume.contains_index(c))
    clipped = bool((lo < 0).any() or (hi > size).any())
    lo_c, hi_c = np.clip(lo, 0.0, size), np.clip(hi, 0.0, size)
    x1, y1, z1 = (float(v) for v in lo_c)
    x2, y2, z2 = (float(v) for v in hi_c)
    return NoduleBox(
        center_voxel=(float(c[0]), float(c[1]), float(c[2])),
        box=(x1, y1, z1, x2, y2, z2),
        inside=inside,
        clipped=clipped,
    )


def voxel_box_to_world(
    volume: Volume | VolumeGeometry, box: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`nodule_box` for evaluation: ``xyxy`` voxel boxes -> world centres and sizes.

    Args:
        volume: the geometry the boxes refer to.
        box: ``(N, 6)`` or ``(6,)`` ``(x1, y1, z1, x2, y2, z2)``.

    Returns:
        ``(centres (N, 3) world mm, sizes (N, 3) mm along x, y, z)``.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1, 6)
    centre_index = (b[:, :3] + b[:, 3:]) / 2.0 - 0.5  # box coordinates -> continuous index
    sizes = (b[:, 3:] - b[:, :3]) * np.asarray(volume.spacing)
    return volume.voxel_to_world(centre_index), sizes
