"""Synthetic chest-CT volumes with lung nodules: the seeded, cached 3D default (issue 22).

Each volume is a cube of chest, ``fov_mm`` on a side, sampled at its own spacing (``x = y``
drawn from ``spacing_xy``, ``z`` from ``spacing_z``), in Hounsfield units:

- **anatomy** -- soft tissue (~40 HU) with a fat layer (~-100 HU) and ribs (~500 HU, tubes
  along ``x``) in the chest wall, which fills the volume outside an ellipsoidal lung
  (~-850 HU) that is cut by one or two faces of the cube (so every volume has pleura);
  vessels are branching trees of tubes (radius 0.5-2.5 mm, ~40 HU, halving towards the
  periphery) grown from a hilum point on the mediastinal side;
- **nodules** -- 0 to ``max_nodules`` per volume, diameter log-uniform in
  ``diameter_mm`` (3-30 mm), one of three kinds: ``solid`` (~30 HU, sharp), ``ground_glass``
  (~-550 HU, soft edge) and ``part_solid`` (a ground-glass ball with a solid core of 30-60 %
  of its diameter), slightly ellipsoidal and lobulated; placed ``free`` in the lung,
  ``juxtapleural`` (touching the lung wall) or ``vessel`` (on a vessel);
- **noise** -- a little blur (partial volume) and Gaussian noise (15-35 HU).

Boxes are ``xyxy`` voxels ``(x1, y1, z1, x2, y2, z2)`` of the nodule's diameter cube,
placed by :func:`ssmd.data.volumes.luna16.nodule_box` exactly as LUNA16 annotation rows are,
so the synthetic data and the real LUNA16 data share one box rule; each nodule also keeps its
world centre and diameter (what LUNA16's evaluation uses).

Everything is a function of ``(seed, index)``: :func:`generate_ct` makes volume ``index``;
:class:`SyntheticCTCache` keeps the volumes as ``.npz`` files (HU as ``int16``) in a folder
named by a hash of the parameters, so a changed parameter never reads stale volumes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ssmd.data.io import atomic_write_json
from ssmd.data.volumes.luna16 import nodule_box
from ssmd.data.volumes.volume import Volume, VolumeGeometry
from ssmd.utils.errors import DataError

__all__ = [
    "NODULE_KINDS",
    "NODULE_PLACES",
    "SyntheticCTCache",
    "SyntheticCTConfig",
    "SyntheticNodule",
    "generate_ct",
    "volume_geometry",
]

NODULE_KINDS = ("solid", "part_solid", "ground_glass")
"""Nodule types, drawn with :attr:`SyntheticCTConfig.kind_weights`."""
NODULE_PLACES = ("free", "juxtapleural", "vessel")
"""Where a nodule sits, drawn with :attr:`SyntheticCTConfig.place_weights`."""

_AIR_HU, _LUNG_HU, _FAT_HU, _TISSUE_HU, _BONE_HU = -1000.0, -850.0, -100.0, 40.0, 500.0
_SOLID_HU, _GGO_HU = 30.0, -550.0


@dataclass(frozen=True)
class SyntheticCTConfig:
    """Parameters of the synthetic CT generator (module docstring).

    Attributes:
        fov_mm: side of the cube of chest, mm.
        spacing_xy: ``(low, high)`` in-plane spacing, mm (drawn per volume).
        spacing_z: slice spacings to choose from, mm.
        diameter_mm: ``(low, high)`` nodule diameters (log-uniform), mm.
        max_nodules: nodules per volume are uniform in ``0..max_nodules``.
        kind_weights: weights of :data:`NODULE_KINDS`.
        place_weights: weights of :data:`NODULE_PLACES`.
        vessel_trees: vessel trees per volume.
        vessel_depth: branching generations per tree.
    """

    fov_mm: float = 96.0
    spacing_xy: tuple[float, float] = (0.9, 1.4)
    spacing_z: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 2.5)
    diameter_mm: tuple[float, float] = (3.0, 30.0)
    max_nodules: int = 3
    kind_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    place_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    vessel_trees: int = 3
    vessel_depth: int = 4

    def __post_init__(self) -> None:
        where = "SyntheticCTConfig"
        if not self.fov_mm > 0:
            raise DataError(where, "fov_mm", self.fov_mm, "must be > 0")
        lo, hi = self.spacing_xy
        if not 0 < lo <= hi:
            raise DataError(where, "spacing_xy", self.spacing_xy, "need 0 < low <= high")
        if not self.spacing_z or min(self.spacing_z) <= 0:
            raise DataError(where, "spacing_z", self.spacing_z, "need positive spacings")
        d_lo, d_hi = self.diameter_mm
        if not 0 < d_lo <= d_hi < self.fov_mm / 2:
            raise DataError(
                where, "diameter_mm", self.diameter_mm, "need 0 < low <= high < fov_mm / 2"
            )
        if self.max_nodules < 0:
            raise DataError(where, "max_nodules", self.max_nodules, "must be >= 0")
        for name in ("kind_weights", "place_weights"):
            w = getattr(self, name)
            if len(w) != 3 or min(w) < 0 or sum(w) <= 0:
                raise DataError(where, name, w, "need 3 non-negative weights, not all 0")

    def key(self) -> str:
        """A short hash of the parameters (the cache folder's name)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class SyntheticNodule:
    """One nodule of a synthetic volume.

    Attributes:
        center_world: ``(x, y, z)`` mm (LPS; origin of the volume is 0, direction identity).
        diameter_mm: diameter, mm.
        kind: one of :data:`NODULE_KINDS`.
        place: one of :data:`NODULE_PLACES`.
        box: ``(x1, y1, z1, x2, y2, z2)`` voxels (:func:`~ssmd.data.volumes.luna16.nodule_box`).
    """

    center_world: tuple[float, float, float]
    diameter_mm: float
    kind: str
    place: str
    box: tuple[float, float, float, float, float, float]


@dataclass
class _Grid:
    """World coordinates (mm) of the voxel centres along each axis."""

    spacing: tuple[float, float, float]  # x, y, z
    shape_zyx: tuple[int, int, int]
    axes: list[np.ndarray] = field(default_factory=list)  # x, y, z centre coordinates

    def __post_init__(self) -> None:
        z, y, x = self.shape_zyx
        self.axes = [np.arange(n) * s for n, s in zip((x, y, z), self.spacing, strict=True)]

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]]:
        """Array slices ``(z, y, x)`` of the voxels in the world box ``[lo, hi]`` and their
        coordinates as broadcastable ``(z, y, x)`` grids of ``x``, ``y``, ``z``."""
        sl: list[slice] = []
        coords: list[np.ndarray] = []
        for k in range(3):
            a = self.axes[k]
            i0 = int(np.searchsorted(a, lo[k], side="left"))
            i1 = int(np.searchsorted(a, hi[k], side="right"))
            sl.append(slice(i0, max(i0, i1)))
            coords.append(a[i0 : max(i0, i1)])
        x, y, z = coords
        grids = [x[None, None, :], y[None, :, None], z[:, None, None]]
        return (sl[2], sl[1], sl[0]), grids


