"""Synthetic CT slice stacks: the default of CT-slice lesion detection, with a hidden truth.

Each *series* is a small CT-like volume ``(D, H, W)`` in HU (int16): a body ellipse of soft
tissue (40 HU, low-frequency texture) in air, two lungs (-850 HU), a spine (+600 HU), a few
*vessels* (tubes of +120 HU running along z: lesion-like on one slice, hard negatives that
persist through the stack) and **lesions**: ellipsoids of ``40 +- contrast`` HU whose
cross-section shrinks away from their centre slice (radius ``r * sqrt(1 - (dz / r_z)^2)``),
so a lesion spans ``~2 r_z`` slices. Gaussian blur, then Gaussian noise.

**Hidden truth and annotation** (the DeepLesion situation the LP paper addresses). Every
lesion's box on every slice where it is visible (at least ``min_visible_px`` pixels) is the
tight ``xyxy`` box of its cross-section mask (exclusive ``x2 y2``): the *hidden truth*
(:meth:`SyntheticSlicesDataset.hidden_annotation`). Its *key slice* is the slice of largest
cross-section. Series are split 70/15/15 (seeded) into train / val / test (the "official"
split, :meth:`SyntheticSlicesDataset.official_split`). In **train** series a known fraction
``unannotated_fraction`` of the lesions (exactly ``round(f * n)`` of them, drawn with the
dataset seed) is not annotated, and a key slice's annotation holds only the lesions whose key
slice it is: other lesions visible on it are missing, as in DeepLesion. Val and test series
are annotated completely (every lesion visible on a key slice), so their metrics measure
real sensitivity. Samples of train key slices exist only for annotated lesions.

**Samples.** ``dataset[i].image`` is ``Tensor[2k + 1, H, W]`` float32: the slice and ``k``
native neighbours on each side (lowest slice first), a slice beyond the stack replaced by the
nearest one towards the key slice (:func:`~ssmd.data.volumes.deeplesion.neighbour_plan`,
3DCE's rule), windowed by ``window`` (default the soft-tissue ``(-200, 300)`` HU -> ``[0, 1]``).
``slices="key"``: one sample per key slice; ``slices="all"`` (default): every slice of every
series, non-key slices unlabeled without boxes (the slices label propagation predicts on).
File names are ``series_XXX/ZZZ.png``; no PNG is written (a record's ``path``,
``<cache>/slices/<file_name>``, does not exist: the pixels come from the series' ``.npz``, so
file-per-image checks skip the dataset as generated data).

**Determinism and cache.** Series ``s`` of seed ``seed`` comes from
``Generator(PCG64(SeedSequence(seed, spawn_key=(s,))))`` alone; volumes and per-slice boxes
are cached as ``.npz`` under ``<cache_dir>/<params-hash>/`` (the hash covers the generator
knobs, the seed and :data:`SLICES_GENERATOR_VERSION`, not the number of series), written
atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, Transform, empty_annotation
from ssmd.data.datasets.synthetic import default_cache_dir
from ssmd.data.io import atomic_write_bytes
from ssmd.data.splits import Split
from ssmd.data.volumes.deeplesion import SlicePlan, neighbour_plan
from ssmd.data.volumes.intensity import Window, apply_window
from ssmd.utils.errors import DataError

__all__ = [
    "SLICES_GENERATOR_VERSION",
    "SyntheticSeries",
    "SyntheticSlicesConfig",
    "SyntheticSlicesDataset",
    "generate_series",
]

SLICES_GENERATOR_VERSION = 1
"""Bumped whenever :func:`generate_series` output changes (invalidates caches)."""

_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class SyntheticSlicesConfig:
    """Knobs of the synthetic CT generator (defaults: CPU-sized).

    Attributes:
        num_slices: slices per series ``D``.
        image_size: side ``H = W`` in pixels.
        lesions_per_series: ``(min, max)`` lesions per series (uniform).
        lesion_radius: ``(min, max)`` in-plane semi-axis at the centre slice, pixels.
        lesion_z_radius: ``(min, max)`` half-extent along z, slices.
        contrast: ``(min, max)`` HU difference of a lesion from soft tissue.
        hypodense_prob: probability that a lesion is darker than tissue.
        vessels: ``(min, max)`` vessels per series.
        noise_hu: standard deviation of the Gaussian noise.
        min_visible_px: cross-section pixels for a lesion to count on a slice.
    """

    num_slices: int = 24
    image_size: int = 128
    lesions_per_series: tuple[int, int] = (1, 3)
    lesion_radius: tuple[float, float] = (5.0, 14.0)
    lesion_z_radius: tuple[float, float] = (1.5, 4.0)
    contrast: tuple[float, float] = (60.0, 160.0)
    hypodense_prob: float = 0.3
    vessels: tuple[int, int] = (2, 4)
    noise_hu: float = 15.0
    min_visible_px: int = 9

    def __post_init__(self) -> None:
        if self.num_slices < 3 or self.image_size < 32:
            raise ValueError(
                f"SyntheticSlicesConfig num_slices = {self.num_slices}, image_size = "
                f"{self.image_size}: need >= 3 slices and >= 32 px"
            )
        for name in (
            "lesions_per_series",
            "lesion_radius",
            "lesion_z_radius",
            "contrast",
            "vessels",
        ):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"SyntheticSlicesConfig.{name} = {(lo, hi)}: need 0 <= min <= max")
        if self.lesions_per_series[1] < 1:
            raise ValueError("SyntheticSlicesConfig.lesions_per_series: need at least 1 lesion")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SyntheticSeries:
    """One generated series.

    Attributes:
        hu: ``(D, H, W)`` int16 HU.
        boxes: ``(L, D, 4)`` float32 ``xyxy`` box of lesion ``l`` on slice ``z`` (zeros
            where not visible).
        visible: ``(L, D)`` bool.
        key_slices: ``(L,)`` int64, the slice of largest cross-section of each lesion.
    """

    hu: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    key_slices: np.ndarray


def _ellipse(h: int, w: int, cx: float, cy: float, a: float, b: float, theta: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (u / max(a, 1e-6)) ** 2 + (v / max(b, 1e-6)) ** 2 <= 1.0


def generate_series(config: SyntheticSlicesConfig, rng: np.random.Generator) -> SyntheticSeries:
    """One series (module docstring) from ``rng`` alone."""
    d, n = config.num_slices, config.image_size
    hu = np.full((d, n, n), -1000.0, dtype=np.float64)
    body_a, body_b = n * rng.uniform(0.40, 0.46), n * rng.uniform(0.30, 0.36)
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (d, n, n)), sigma=(1.0, 4.0, 4.0))
    texture *= 20.0 / max(float(texture.std()), 1e-6)
    lung_a, lung_b = body_a * rng.uniform(0.32, 0.4), body_b * rng.uniform(0.55, 0.7)
    body_masks = []
    for z in range(d):
        grow = 1.0 + 0.04 * (z / max(d - 1, 1) - 0.5)
        body = _ellipse(n, n, n / 2, n / 2, body_a * grow, body_b * grow, 0.0)
        body_masks.append(body)
        sl = hu[z]
        sl[body] = 40.0 + texture[z][body]
        for side in (-1, 1):
            lung = _ellipse(
                n, n, n / 2 + side * body_a * 0.45, n / 2 - body_b * 0.1, lung_a, lung_b, 0.0
            )
            sl[lung & body] = -850.0 + 0.5 * texture[z][lung & body]
        spine = _ellipse(n, n, n / 2, n / 2 + body_b * 0.7, n * 0.05, n * 0.05, 0.0)
        sl[spine] = 600.0
    for _ in range(int(rng.integers(config.vessels[0], config.vessels[1] + 1))):
        x0, y0 = rng.uniform(0.3, 0.7, 2) * n
        vx, vy = rng.uniform(-0.6, 0.6, 2)
        r = rng.uniform(2.0, 4.0)
        for z in range(d):
            m = _ellipse(n, n, x0 + vx * z, y0 + vy * z, r, r, 0.0) & body_masks[z]
            hu[z][m] = 160.0
    n_les = int(rng.integers(config.lesions_per_series[0], config.lesions_per_series[1] + 1))
    boxes = np.zeros((n_les, d, 4), dtype=np.float32)
    visible = np.zeros((n_les, d), dtype=bool)
    areas = np.zeros((n_les, d), dtype=np.int64)
    for li in range(n_les):
        rx, ry = rng.uniform(*config.lesion_radius, size=2)
        rz = rng.uniform(*config.lesion_z_radius)
        theta = rng.uniform(0.0, math.pi)
        cz = rng.uniform(1.0, d - 2.0)
        cx = n / 2 + rng.uniform(-0.7, 0.7) * (body_a - max(rx, ry))
        cy = n / 2 + rng.uniform(-0.6, 0.5) * (body_b - max(rx, ry))
        sign = -1.0 if rng.random() < config.hypodense_prob else 1.0
        level = 40.0 + sign * rng.uniform(*config.contrast)
        for z in range(d):
            f = 1.0 - ((z - cz) / rz) ** 2
            if f <= 0:
                continue
            m = _ellipse(n, n, cx, cy, rx * math.sqrt(f), ry * math.sqrt(f), theta)
            m &= body_masks[z]
            area = int(m.sum())
            if area < config.min_visible_px:
                continue
            hu[z][m] = level
            ys, xs = np.nonzero(m)
            boxes[li, z] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            visible[li, z] = True
            areas[li, z] = area
    if not visible.any(axis=1).all():  # a lesion cut away by the body edge: keep only seen ones
        keep = visible.any(axis=1)
        boxes, visible, areas = boxes[keep], visible[keep], areas[keep]
    hu = ndimage.gaussian_filter(hu, sigma=(0.0, 0.7, 0.7))
    hu += rng.normal(0.0, config.noise_hu, hu.shape)
    key = areas.argmax(axis=1).astype(np.int64) if len(areas) else np.zeros(0, np.int64)
    return SyntheticSeries(np.round(hu).clip(-1024, 3071).astype(np.int16), boxes, visible, key)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


class SyntheticSlicesDataset(DetectionDataset):
    """Synthetic CT key slices (or all slices) with ``2k + 1`` channels (module docstring).

    Args:
        n_series: number of series.
        config: generator knobs.
        seed: dataset seed (volumes, split, unannotated lesions).
        num_neighbors: ``k``; ``2k + 1`` channels (4 -> 9 slices, 3DCE's 3 groups of 3).
        unannotated_fraction: share of the train series' lesions left unannotated.
        split_fractions: ``(train, val, test)`` shares of the series.
        slices: ``"all"`` or ``"key"``.
        window: HU window to ``[0, 1]`` (``(lo, hi)``, a preset name or a :class:`Window`).
        cache_dir: where volumes are cached (default ``<ssmd cache>/synthetic_slices``).
        transform: applied to every sample.
    """

    format_name: ClassVar[str] = "synthetic_slices"

    def __init__(
        self,
        n_series: int = 40,
        config: SyntheticSlicesConfig | None = None,
        seed: int = 0,
        num_neighbors: int = 4,
        unannotated_fraction: float = 0.3,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        slices: str = "all",
        window: str | Window | tuple[float, float] = (-200.0, 300.0),
        cache_dir: str | Path | None = None,
        transform: Transform | None = None,
    ) -> None:
        if n_series < 3:
            raise ValueError(f"n_series = {n_series}: need >= 3 (train, val and test series)")
        if num_neighbors < 0:
            raise ValueError(f"num_neighbors = {num_neighbors}: need >= 0")
        if not 0.0 <= unannotated_fraction < 1.0:
            raise ValueError(f"unannotated_fraction = {unannotated_fraction}: need 0 <= f < 1")
        if slices not in ("all", "key"):
            raise ValueError(f"slices = {slices!r}: use 'all' or 'key'")
        if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
            raise ValueError(f"split_fractions = {split_fractions}: three shares >= 0")
        self.config = config or SyntheticSlicesConfig()
        self.seed = int(seed)
        self.n_series = int(n_series)
        self.num_neighbors = int(num_neighbors)
        self.window = window
        apply_window(np.zeros(1), window)  # validates the window
        key = {
            "config": self.config.to_dict(),
            "seed": self.seed,
            "version": SLICES_GENERATOR_VERSION,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        base = (
            Path(cache_dir)
            if cache_dir is not None
            else default_cache_dir().parent / "synthetic_slices"
        )
        self.cache_dir = base / digest
        self._volumes: OrderedDict[int, np.ndarray] = OrderedDict()

        # the official split of the series, then the unannotated lesions of train series
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(10**6,)))
        )
        order = rng.permutation(self.n_series)
        total = sum(split_fractions)
        n_val = max(1, round(split_fractions[1] / total * self.n_series))
        n_test = max(1, round(split_fractions[2] / total * self.n_series))
        n_train = self.n_series - n_val - n_test
        if n_train < 1:
            raise ValueError(f"n_series = {n_series}: too few series for a train part")
        self.series_part = [""] * self.n_series
        for rank, s in enumerate(order.tolist()):
            self.series_part[s] = (
                "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            )
        meta = [self._series_meta(s) for s in range(self.n_series)]
        train_lesions = [(s, li) for s in range(self.n_series) if self.series_part[s] == "train"
                         for li in range(len(meta[s]["key_slices"]))]  # fmt: skip
        n_un = round(unannotated_fraction * len(train_lesions))
        un_idx = rng.permutation(len(train_lesions))[:n_un]
        unannotated = {train_lesions[int(j)] for j in un_idx}
        self.unannotated_fraction = n_un / max(len(train_lesions), 1)
        self._meta = meta
        self.annotated: list[np.ndarray] = [
            np.array([(s, li) not in unannotated for li in range(len(m["key_slices"]))], dtype=bool)
            for s, m in enumerate(meta)
        ]

        records: list[ImageRecord] = []
        self.slices: list[tuple[int, int]] = []  # (series, slice) per sample
        labeled: list[bool] = []
        self._is_key: list[bool] = []
        n = self.config.image_size
        names = []
        for s in range(self.n_series):
            keys = self._key_slices(s)
            for z in range(self.config.num_slices):
                is_key = z in keys
                if slices == "key" and not is_key:
                    continue
                names.append((f"series_{s:03d}/{z:03d}.png", s, z, is_key))
        names.sort()
        for k, (name, s, z, is_key) in enumerate(names, start=1):
            # no image file exists: the path names the sample, pixels come from the series cache
            records.append(ImageRecord(k, name, n, n, self.cache_dir / "slices" / name))
            self.slices.append((s, z))
            labeled.append(is_key)
            self._is_key.append(is_key)
        self._plans: list[SlicePlan] = [
            neighbour_plan(z, range(self.config.num_slices), self.num_neighbors)
            for _, z in self.slices
        ]
        super().__init__(
            records, [{"id": 1, "name": "lesion"}], transform=transform, labeled=labeled,
            source=self.cache_dir,
        )  # fmt: skip

    # ------------------------------------------------------------------ generation and cache
    def _series_path(self, s: int) -> Path:
        return self.cache_dir / f"series_{s:03d}.npz"

    def _generate(self, s: int) -> SyntheticSeries:
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(s,)))
        )
        return generate_series(self.config, rng)

    def _load_series(self, s: int) -> SyntheticSeries:
        path = self._series_path(s)
        if path.is_file():
            try:
                with np.load(path) as z:
                    return SyntheticSeries(z["hu"], z["boxes"], z["visible"], z["key_slices"])
            except (OSError, KeyError, ValueError) as exc:
                raise DataError(
                    path, "npz", str(path), f"unreadable cache file ({exc}); delete it"
                ) from exc
        series = self._generate(s)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, _npz_bytes(asdict(series)))
        return series

    def _series_meta(self, s: int) -> dict[str, np.ndarray]:
        series = self._load_series(s)
        return {"boxes": series.boxes, "visible": series.visible, "key_slices": series.key_slices}

    def _volume(self, s: int) -> np.ndarray:
        if s in self._volumes:
            self._volumes.move_to_end(s)
            return self._volumes[s]
        hu = self._load_series(s).hu
        self._volumes[s] = hu
        if len(self._volumes) > 4:
            self._volumes.popitem(last=False)
        return hu

    def _key_slices(self, s: int) -> set[int]:
        keys = self._meta[s]["key_slices"]
        if self.series_part[s] == "train":
            return {int(z) for z, a in zip(keys, self.annotated[s], strict=True) if a}
        return {int(z) for z in keys}

    # ------------------------------------------------------------------ annotations
    def _visible(self, s: int, z: int) -> tuple[np.ndarray, np.ndarray]:
        """Lesion ids and boxes ``(L', 4)`` xyxy of the lesions visible on slice ``z``."""
        vis = self._meta[s]["visible"][:, z]
        ids = np.nonzero(vis)[0]
        return ids, self._meta[s]["boxes"][ids, z]

    def hidden_annotation(self, i: int) -> tuple[Tensor, Tensor]:
        """Every lesion visible on sample ``i``'s slice: ``(boxes Tensor[L, 4] xyxy,
        lesion ids Tensor[L] int64)`` (ids index the series' lesions)."""
        s, z = self.slices[self._check_index(i)]
        ids, boxes = self._visible(s, z)
        return torch.from_numpy(boxes.copy()).float().reshape(-1, 4), torch.from_numpy(ids).long()

    def annotated_lesions(self, i: int) -> list[int]:
        """Ids of the lesions annotated on sample ``i`` (module docstring)."""
        i = self._check_index(i)
        s, z = self.slices[i]
        if not self._is_key[i]:
            return []
        ids, _ = self._visible(s, z)
        if self.series_part[s] != "train":
            return [int(j) for j in ids]
        keys = self._meta[s]["key_slices"]
        return [int(j) for j in ids if self.annotated[s][j] and int(keys[j]) == z]

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        ids = self.annotated_lesions(i)
        if not ids:
            return empty_annotation()
        s, z = self.slices[i]
        boxes = torch.from_numpy(self._meta[s]["boxes"][ids, z].copy()).float()  # (N, 4) xyxy
        return boxes, torch.ones(len(ids), dtype=torch.int64)

    def is_key_slice(self, i: int) -> bool:
        """Whether sample ``i`` is a key slice (annotated)."""
        return self._is_key[self._check_index(i)]

    def neighbour_index(self, i: int, offset: int) -> int | None:
        """Index of the sample ``offset`` slices from sample ``i`` in the same series, if any."""
        s, z = self.slices[self._check_index(i)]
        z2 = z + offset
        if not 0 <= z2 < self.config.num_slices:
            return None
        name = f"series_{s:03d}/{z2:03d}.png"
        return self._index.get(name)

    def plan(self, i: int) -> SlicePlan:
        """The slices that make sample ``i``'s channels."""
        return self._plans[self._check_index(i)]

    def official_split(self, labeled_ratio: float = 1.0, seed: int = 0) -> Split:
        """The series-level split: train key slices labeled (``labeled_ratio`` of them, as
        :meth:`~ssmd.data.datasets.deeplesion.DeepLesionDataset.official_split`), other train
        slices unlabeled, val/test = their key slices, other val/test slices excluded."""
        if not 0 < labeled_ratio <= 1:
            raise ValueError(f"labeled_ratio = {labeled_ratio}: must lie in (0, 1]")
        parts: dict[str, list[str]] = {p: [] for p in (*_PARTS, "other", "excluded")}
        for i, rec in enumerate(self.records):
            part = self.series_part[self.slices[i][0]]
            if self._is_key[i]:
                parts[part].append(rec.file_name)
            elif part == "train":
                parts["other"].append(rec.file_name)
            else:
                parts["excluded"].append(rec.file_name)
        keys = sorted(parts["train"])
        order = np.random.Generator(np.random.PCG64(seed)).permutation(len(keys))
        n_lab = max(1, round(labeled_ratio * len(keys)))
        labeled = sorted(keys[k] for k in order[:n_lab])
        n = len(keys) + len(parts["val"]) + len(parts["test"])
        split = Split(
            train=sorted(keys + parts["other"]),
            val=sorted(parts["val"]),
            test=sorted(parts["test"]),
            labeled=labeled,
            unlabeled=sorted(set(keys) - set(labeled) | set(parts["other"])),
            seed=seed,
            ratios={p: len(parts[p]) / max(n, 1) for p in _PARTS}
            | {"labeled": float(labeled_ratio)},
            excluded=sorted(parts["excluded"]),
        )
        split.validate("synthetic CT official split")
        return split

    def report(self) -> dict[str, Any]:
        """Counts: series per part, lesions, annotated, missing key-slice boxes."""
        n_les = sum(len(m["key_slices"]) for m in self._meta)
        missing = 0
        for i in range(len(self)):
            if self._is_key[i] and self.series_part[self.slices[i][0]] == "train":
                missing += len(self.hidden_annotation(i)[1]) - len(self.annotated_lesions(i))
        return {
            "series": {p: self.series_part.count(p) for p in _PARTS},
            "lesions": n_les,
            "unannotated_fraction_train": self.unannotated_fraction,
            "key_slices": sum(self._is_key),
            "missing_boxes_on_train_key_slices": missing,
        }

    # ------------------------------------------------------------------ pixels
    def read_hu(self, i: int) -> np.ndarray:
        """``(2k + 1, H, W)`` float32 HU of sample ``i``."""
        i = self._check_index(i)
        hu = self._volume(self.slices[i][0])
        out = [
            sum(hu[z].astype(np.float32) * np.float32(w) for z, w in ch)
            for ch in self._plans[i].channels
        ]
        return np.stack(out).astype(np.float32)  # (2k + 1, H, W)

    def _load_image(self, i: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(apply_window(self.read_hu(i), self.window)))
