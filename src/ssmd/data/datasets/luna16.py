"""LUNA16: chest-CT scans as ``<seriesuid>.mhd`` with ``annotations.csv`` nodules -> 3D boxes.

Layout: any folder tree holding ``<seriesuid>.mhd`` (+ ``.raw`` / ``.zraw``) files --
LUNA16's ``subset0/ ... subset9/`` or one folder. One item per scan; ids ``1..N`` in
sorted order of ``file_name`` (the ``.mhd`` path relative to the root). Nodules come
from a LUNA16 annotations CSV (:mod:`ssmd.data.volumes.luna16`): boxes are ``xyxy``
absolute voxels ``(x1, y1, z1, x2, y2, z2)``, label 1 (``nodule``).

Nothing is dropped silently; :attr:`Luna16Dataset.report` counts, and
:meth:`Luna16Dataset.report_lines` prints:

- rows whose ``seriesuid`` has no ``.mhd`` under the root (``unknown_series``: a LUNA16
  user often holds only some subsets) -- raised instead with ``unknown_series="error"``;
- nodules whose centre is **outside** their scan (no box) and nodules **clipped** to it.

With an annotations file, a scan without nodules is a labeled negative; without one,
every scan is unlabeled (``is_labeled=False``, no boxes).

``dataset[i]`` reads the scan (SimpleITK) and returns a :class:`VolumeSample` -- a
:class:`~ssmd.structures.sample.Sample` whose image is ``Tensor[1, Z, Y, X]`` float32
(HU, or windowed with ``window=``; resampled with ``spacing=``, boxes recomputed from the
world coordinates on the new grid) and whose boxes are ``Tensor[N, 6]``. The 2D
statistics and COCO writer do not apply to it: :func:`volume_stats` and
:func:`to_volume_json` do (``ssmd data stats / convert --format luna16``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, SubsetDataset, Transform
from ssmd.data.io import atomic_write_json
from ssmd.data.volumes.intensity import Window, apply_window
from ssmd.data.volumes.luna16 import LunaNodule, nodule_box, read_luna16_annotations
from ssmd.data.volumes.metaimage import read_metaimage, read_metaimage_geometry
from ssmd.data.volumes.volume import Volume, VolumeGeometry, resample
from ssmd.structures.sample import Sample
from ssmd.utils.errors import DataError

__all__ = [
    "Luna16Dataset",
    "PlacedNodule",
    "VolumeRecord",
    "VolumeSample",
    "format_volume_stats",
    "to_volume_json",
    "volume_stats",
    "write_volume_json",
]


@dataclass(frozen=True)
class VolumeRecord(ImageRecord):
    """An :class:`ImageRecord` for a volume (``width`` = X, ``height`` = Y).

    Attributes:
        depth: Z, the number of slices.
        seriesuid: the scan's series UID (the ``.mhd`` stem).
        geometry: size, spacing, origin and direction from the header.
    """

    depth: int
    seriesuid: str
    geometry: VolumeGeometry


@dataclass(frozen=True)
class PlacedNodule:
    """A LUNA16 nodule placed in its scan.

    Attributes:
        nodule: the CSV row.
        center_voxel: continuous voxel index ``(x, y, z)`` of the centre.
        box: ``(x1, y1, z1, x2, y2, z2)`` voxels, clipped to the scan.
        clipped: the nodule's cube extended beyond the scan.
    """

    nodule: LunaNodule
    center_voxel: tuple[float, float, float]
    box: tuple[float, float, float, float, float, float]
    clipped: bool


@dataclass
class VolumeSample(Sample):
    """A :class:`Sample` of a 3D scan.

    ``image`` is ``Tensor[C, Z, Y, X]``; ``boxes`` ``Tensor[N, 6]`` ``xyxy`` voxels
    (``x1, y1, z1, x2, y2, z2``) of the image as it is now.

    Attributes:
        spacing: voxel size ``(x, y, z)`` mm of ``image``.
        origin: world position (LPS mm) of voxel ``(0, 0, 0)`` of ``image``.
        direction: ``(3, 3)`` direction matrix (columns = voxel axes).
        seriesuid: the scan's series UID.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    seriesuid: str = ""