def _segment_distance(grids: list[np.ndarray], p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel of ``grids`` to the segment ``p0 -> p1``."""
    d = p1 - p0
    length2 = float(d @ d) or 1e-12
    rel = [g - p0[k] for k, g in enumerate(grids)]
    t = np.clip(sum(r * d[k] for k, r in enumerate(rel)) / length2, 0.0, 1.0)
    return np.sqrt(sum((r - t * d[k]) ** 2 for k, r in enumerate(rel)))


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / (np.linalg.norm(v) + 1e-12)


def _lung_inside(grids: list[np.ndarray], centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius ``r``; ``r < 1`` is lung."""
    return np.sqrt(sum(((g - centre[k]) / semi[k]) ** 2 for k, g in enumerate(grids)))


def _draw_grid(
    config: SyntheticCTConfig, seed: int, index: int
) -> tuple[np.random.Generator, tuple[float, float, float], tuple[int, int, int]]:
    """The volume's random stream after its first draws: spacing ``(x, y, z)`` and size ``(X, Y, Z)``."""
    rng = np.random.default_rng([int(seed), int(index), 22])
    sxy = float(rng.uniform(*config.spacing_xy))
    sz = float(rng.choice(np.asarray(config.spacing_z, dtype=np.float64)))
    n_xy = max(8, round(config.fov_mm / sxy))
    n_z = max(8, round(config.fov_mm / sz))
    return rng, (sxy, sxy, sz), (n_xy, n_xy, n_z)


def volume_geometry(config: SyntheticCTConfig, seed: int, index: int) -> VolumeGeometry:
    """The geometry of volume ``index`` without generating it."""
    _, spacing, size = _draw_grid(config, seed, index)
    return VolumeGeometry(size, spacing)


def generate_ct(
    config: SyntheticCTConfig, seed: int, index: int
) -> tuple[Volume, list[SyntheticNodule]]:
    """Volume ``index`` of the synthetic set ``seed`` (module docstring).

    Returns:
        ``(volume, nodules)``: HU ``float32`` array ``(Z, Y, X)`` with spacing, origin 0 and
        identity direction; the nodules with their boxes in that volume's voxels.
    """
    rng, spacing, (n_xy, _, n_z) = _draw_grid(config, seed, index)
    sxy, sz = spacing[0], spacing[2]
    grid = _Grid(spacing, (n_z, n_xy, n_xy))
    x, y, z = grid.axes
    full = [x[None, None, :], y[None, :, None], z[:, None, None]]
    extent = np.array([x[-1], y[-1], z[-1]])

    # 1. lung: an ellipsoid that leaves chest wall on one or two faces of the cube
    wall_axes = rng.choice(2, size=int(rng.integers(1, 3)), replace=False)  # x and/or y
    centre = extent / 2 + rng.uniform(-0.05, 0.05, 3) * extent
    semi = extent * rng.uniform(0.65, 0.8, 3)
    side = np.zeros(3)
    for ax in wall_axes:
        side[ax] = rng.choice([-1.0, 1.0])
        semi[ax] = extent[ax] * rng.uniform(0.55, 0.7)
        centre[ax] = extent[ax] / 2 - side[ax] * extent[ax] * rng.uniform(0.15, 0.25)
    r = _lung_inside(full, centre, semi)  # (Z, Y, X)
    lung = r < 1.0
    hu = np.where(lung, _LUNG_HU, _TISSUE_HU).astype(np.float32)
    fat = (r >= 1.0) & (r < 1.0 + rng.uniform(0.04, 0.08))
    hu[~lung & ~fat] = _TISSUE_HU
    hu[fat & ~lung] = _FAT_HU
    # gravity-dependent density gradient of the lung parenchyma (+0..60 HU along y)
    hu += np.where(lung, 60.0 * (full[1] / extent[1]) * rng.uniform(0.3, 1.0), 0.0).astype(
        np.float32
    )
    # ribs: tubes along x in the wall, every ~20 mm in z
    rib_y = centre[1] + semi[1] * (1.15 if rng.random() < 0.5 else -1.15)
    for zc in np.arange(rng.uniform(0, 20), extent[2], rng.uniform(18, 24)):
        for xc in (0.0,):
            p0 = np.array([xc, rib_y, zc])
            p1 = np.array([extent[0], rib_y + rng.uniform(-8, 8), zc + rng.uniform(-6, 6)])
            radius = rng.uniform(3.0, 5.0)
            sl, g = grid.window(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
            dist = _segment_distance(g, p0, p1)
            sub = hu[sl]
            sub[(dist < radius) & ~lung[sl]] = _BONE_HU

    # 2. vessels: branching trees of tubes from a hilum on the mediastinal side
    segments: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(config.vessel_trees):
        hilum = centre.copy()
        for ax in range(2):
            if side[ax] != 0:
                hilum[ax] = centre[ax] + side[ax] * semi[ax] * rng.uniform(0.5, 0.8)
        hilum[2] = rng.uniform(0.3, 0.7) * extent[2]
        direction = centre - hilum + rng.normal(0, 10, 3)
        direction /= np.linalg.norm(direction) + 1e-12
        stack = [(hilum, direction, rng.uniform(1.8, 2.5), 0)]
        while stack:
            p0, u, radius, depth = stack.pop()
            length = rng.uniform(12, 25) * (0.8**depth)
            p1 = p0 + u * length
            segments.append((p0, p1, radius))
            if depth + 1 < config.vessel_depth:
                for _ in range(2):
                    v = u + 0.7 * _unit(rng)
                    v /= np.linalg.norm(v) + 1e-12
                    stack.append((p1, v, max(0.5, radius * rng.uniform(0.6, 0.8)), depth + 1))
    vessel_hu = _TISSUE_HU + rng.uniform(-10, 20)
    for p0, p1, radius in segments:
        sl, g = grid.window(np.minimum(p0, p1) - radius - 1, np.maximum(p0, p1) + radius + 1)
        if any(s.stop <= s.start for s in sl):
            continue
        dist = _segment_distance(g, p0, p1)
        sub = hu[sl]
        inside = (dist < radius) & lung[sl]
        sub[inside] = np.maximum(sub[inside], vessel_hu)

    # 3. nodules
    geometry = VolumeGeometry((n_xy, n_xy, n_z), spacing)
    nodules: list[SyntheticNodule] = []
    n_nod = int(rng.integers(0, config.max_nodules + 1))
    kind_p = np.asarray(config.kind_weights) / sum(config.kind_weights)
    place_p = np.asarray(config.place_weights) / sum(config.place_weights)
    lo_d, hi_d = config.diameter_mm
    tries = 0
    while len(nodules) < n_nod and tries < 200:
        tries += 1
        diameter = float(math.exp(rng.uniform(math.log(lo_d), math.log(hi_d))))
        rad = diameter / 2
        kind = str(rng.choice(NODULE_KINDS, p=kind_p))
        place = str(rng.choice(NODULE_PLACES, p=place_p))
        if place == "vessel" and segments:
            p0, p1, vr = segments[int(rng.integers(len(segments)))]
            on = p0 + rng.uniform(0.2, 0.8) * (p1 - p0)
            c = on + _unit(rng) * (rad + vr) * 0.8
        elif place == "juxtapleural":
            u = _unit(rng)
            # the point of the lung ellipsoid in direction u, pulled in by the radius
            t = 1.0 / np.sqrt(np.sum((u / semi) ** 2))
            c = centre + u * (t - rad * 0.9)
        else:
            c = centre + _unit(rng) * semi * rng.uniform(0.0, 0.75)
        if np.any(c - rad < 0) or np.any(c + rad > extent):
            continue
        r_c = float(_lung_inside([np.array(c[k]) for k in range(3)], centre, semi))
        if r_c >= 1.0 or (place == "free" and r_c > 1.0 - rad / float(semi.min())):
            continue
        if any(
            np.linalg.norm(c - np.asarray(n.center_world)) < (rad + n.diameter_mm / 2) * 1.2
            for n in nodules
        ):
            continue
        axes = rad * rng.uniform(0.85, 1.15, 3)
        axes *= rad / float(np.prod(axes) ** (1 / 3))  # keep the volume-equivalent diameter
        sl, g = grid.window(c - rad * 1.5 - 1, c + rad * 1.5 + 1)
        rel = [g[k] - c[k] for k in range(3)]
        dist = np.sqrt(sum((rel[k] / axes[k]) ** 2 for k in range(3)))  # 1 at the surface
        theta = np.arctan2(rel[1], rel[0])
        phi = np.arctan2(rel[2], np.sqrt(rel[0] ** 2 + rel[1] ** 2) + 1e-9)
        lob = 1.0 + rng.uniform(0.0, 0.12) * np.sin(
            rng.integers(3, 7) * theta + rng.uniform(0, 6.3)
        ) * np.cos(rng.integers(2, 5) * phi)
        dist = dist / lob
        sub = hu[sl]
        edge = 0.25 if kind == "ground_glass" else 0.06
        ball = np.clip((1.0 + edge - dist) / (2 * edge), 0.0, 1.0)  # soft surface
        if kind == "solid":
            target = np.full_like(dist, _SOLID_HU + rng.uniform(-20, 30))
        else:
            target = np.full_like(dist, _GGO_HU + rng.uniform(-100, 150))
            if kind == "part_solid":
                core = rng.uniform(0.3, 0.6)
                w = np.clip((core + 0.05 - dist) / 0.1, 0.0, 1.0)
                target = target * (1 - w) + (_SOLID_HU + rng.uniform(-20, 30)) * w
        sub[...] = np.maximum(sub, sub * (1 - ball) + target * ball)
        nb = nodule_box(geometry, (float(c[0]), float(c[1]), float(c[2])), diameter)
        nodules.append(
            SyntheticNodule((float(c[0]), float(c[1]), float(c[2])), diameter, kind, place, nb.box)
        )

    # 4. partial volume and noise
    sigma_mm = rng.uniform(0.5, 0.8)
    hu = ndimage.gaussian_filter(hu, sigma=[sigma_mm / sz, sigma_mm / sxy, sigma_mm / sxy])
    hu += rng.normal(0.0, rng.uniform(15, 35), hu.shape).astype(np.float32)
    hu = np.clip(hu, _AIR_HU, 3000.0).astype(np.float32)
    return Volume(hu, spacing, source=f"synthetic_ct seed={seed} index={index}"), nodules


class SyntheticCTCache:
    """Volumes of :func:`generate_ct`, generated once and kept as ``.npz`` files.

    Layout: ``<cache_dir>/synthetic_ct_<config hash>_s<seed>/<index:05d>.npz`` (``hu``
    int16, ``spacing``) and ``<index:05d>.json`` (the nodules). Without ``cache_dir``
    volumes are generated on every call (tests).

    Args:
        config: generator parameters.
        seed: the set's seed.
        cache_dir: where to keep the files, or ``None``.
    """

    def __init__(
        self, config: SyntheticCTConfig, seed: int = 0, cache_dir: str | Path | None = None
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.folder = (
            Path(cache_dir) / f"synthetic_ct_{config.key()}_s{self.seed}"
            if cache_dir is not None
            else None
        )

    def _paths(self, index: int) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{index:05d}.npz", self.folder / f"{index:05d}.json"

    def nodules(self, index: int) -> list[SyntheticNodule]:
        """The nodules of volume ``index`` (from the cache when there)."""
        if self.folder is not None:
            _, meta = self._paths(index)
            if not meta.is_file():
                self.volume(index)
            rows = json.loads(meta.read_text())
            return [_nodule_from_json(meta, k, r) for k, r in enumerate(rows)]
        return generate_ct(self.config, self.seed, index)[1]

    def volume(self, index: int) -> tuple[Volume, list[SyntheticNodule]]:
        """Volume ``index`` (HU) and its nodules."""
        if self.folder is None:
            return generate_ct(self.config, self.seed, index)
        data_path, meta = self._paths(index)
        if data_path.is_file() and meta.is_file():
            with np.load(data_path) as f:
                hu = f["hu"].astype(np.float32)
                spacing = tuple(float(v) for v in f["spacing"])
            rows = json.loads(meta.read_text())
            nodules = [_nodule_from_json(meta, k, r) for k, r in enumerate(rows)]
            return Volume(hu, spacing, source=str(data_path)), nodules  # type: ignore[arg-type]
        vol, nodules = generate_ct(self.config, self.seed, index)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = data_path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp, hu=np.round(vol.array).astype(np.int16), spacing=np.asarray(vol.spacing)
        )
        tmp.replace(data_path)
        atomic_write_json(meta, [asdict(n) for n in nodules])
        vol = vol.with_array(np.round(vol.array).astype(np.float32))  # what a re-read gives
        return vol, nodules


def _nodule_from_json(path: Path, k: int, row: Any) -> SyntheticNodule:
    try:
        return SyntheticNodule(
            center_world=tuple(float(v) for v in row["center_world"]),  # type: ignore[arg-type]
            diameter_mm=float(row["diameter_mm"]),
            kind=str(row["kind"]),
            place=str(row["place"]),
            box=tuple(float(v) for v in row["box"]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"[{k}]", row, f"not a synthetic nodule record ({exc})") from None
