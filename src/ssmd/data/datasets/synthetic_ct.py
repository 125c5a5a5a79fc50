"""The synthetic chest-CT dataset (``data.format: synthetic_ct``): volumes with lung nodules.

Volumes come from :mod:`ssmd.data.volumes.synthetic_ct` (seeded, cached), are resampled on
loading to ``spacing`` mm (isotropic by default, as LUNA16 pipelines do) and windowed to
``[0, 1]`` (``window``, default LUNA16's ``-1024..300`` HU). ``dataset[i]`` is a
:class:`~ssmd.data.datasets.luna16.VolumeSample`: image ``Tensor[1, Z, Y, X]``, boxes
``Tensor[N, 6]`` ``xyxy`` voxels ``(x1, y1, z1, x2, y2, z2)`` of the resampled grid, each
nodule's cube placed from its world centre and diameter by
:func:`~ssmd.data.volumes.luna16.nodule_box` (the rule of the LUNA16 dataset).
:meth:`SyntheticCTDataset.nodules` gives the world centres and diameters that LUNA16's
evaluation (:mod:`ssmd.evaluation.luna16`) needs; ``seriesuid`` is ``synthetic_ct_<index>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.datasets.luna16 import VolumeRecord, VolumeSample
from ssmd.data.volumes.intensity import Window, apply_window
from ssmd.data.volumes.luna16 import nodule_box
from ssmd.data.volumes.synthetic_ct import (
    SyntheticCTCache,
    SyntheticCTConfig,
    SyntheticNodule,
    volume_geometry,
)
from ssmd.data.volumes.volume import VolumeGeometry, resample

__all__ = ["SyntheticCTDataset"]


def _resampled_geometry(geom: VolumeGeometry, spacing: float | None) -> VolumeGeometry:
    """The grid :func:`~ssmd.data.volumes.volume.resample` makes (same rounding)."""
    if spacing is None:
        return geom
    x, y, z = (
        max(1, int(np.floor(n * s / spacing + 0.5)))
        for n, s in zip(geom.size_xyz, geom.spacing, strict=True)
    )
    return VolumeGeometry(
        (x, y, z), (spacing, spacing, spacing), geom.origin, geom.direction, geom.source
    )


class SyntheticCTDataset(DetectionDataset):
    """``n_volumes`` synthetic chest CTs with nodule boxes (module docstring).

    Args:
        n_volumes: number of volumes (ids ``1..n``).
        seed: the set's seed (volume ``i`` depends on ``(seed, i)`` only).
        cache_dir: where generated volumes are kept (``None``: regenerate on every read).
        spacing: isotropic voxel size after loading, mm (``None``: each volume's own).
        window: HU window to ``[0, 1]`` (preset name or ``(lo, hi)``).
        config: generator parameters (:class:`SyntheticCTConfig`).
        transform: applied to every sample.
    """

    format_name: ClassVar[str] = "synthetic_ct"
    spatial_dims: ClassVar[int] = 3

    def __init__(
        self,
        n_volumes: int = 60,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        spacing: float | None = 1.5,
        window: str | Window | tuple[float, float] = "luna16",
        config: SyntheticCTConfig | None = None,
        transform: Any = None,
    ) -> None:
        if int(n_volumes) < 1:
            raise ValueError(f"synthetic_ct: n_volumes = {n_volumes!r}: need at least 1")
        if spacing is not None and not float(spacing) > 0:
            raise ValueError(f"synthetic_ct: spacing = {spacing!r}: need a size > 0 mm or None")
        self.config = config or SyntheticCTConfig()
        self.seed = int(seed)
        self.cache = SyntheticCTCache(self.config, self.seed, cache_dir)
        self.spacing = None if spacing is None else float(spacing)
        self.window = window
        records: list[VolumeRecord] = []
        for k in range(int(n_volumes)):
            geom = _resampled_geometry(volume_geometry(self.config, self.seed, k), self.spacing)
            x, y, z = geom.size_xyz
            records.append(
                VolumeRecord(
                    image_id=k + 1,
                    file_name=f"synthetic_ct_{k:05d}",
                    width=x,
                    height=y,
                    path=Path(f"synthetic_ct_{k:05d}"),
                    depth=z,
                    seriesuid=f"synthetic_ct_{k:05d}",
                    geometry=geom,
                )
            )
        self.volume_records = records
        super().__init__(
            records,
            [{"id": 1, "name": "nodule"}],
            transform=transform,
            source=f"synthetic_ct(seed={self.seed})",
        )

    def nodules(self, i: int) -> list[SyntheticNodule]:
        """The nodules of volume ``i`` with their world centres and diameters."""
        return self.cache.nodules(self._check_index(i))

    def geometry(self, i: int) -> VolumeGeometry:
        """Geometry of volume ``i`` as the samples have it (after resampling)."""
        return self.volume_records[self._check_index(i)].geometry

    def _boxes(self, i: int, nodules: Sequence[SyntheticNodule]) -> Tensor:
        if not nodules:
            return torch.zeros((0, 6), dtype=torch.float32)
        geom = self.volume_records[i].geometry
        rows = [nodule_box(geom, n.center_world, n.diameter_mm).box for n in nodules]
        return torch.tensor(rows, dtype=torch.float32)  # (N, 6)

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        boxes = self._boxes(i, self.cache.nodules(i))
        return boxes, torch.ones((int(boxes.shape[0]),), dtype=torch.int64)

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return torch.zeros((0, 6), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64)

    def __getitem__(self, i: int) -> VolumeSample:
        i = self._check_index(i)
        rec = self.volume_records[i]
        vol, nodules = self.cache.volume(i)
        if self.spacing is not None:
            vol = resample(vol, self.spacing)
        if vol.size_xyz != rec.geometry.size_xyz:  # the record's grid is computed, not read
            raise RuntimeError(
                f"{rec.file_name}: resampled size {vol.size_xyz} differs from the record's "
                f"{rec.geometry.size_xyz}"
            )
        image = torch.from_numpy(np.ascontiguousarray(apply_window(vol.array, self.window)))
        boxes = self._boxes(i, nodules)
        sample = VolumeSample(
            image=image[None].to(torch.float32),  # (1, Z, Y, X)
            boxes=boxes,
            labels=torch.ones((int(boxes.shape[0]),), dtype=torch.int64),
            image_id=rec.image_id,
            path=rec.file_name,
            is_labeled=self.is_labeled(i),
            ignore=torch.zeros((0, 6), dtype=torch.float32),
            spatial_dims=3,
            spacing=vol.spacing,
            origin=vol.origin,
            direction=vol.direction,
            seriesuid=rec.seriesuid,
        )
        if self.transform is None:
            return sample
        out = self.transform(sample)
        if not isinstance(out, VolumeSample):
            raise TypeError(
                f"a SyntheticCTDataset transform must return a VolumeSample, got {type(out).__name__}"
            )
        return out