def _empty3d() -> tuple[Tensor, Tensor]:
    return torch.zeros((0, 6), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64)


class Luna16Dataset(DetectionDataset):
    """LUNA16 scans with nodule boxes (module docstring).

    Args:
        root: folder searched recursively for ``*.mhd``.
        annotations: LUNA16 ``annotations.csv``; ``None``: scans without labels.
        unknown_series: ``"skip"`` (count and report rows for scans not under ``root``)
            or ``"error"``.
        window: HU window applied on loading (preset name, ``(lo, hi)`` or
            :class:`~ssmd.data.volumes.intensity.Window`); ``None`` keeps HU.
        spacing: resample on loading to this voxel size (mm, one number = isotropic).
        transform: applied to every :class:`VolumeSample`.
        check_files: check every header against its data file at construction.

    Raises:
        DataError: no ``.mhd`` under ``root``, two files with one ``seriesuid``, a bad
            header or data file, a bad annotations row, an unknown series with
            ``unknown_series="error"``.
    """

    format_name: ClassVar[str] = "luna16"
    spatial_dims: ClassVar[int] = 3

    def __init__(
        self,
        root: str | Path,
        annotations: str | Path | None = None,
        unknown_series: str = "skip",
        window: str | Window | tuple[float, float] | None = None,
        spacing: float | Sequence[float] | None = None,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        if unknown_series not in ("skip", "error"):
            raise ValueError(f"unknown_series = {unknown_series!r}: use 'skip' or 'error'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "root", str(self.root), "is not a folder")
        self.window = window
        self.spacing = spacing
        files = sorted(self.root.rglob("*.mhd"), key=lambda p: p.relative_to(self.root).as_posix())
        if not files:
            raise DataError(self.root, "root", str(self.root), "holds no .mhd file")
        by_uid: dict[str, Path] = {}
        for f in files:
            if f.stem in by_uid:
                raise DataError(
                    f, "seriesuid", f.stem, f"also the name of {by_uid[f.stem]} (one file per scan)"
                )
            by_uid[f.stem] = f
        records: list[VolumeRecord] = []
        for k, f in enumerate(files, start=1):
            geom = read_metaimage_geometry(f, check=check_files)
            x, y, z = geom.size_xyz
            records.append(
                VolumeRecord(
                    image_id=k,
                    file_name=f.relative_to(self.root).as_posix(),
                    width=x,
                    height=y,
                    path=f,
                    depth=z,
                    seriesuid=f.stem,
                    geometry=geom,
                )
            )
        self.volume_records = records
        self.annotations_path = Path(annotations) if annotations is not None else None
        self._nodules: list[list[PlacedNodule]] = [[] for _ in records]
        self._outside: list[list[PlacedNodule]] = [[] for _ in records]
        unknown: Counter[str] = Counter()
        n_rows = 0
        if self.annotations_path is not None:
            index = {r.seriesuid: k for k, r in enumerate(records)}
            rows = read_luna16_annotations(self.annotations_path)
            n_rows = len(rows)
            for row in rows:
                j = index.get(row.seriesuid)
                if j is None:
                    if unknown_series == "error":
                        raise DataError(
                            self.annotations_path, f"line {row.line}: seriesuid", row.seriesuid,
                            f"no {row.seriesuid}.mhd under {self.root}",
                        )  # fmt: skip
                    unknown[row.seriesuid] += 1
                    continue
                nb = nodule_box(records[j].geometry, row.center_world, row.diameter_mm)
                placed = PlacedNodule(row, nb.center_voxel, nb.box, nb.clipped)
                (self._nodules if nb.inside else self._outside)[j].append(placed)
        self.report: dict[str, Any] = {
            "annotation_rows": n_rows,
            "boxes": sum(len(n) for n in self._nodules),
            "clipped": sum(p.clipped for n in self._nodules for p in n),
            "outside": [
                {
                    "line": p.nodule.line,
                    "seriesuid": p.nodule.seriesuid,
                    "center_voxel": list(p.center_voxel),
                    "size_xyz": list(records[k].geometry.size_xyz),
                }
                for k, n in enumerate(self._outside)
                for p in n
            ],
            "unknown_series": dict(sorted(unknown.items())),
            "unknown_series_rows": sum(unknown.values()),
        }
        labeled = [self.annotations_path is not None] * len(records)
        super().__init__(
            records,
            [{"id": 1, "name": "nodule"}],
            transform=transform,
            labeled=labeled,
            source=self.annotations_path or self.root,
        )

    # ------------------------------------------------------------------ annotations
    def nodules(self, i: int) -> list[PlacedNodule]:
        """The nodules of scan ``i`` that have a box (centre inside the scan)."""
        return list(self._nodules[self._check_index(i)])

    def outside_nodules(self, i: int) -> list[PlacedNodule]:
        """Annotation rows of scan ``i`` whose centre lies outside it (no box)."""
        return list(self._outside[self._check_index(i)])

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        placed = self._nodules[i]
        if not placed:
            return _empty3d()
        boxes = torch.tensor([p.box for p in placed], dtype=torch.float32)  # (N, 6)
        return boxes, torch.ones((len(placed),), dtype=torch.int64)

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return _empty3d()

    def report_lines(self) -> list[str]:
        """The conversion report, one line per fact (what ``ssmd data convert`` prints)."""
        r = self.report
        lines = [
            f"{len(self)} scans, {r['annotation_rows']} annotation rows -> {r['boxes']} boxes "
            f"({r['clipped']} clipped to their scan)"
        ]
        if r["outside"]:
            lines.append(
                f"{len(r['outside'])} nodule(s) with the centre outside their scan (no box):"
            )
            lines += [
                f"  line {o['line']}: {o['seriesuid']} centre voxel "
                f"({', '.join(f'{v:.2f}' for v in o['center_voxel'])}), scan size {o['size_xyz']}"
                for o in r["outside"]
            ]
        if r["unknown_series_rows"]:
            lines.append(
                f"{r['unknown_series_rows']} row(s) for {len(r['unknown_series'])} seriesuid(s) "
                f"with no .mhd under {self.root} (skipped)"
            )
        return lines

    # ------------------------------------------------------------------ pixels
    def read_volume(self, i: int) -> Volume:
        """Scan ``i`` as read from disk (HU, native spacing)."""
        return read_metaimage(self.records[self._check_index(i)].path)

    def _load_image(self, i: int) -> Tensor:
        return self._sample(i, True, None).image

    def _sample(self, i: int, labeled: bool, transform: Transform | None) -> VolumeSample:
        rec = self.volume_records[i]
        vol = read_metaimage(rec.path)
        if self.spacing is not None:
            sp = self.spacing
            vol = resample(vol, float(sp) if isinstance(sp, (int, float)) else tuple(sp))
            placed = [
                nodule_box(vol, p.nodule.center_world, p.nodule.diameter_mm)
                for p in self._nodules[i]
            ]
            boxes = (
                torch.tensor([p.box for p in placed], dtype=torch.float32)
                if placed
                else _empty3d()[0]
            )
        else:
            boxes = self._annotation(i)[0]
        a = (
            vol.array.astype(np.float32)
            if self.window is None
            else apply_window(vol.array, self.window)
        )
        image = torch.from_numpy(np.ascontiguousarray(a))
        if image.ndim == 3:
            image = image[None]  # (1, Z, Y, X)
        sample = VolumeSample(
            image=image,
            boxes=boxes,
            labels=torch.ones((int(boxes.shape[0]),), dtype=torch.int64),
            image_id=rec.image_id,
            path=str(rec.path),
            is_labeled=labeled,
            ignore=_empty3d()[0],
            spatial_dims=3,
            spacing=vol.spacing,
            origin=vol.origin,
            direction=vol.direction,
            seriesuid=rec.seriesuid,
        )
        if transform is None:
            return sample
        out = transform(sample)
        if not isinstance(out, VolumeSample):
            raise TypeError(
                f"a Luna16Dataset transform must return a VolumeSample, got {type(out).__name__}"
            )
        return out

    def __getitem__(self, i: int) -> VolumeSample:
        i = self._check_index(i)
        return self._sample(i, self._labeled[i], self.transform)

    def subset(
        self,
        indices: Sequence[int],
        labeled: Sequence[bool] | None = None,
        transform: Transform | str | None = "inherit",
    ) -> _VolumeSubset:
        """A view on ``indices`` whose items are :class:`VolumeSample` s (see the base class)."""
        tf = self.transform if transform == "inherit" else transform
        if isinstance(tf, str):
            raise ValueError(f"transform must be a callable, None or 'inherit', got {tf!r}")
        return _VolumeSubset(self, indices, labeled=labeled, transform=tf)


class _VolumeSubset(SubsetDataset):
    """A view on a :class:`Luna16Dataset` that keeps returning :class:`VolumeSample` s."""

    spatial_dims: ClassVar[int] = 3
    _parent: Luna16Dataset

    def __getitem__(self, i: int) -> VolumeSample:
        i = self._check_index(i)
        return self._parent._sample(self._indices[i], self._labeled[i], self.transform)

    def subset(
        self,
        indices: Sequence[int],
        labeled: Sequence[bool] | None = None,
        transform: Transform | str | None = "inherit",
    ) -> _VolumeSubset:
        tf = self.transform if transform == "inherit" else transform
        if isinstance(tf, str):
            raise ValueError(f"transform must be a callable, None or 'inherit', got {tf!r}")
        idx = [self._check_index(int(i)) for i in indices]
        flags = [self._labeled[i] for i in idx] if labeled is None else labeled
        return _VolumeSubset(self, idx, labeled=flags, transform=tf)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def to_volume_json(dataset: DetectionDataset) -> dict[str, Any]:
    """A 3D dataset (``spatial_dims == 3``) as a COCO-style dict with 3D boxes.

    ``images``: ``id, file_name, width (X), height (Y), depth (Z), seriesuid, spacing,
    origin, direction`` (row-major 9 numbers). ``annotations``: ``id, image_id,
    category_id, bbox = [x, y, z, w, h, d]`` (corner + size in voxels, the 3D form of
    COCO's ``xywh`` -- :func:`ssmd.structures.boxes.xyxy_to_xywh`), ``area`` = the box
    volume in voxels, ``iscrowd = 0``, and for LUNA16 the world ``center_mm`` and
    ``diameter_mm`` of the CSV row plus the continuous ``center_voxel``.
    ``categories``: ``[{"id": 1, "name": "nodule"}]``.
    """
    if getattr(dataset, "spatial_dims", 2) != 3:
        raise ValueError(f"to_volume_json needs a 3D dataset, got {type(dataset).__name__}")
    root = dataset.parent if isinstance(dataset, SubsetDataset) else dataset
    indices = (
        dataset.parent_indices if isinstance(dataset, SubsetDataset) else list(range(len(dataset)))
    )
    if not isinstance(root, Luna16Dataset):
        raise ValueError(f"to_volume_json knows Luna16Dataset, got {type(root).__name__}")
    cat_ids = root.label_to_category
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k in indices:
        rec = root.volume_records[k]
        geom = rec.geometry
        images.append(
            {
                "id": rec.image_id,
                "file_name": rec.file_name,
                "width": rec.width,
                "height": rec.height,
                "depth": rec.depth,
                "seriesuid": rec.seriesuid,
                "spacing": list(geom.spacing),
                "origin": list(geom.origin),
                "direction": [float(v) for v in geom.direction.reshape(-1)],
            }
        )
        for p in root.nodules(k):
            x1, y1, z1, x2, y2, z2 = p.box
            size = (x2 - x1, y2 - y1, z2 - z1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec.image_id,
                    "category_id": cat_ids[1],
                    "bbox": [_num(v) for v in (x1, y1, z1, *size)],
                    "area": _num(math.prod(size)),
                    "iscrowd": 0,
                    "center_voxel": list(p.center_voxel),
                    "center_mm": list(p.nodule.center_world),
                    "diameter_mm": p.nodule.diameter_mm,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": list(root.categories),
        "info": {"spatial_dims": 3, "box_format": "xyzwhd voxels", "world": "LPS mm"},
    }


def write_volume_json(
    dataset: DetectionDataset, path: str | Path, indent: int | None = None
) -> Path:
    """Write :func:`to_volume_json` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    atomic_write_json(path, to_volume_json(dataset), indent=indent)
    return path


def volume_stats(dataset: DetectionDataset) -> dict[str, Any]:
    """Counts and histograms of a 3D dataset from its headers and boxes (no voxels read).

    Returns:
        ``format``, ``scans``, ``labeled_scans``, ``objects``, ``objects_per_scan``
        (``"0"``, ``"1"``, ``"2"``, ``">=3"``), ``diameter_mm`` histogram
        (``<4``, ``4-6``, ``6-10``, ``10-20``, ``>=20``: LUNA16 nodules are >= 3 mm),
        ``spacing_z_mm`` (``"0.625"`` -> count), ``slices`` (min / median / max) and, for
        LUNA16, the conversion :attr:`Luna16Dataset.report`.
    """
    root = dataset.parent if isinstance(dataset, SubsetDataset) else dataset
    indices = (
        dataset.parent_indices if isinstance(dataset, SubsetDataset) else list(range(len(dataset)))
    )
    if not isinstance(root, Luna16Dataset):
        raise ValueError(f"volume_stats knows Luna16Dataset, got {type(root).__name__}")
    per_scan: Counter[str] = Counter()
    diam: Counter[str] = Counter({"<4": 0, "4-6": 0, "6-10": 0, "10-20": 0, ">=20": 0})
    spacing_z: Counter[str] = Counter()
    depths: list[int] = []
    n_obj = 0
    for k in indices:
        rec = root.volume_records[k]
        placed = root.nodules(k)
        n_obj += len(placed)
        per_scan[str(len(placed)) if len(placed) < 3 else ">=3"] += 1
        for p in placed:
            d = p.nodule.diameter_mm
            key = (
                "<4"
                if d < 4
                else "4-6"
                if d < 6
                else "6-10"
                if d < 10
                else "10-20"
                if d < 20
                else ">=20"
            )
            diam[key] += 1
        spacing_z[f"{rec.geometry.spacing[2]:g}"] += 1
        depths.append(rec.depth)
    ordered = sorted(depths)
    return {
        "format": root.format_name,
        "scans": len(indices),
        "labeled_scans": sum(dataset.labeled_flags()),
        "objects": n_obj,
        "objects_per_scan": {k: per_scan[k] for k in ("0", "1", "2", ">=3")},
        "diameter_mm": dict(diam),
        "spacing_z_mm": dict(spacing_z.most_common()),
        "slices": {
            "min": ordered[0] if ordered else 0,
            "median": float(np.median(ordered)) if ordered else 0.0,
            "max": ordered[-1] if ordered else 0,
        },
        "report": root.report,
    }


def format_volume_stats(stats: dict[str, Any]) -> str:
    """:func:`volume_stats` output as a short markdown report."""
    sl = stats["slices"]
    lines = [
        f"format: {stats['format']}",
        f"scans: {stats['scans']} ({stats['labeled_scans']} labeled)",
        f"objects: {stats['objects']}",
        f"slices per scan: min {sl['min']}, median {sl['median']:g}, max {sl['max']}",
        "",
    ]
    for title, key, col in (
        ("objects per scan", "objects_per_scan", "scans"),
        ("nodule diameter mm", "diameter_mm", "nodules"),
        ("slice spacing mm", "spacing_z_mm", "scans"),
    ):
        lines += [f"| {title} | {col} |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in stats[key].items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
