"""DeepLesion (release layout): key CT slices with ``2k + 1`` neighbour channels and ``xyxy`` boxes.

``root`` holds ``Images_png/<series>/<slice>.png`` and ``DL_info.csv``
(:mod:`ssmd.data.volumes.deeplesion` reads and checks both). One record per key slice
(rows of one ``File_name`` are its lesions), ids ``1..N`` in sorted ``File_name`` order;
``file_name`` is the PNG path ``Images_png/<series>/<slice>.png`` (relative to ``root``,
so a COCO file written from this dataset reads back with ``image_root=root``). Boxes are
``xyxy`` pixels as in ``Bounding_boxes``; one category, ``lesion`` (DeepLesion detection
is class-agnostic; the coarse type is kept in :meth:`DeepLesionDataset.lesion_types`).

``dataset[i].image`` is ``Tensor[2k + 1, H, W]`` float32: the key slice and ``k``
neighbours on each side (lowest slice index first) ``z_spacing`` mm apart, linearly
interpolated between the released slices, a missing slice replaced by the nearest
existing one towards the key slice (:func:`~ssmd.data.volumes.deeplesion.neighbour_plan`,
3DCE's rule), then windowed:

- ``window="lp"`` (default): ``-1024..3071`` HU -> ``[0, 1]``, the LP paper's single window
  (the paper's ``[0, 255]`` scaled to ssmd's ``[0, 1]`` image range);
- ``window="ssmd"``: clip ``[-1100, 1100]`` HU -> ``[-1, 1]`` (SSMD paper, Sec. 4.1);
- ``window="dicom"``: each key slice's own ``DICOM_windows`` -> ``[0, 1]``;
- ``window="hu"``: raw HU as float32; or any ``(lo, hi)`` / :class:`Window`;

and, with ``normalize=(mean, std)`` (from :meth:`DeepLesionDataset.mean_std` on the
training set, as the SSMD paper does), standardised. The defaults (``k = 1``, 2 mm) give
3 channels, the input of an ImageNet backbone (3DCE's 3-slice group).

``slices="all"`` makes every PNG of every series folder a sample (key slices labeled,
the others ``is_labeled=False`` with no boxes: the unlabeled slices of label
propagation); without a ``DL_info.csv`` (``info_csv=None`` and none in ``root``) every
slice is unlabeled and ``slice_interval=`` gives the series' z spacing.

Checks beyond the CSV's (each a :class:`~ssmd.utils.errors.DataError`): a key slice
whose PNG is missing, is not 16-bit, or whose size is not ``Image_size``; a series folder
holding a slice outside the ``Slice_range`` of its rows; a file in a series folder that
is not ``<slice>.png``. Counted and reported (:attr:`DeepLesionDataset.report`, printed
by ``ssmd data convert / stats``): neighbour slices replaced because their file is
missing, series folders without rows, noisy lesions dropped or ignored.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, Transform, empty_annotation
from ssmd.data.io import PIL_ERRORS
from ssmd.data.splits import Split
from ssmd.data.volumes.deeplesion import (
    DeepLesionRow,
    SlicePlan,
    neighbour_plan,
    read_dl_info,
    read_hu_png,
)
from ssmd.data.volumes.intensity import RunningMeanStd, Window, apply_window, standardize
from ssmd.utils.errors import DataError

__all__ = ["DeepLesionDataset", "KeySlice"]

_NOISY = ("keep", "drop", "ignore")


@dataclass(frozen=True)
class KeySlice:
    """One sample: a slice, its lesions and its series.

    Attributes:
        file_name: ``Images_png/<series>/<slice>.png``.
        series: the series folder name.
        slice_index: the slice.
        rows: its ``DL_info.csv`` rows (empty for a non-key slice).
        slice_interval: z spacing in mm (``None`` if unknown).
        split: ``"train"`` / ``"val"`` / ``"test"`` from the rows (or the series'), or ``None``.
    """

    file_name: str
    series: str
    slice_index: int
    rows: tuple[DeepLesionRow, ...]
    slice_interval: float | None
    split: str | None


def _png_info(path: Path) -> tuple[int, int, str]:
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1]), str(im.mode)
    except FileNotFoundError as exc:
        raise DataError(path, "image", str(path), "file does not exist") from exc
    except PIL_ERRORS as exc:
        raise DataError(path, "image", str(path), f"not a readable image ({exc})") from exc


class DeepLesionDataset(DetectionDataset):
    """DeepLesion key slices with neighbour channels (module docstring).

    Args:
        root: folder holding ``Images_png/``.
        info_csv: the ``DL_info.csv`` to use; default ``root/DL_info.csv`` if it exists.
        num_neighbors: ``k``: slices on each side of the key slice (``2k + 1`` channels).
        z_spacing: mm between channels (default 2, the LP paper); ``None``: native slices.
        window: ``"lp"``, ``"ssmd"``, ``"dicom"``, ``"hu"``, ``(lo, hi)`` or a :class:`Window`.
        normalize: ``(mean, std)`` applied after the window.
        slices: ``"key"`` (one sample per key slice) or ``"all"`` (every PNG).
        part: keep only ``"train"``, ``"val"`` or ``"test"`` of the official split.
        noisy: lesions with ``Possibly_noisy = 1``: ``"keep"``, ``"drop"`` (counted) or
            ``"ignore"`` (ignore regions, as COCO ``iscrowd``).
        slice_interval: z spacing (mm) for series without ``DL_info.csv`` rows.
        transform: applied to every sample.
        check_files: open every key slice's PNG header at construction (existence,
            16-bit, size).

    Raises:
        DataError: see the module docstring.
    """

    format_name: ClassVar[str] = "deeplesion"

    def __init__(
        self,
        root: str | Path,
        info_csv: str | Path | None = None,
        num_neighbors: int = 1,
        z_spacing: float | None = 2.0,
        window: str | Window | tuple[float, float] = "lp",
        normalize: tuple[float, float] | None = None,
        slices: str = "key",
        part: str | None = None,
        noisy: str = "keep",
        slice_interval: float | None = None,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        if slices not in ("key", "all"):
            raise ValueError(f"slices = {slices!r}: use 'key' or 'all'")
        if part not in (None, "train", "val", "test"):
            raise ValueError(f"part = {part!r}: use 'train', 'val', 'test' or None")
        if noisy not in _NOISY:
            raise ValueError(f"noisy = {noisy!r}: use one of {_NOISY}")
        if num_neighbors < 0:
            raise ValueError(f"num_neighbors = {num_neighbors}: need >= 0")
        if z_spacing is not None and not z_spacing > 0:
            raise ValueError(f"z_spacing = {z_spacing}: need > 0 mm or None")
        if slice_interval is not None and not slice_interval > 0:
            raise ValueError(f"slice_interval = {slice_interval}: need > 0 mm or None")
        self.root = Path(root)
        self.images_dir = self.root / "Images_png"
        if not self.images_dir.is_dir():
            raise DataError(self.root, "Images_png", str(self.images_dir), "folder does not exist")
        if info_csv is None and (self.root / "DL_info.csv").is_file():
            info_csv = self.root / "DL_info.csv"
        self.info_csv = Path(info_csv) if info_csv is not None else None
        if self.info_csv is None and slices == "key":
            raise DataError(
                self.root, "DL_info.csv", None,
                "no DL_info.csv in the root and info_csv not given (slices='all' reads "
                "unlabeled series)",
            )  # fmt: skip
        if isinstance(window, str) and window not in ("lp", "ssmd", "dicom", "hu", "luna16"):
            raise ValueError(f"window = {window!r}: use 'lp', 'ssmd', 'dicom', 'hu' or (lo, hi)")
        self.num_neighbors = int(num_neighbors)
        self.z_spacing = z_spacing
        self.window = window
        self.normalize = normalize
        if normalize is not None:
            standardize(np.zeros(1, np.float32), *normalize)  # validates mean/std
        self.noisy = noisy

        rows = read_dl_info(self.info_csv) if self.info_csv is not None else []
        by_file: dict[str, list[DeepLesionRow]] = defaultdict(list)
        for r in rows:
            by_file[r.image_path].append(r)
        series_rows: dict[str, list[DeepLesionRow]] = defaultdict(list)
        for r in rows:
            series_rows[r.series].append(r)
        csv_path = self.info_csv or self.root
        for group in by_file.values():
            first = group[0]
            for r in group[1:]:
                for attr in ("spacing", "slice_range", "image_size", "split"):
                    if getattr(r, attr) != getattr(first, attr):
                        raise DataError(
                            csv_path, f"line {r.line}: {attr}", getattr(r, attr),
                            f"differs from line {first.line} ({getattr(first, attr)}) for the same "
                            f"slice {first.file_name}",
                        )  # fmt: skip

        # the slice files of every series folder we need
        if slices == "all":
            series_names = sorted(
                p.name
                for p in self.images_dir.iterdir()
                if p.is_dir() and not p.name.startswith(".")
            )
        else:
            series_names = sorted(series_rows)
        self._available: dict[str, set[int]] = {}
        for s in series_names:
            folder = self.images_dir / s
            if not folder.is_dir():
                first = series_rows[s][0]
                raise DataError(
                    csv_path, f"line {first.line}: File_name", first.file_name,
                    f"image {folder / f'{first.key_slice:03d}.png'} does not exist "
                    "(no series folder)",
                )  # fmt: skip
            self._available[s] = self._scan_series(folder)
        for s, group in series_rows.items():
            if s not in self._available:
                continue
            lo = min(r.slice_range[0] for r in group)
            hi = max(r.slice_range[1] for r in group)
            outside = sorted(i for i in self._available[s] if not lo <= i <= hi)
            if outside:
                raise DataError(
                    self.images_dir / s, "Slice_range", (lo, hi),
                    f"the folder holds slice(s) {outside[:5]} outside the Slice_range of its "
                    f"{len(group)} DL_info row(s): the range does not match the files",
                )  # fmt: skip
        all_series = sorted(p.name for p in self.images_dir.iterdir() if p.is_dir())
        self._series_interval: dict[str, float | None] = {}
        self._series_split: dict[str, str | None] = {}
        for s in series_names:
            group = series_rows.get(s, [])
            self._series_interval[s] = group[0].spacing[2] if group else slice_interval
            splits = {r.split for r in group}
            if len(splits) > 1:
                raise DataError(
                    csv_path, "Train_Val_Test", sorted(splits),
                    f"rows of series {s} are in different official parts",
                )  # fmt: skip
            self._series_split[s] = splits.pop() if splits else None

        # samples
        keys: list[KeySlice] = []
        if slices == "key":
            for name in sorted(by_file, key=lambda n: by_file[n][0].file_name):
                group = by_file[name]
                keys.append(
                    KeySlice(
                        name,
                        group[0].series,
                        group[0].key_slice,
                        tuple(group),
                        group[0].spacing[2],
                        group[0].split,
                    )
                )
        else:
            for s in series_names:
                for idx in sorted(self._available[s]):
                    name = f"Images_png/{s}/{idx:03d}.png"
                    group = by_file.get(name, [])
                    keys.append(
                        KeySlice(
                            name,
                            s,
                            idx,
                            tuple(group),
                            self._series_interval[s],
                            self._series_split[s],
                        )
                    )
            keys.sort(key=lambda k: f"{k.series}_{k.slice_index:03d}.png")
        n_parts = Counter(k.split for k in keys)
        if part is not None:
            keys = [k for k in keys if k.split == part]
        self.keys = keys

        records = []
        self._boxes: list[tuple[Tensor, Tensor]] = []
        self._ignore_boxes: list[tuple[Tensor, Tensor]] = []
        n_dropped = n_ignored = 0
        for k, key in enumerate(keys, start=1):
            path = self.root / key.file_name
            if key.slice_index not in self._available.get(key.series, set()):
                first = key.rows[0]
                raise DataError(
                    csv_path, f"line {first.line}: File_name", first.file_name,
                    f"image {path} does not exist",
                )  # fmt: skip
            if key.rows:
                w_csv, h_csv = key.rows[0].image_size
            if check_files or not key.rows:
                w, h, mode = _png_info(path)
                if mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise DataError(
                        path, "image.mode", mode,
                        "DeepLesion slices are 16-bit grey PNG (HU + 32768); this one is "
                        + ("8-bit: the HU are lost" if mode in ("L", "P", "1") else "not 16-bit grey"),
                    )  # fmt: skip
                if key.rows and (w, h) not in ((w_csv, h_csv), (h_csv, w_csv)):
                    raise DataError(
                        csv_path, f"line {key.rows[0].line}: Image_size", (w_csv, h_csv),
                        f"but {path} is {w}x{h}",
                    )  # fmt: skip
            else:
                w, h = w_csv, h_csv
            for r in key.rows:
                _, _, x2, y2 = r.box
                if x2 > w or y2 > h:
                    raise DataError(
                        csv_path, f"line {r.line}: Bounding_boxes", list(r.box),
                        f"outside the image ({w}x{h})",
                    )  # fmt: skip
            records.append(
                ImageRecord(image_id=k, file_name=key.file_name, width=w, height=h, path=path)
            )
            keep = [r for r in key.rows if not r.noisy or noisy == "keep"]
            ign = [r for r in key.rows if r.noisy and noisy == "ignore"]
            n_dropped += sum(1 for r in key.rows if r.noisy and noisy == "drop")
            n_ignored += len(ign)
            self._boxes.append(_box_tensors(keep))
            self._ignore_boxes.append(_box_tensors(ign))
        labeled = [bool(key.rows) for key in keys]

        self._plans: list[SlicePlan] = [self._plan(key) for key in keys]
        unreferenced = sorted(set(all_series) - set(series_rows))
        self.report: dict[str, Any] = {
            "rows": len(rows),
            "key_slices": sum(1 for key in keys if key.rows),
            "samples": len(keys),
            "lesions": sum(len(key.rows) for key in keys),
            "noisy_dropped": n_dropped,
            "noisy_ignored": n_ignored,
            "official_parts": {
                p or "unassigned": n for p, n in sorted(n_parts.items(), key=lambda kv: str(kv[0]))
            },
            "neighbour_slices_substituted": sum(p.substituted for p in self._plans),
            "samples_with_substituted_neighbours": sum(1 for p in self._plans if p.substituted),
            "series_without_rows": len(unreferenced),
        }
        super().__init__(
            records,
            [{"id": 1, "name": "lesion"}],
            transform=transform,
            labeled=labeled,
            source=csv_path,
        )

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _scan_series(folder: Path) -> set[int]:
        out: set[int] = set()
        for p in folder.iterdir():
            if p.name.startswith("."):
                continue
            stem = p.name[:-4] if p.name.lower().endswith(".png") else ""
            if not p.is_file() or not stem.isdigit():
                raise DataError(
                    p,
                    "file_name",
                    p.name,
                    "a DeepLesion series folder holds only <slice>.png files",
                )
            out.add(int(stem))
        return out

    def _plan(self, key: KeySlice) -> SlicePlan:
        interval = key.slice_interval
        if self.z_spacing is not None and self.num_neighbors > 0 and interval is None:
            raise DataError(
                self.images_dir / key.series, "slice_interval", None,
                "no DL_info row gives this series' slice interval: pass slice_interval= or "
                "z_spacing=None",
            )  # fmt: skip
        return neighbour_plan(
            key.slice_index,
            self._available[key.series],
            self.num_neighbors,
            slice_interval=interval,
            z_spacing=self.z_spacing if self.num_neighbors > 0 else None,
        )

    # ------------------------------------------------------------------ annotations
    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return self._boxes[i]

    def _ignore(self, i: int) -> tuple[Tensor, Tensor]:
        return self._ignore_boxes[i]

    def lesion_types(self, i: int) -> list[int]:
        """``Coarse_lesion_type`` of each box of sample ``i`` (same order as the boxes)."""
        key = self.keys[self._check_index(i)]
        return [r.lesion_type for r in key.rows if not r.noisy or self.noisy == "keep"]

    def plan(self, i: int) -> SlicePlan:
        """The slices (and weights) that make sample ``i``'s channels."""
        return self._plans[self._check_index(i)]

    def official_parts(self) -> dict[str, list[str]]:
        """``{"train", "val", "test"}`` -> file names, from ``Train_Val_Test`` (sorted)."""
        out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for key in self.keys:
            if key.split is not None:
                out[key.split].append(key.file_name)
        return {p: sorted(v) for p, v in out.items()}

    def official_split(self, labeled_ratio: float = 1.0, seed: int = 0) -> Split:
        """The official train/val/test split, with a labeled subset of train.

        ``val`` and ``test`` hold the key slices of those parts; ``train`` holds the train
        key slices, plus (``slices="all"``) every other slice of a train series and of a
        series without rows, as unlabeled images. The labeled set is the first
        ``max(1, round(labeled_ratio * n))`` of ``PCG64(seed).permutation(n)`` over the
        sorted train key slices (the rule of :func:`ssmd.data.splits.make_split`), so the
        labeled sets of one seed are nested.
        """
        if not 0 < labeled_ratio <= 1:
            raise ValueError(f"labeled_ratio = {labeled_ratio}: must lie in (0, 1]")
        train_keys: list[str] = []
        train_other: list[str] = []
        val: list[str] = []
        test: list[str] = []
        for key in self.keys:
            if key.rows:
                {"train": train_keys, "val": val, "test": test}[key.split or "train"].append(
                    key.file_name
                )
            elif key.split in (None, "train"):
                train_other.append(key.file_name)
        train_keys.sort()
        if not train_keys:
            raise ValueError("official_split: no train key slice")
        rng = np.random.Generator(np.random.PCG64(seed))
        order = rng.permutation(len(train_keys))
        n_lab = max(1, round(labeled_ratio * len(train_keys)))
        labeled = sorted(train_keys[k] for k in order[:n_lab])
        unlabeled = sorted(set(train_keys) - set(labeled) | set(train_other))
        n = len(train_keys) + len(val) + len(test)
        split = Split(
            train=sorted(train_keys + train_other),
            val=sorted(val),
            test=sorted(test),
            labeled=labeled,
            unlabeled=unlabeled,
            seed=seed,
            ratios={
                "train": len(train_keys) / n,
                "val": len(val) / n,
                "test": len(test) / n,
                "labeled": float(labeled_ratio),
            },
        )
        split.validate("official DeepLesion split")
        return split

    def report_lines(self) -> list[str]:
        """The conversion report (what ``ssmd data convert / stats`` print)."""
        r = self.report
        lines = [
            f"{r['samples']} samples ({r['key_slices']} key slices, {r['lesions']} lesions from "
            f"{r['rows']} DL_info rows); official parts {r['official_parts']}",
            f"{r['neighbour_slices_substituted']} neighbour slice(s) missing, replaced by the "
            f"nearest slice towards the key slice ({r['samples_with_substituted_neighbours']} "
            "sample(s))",
        ]
        if r["noisy_dropped"] or r["noisy_ignored"]:
            lines.append(
                f"noisy lesions: {r['noisy_dropped']} dropped, {r['noisy_ignored']} as ignore regions"
            )
        if r["series_without_rows"]:
            lines.append(f"{r['series_without_rows']} series folder(s) with no DL_info row")
        return lines

    # ------------------------------------------------------------------ pixels
    def read_hu(self, i: int) -> np.ndarray:
        """``(2k + 1, H, W)`` float32 HU of sample ``i`` (interpolated, before windowing)."""
        i = self._check_index(i)
        key = self.keys[i]
        cache: dict[int, np.ndarray] = {}
        out = []
        for ch in self._plans[i].channels:
            acc: np.ndarray | None = None
            for s, w in ch:
                if s not in cache:
                    cache[s] = read_hu_png(self.images_dir / key.series / f"{s:03d}.png")
                    if cache[s].shape != (self.records[i].height, self.records[i].width):
                        raise DataError(
                            self.images_dir / key.series / f"{s:03d}.png", "image.size",
                            cache[s].shape[::-1],
                            f"differs from the key slice's {self.records[i].width}x{self.records[i].height}",
                        )  # fmt: skip
                term = cache[s].astype(np.float32) * np.float32(w)
                acc = term if acc is None else acc + term
            assert acc is not None  # every channel has at least one slice
            out.append(acc)
        return np.stack(out)  # (2k + 1, H, W)

    def _window_of(self, i: int) -> str | Window | tuple[float, float] | None:
        if self.window == "hu":
            return None
        if self.window == "dicom":
            rows = self.keys[i].rows
            if not rows:
                raise DataError(
                    self.root / self.keys[i].file_name, "DICOM_windows", None,
                    "window='dicom' needs a DL_info row for every sample",
                )  # fmt: skip
            return rows[0].window
        return self.window

    def _load_image(self, i: int) -> Tensor:
        hu = self.read_hu(i)
        w = self._window_of(i)
        x = hu if w is None else apply_window(hu, w)
        if self.normalize is not None:
            x = standardize(x, *self.normalize)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def mean_std(self, indices: Sequence[int] | None = None) -> tuple[float, float]:
        """Mean and std of the windowed (not normalised) images of ``indices`` (default all).

        The SSMD paper normalises by the statistics of the whole training set: pass the
        train indices and give the result as ``normalize=``.
        """
        acc = RunningMeanStd()
        for i in indices if indices is not None else range(len(self)):
            hu = self.read_hu(int(i))
            w = self._window_of(self._check_index(int(i)))
            acc.update(hu if w is None else apply_window(hu, w))
        if acc.count == 0:
            raise ValueError("mean_std: no images")
        return acc.mean, acc.std


def _box_tensors(rows: Sequence[DeepLesionRow]) -> tuple[Tensor, Tensor]:
    if not rows:
        return empty_annotation()
    boxes = torch.tensor([list(r.box) for r in rows], dtype=torch.float32)  # (N, 4) xyxy
    return boxes, torch.ones((len(rows),), dtype=torch.int64)
