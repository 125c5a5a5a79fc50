"""DeepLesion's release format: ``DL_info.csv``, 16-bit PNG slices, and neighbour-slice plans.

Layout (Yan et al., J. Med. Imaging 5(3) 2018): ``Images_png/<patient>_<study>_<series>/
<slice>.png`` -- 16-bit grey PNG, **HU = value - 32768** -- and ``DL_info.csv``, one row per
lesion: ``File_name`` (``<patient>_<study>_<series>_<slice>.png``), ``Key_slice_index``,
``Bounding_boxes`` (``x1, y1, x2, y2`` pixels), ``Spacing_mm_px_`` (``x, y`` pixel size and
the slice interval, mm), ``Slice_range`` (first and last slice index of the series'
folder), ``Image_size``, ``DICOM_windows`` (``lo, hi`` HU), ``Possibly_noisy`` (0/1),
``Train_Val_Test`` (1 train, 2 val, 3 test: the official patient-level split), plus
optional ``Coarse_lesion_type`` (1-8, -1 unknown) and the rest.

Checks (each a :class:`~ssmd.utils.errors.DataError` naming the CSV, the line, the column
and the value): a missing column, a ``File_name`` that is not ``<series>_<slice>.png``, a
``Key_slice_index`` that differs from the file name's slice, a box that is empty or
outside ``Image_size``, a slice range that does not contain the key slice, a
non-positive spacing, a split code other than 1-3, and rows of one key slice that
disagree on spacing, range, size or split. :func:`read_hu_png` rejects a PNG that is not
16-bit (an 8-bit PNG means the HU are lost).

Neighbour slices (:func:`neighbour_plan`) follow the reference loader of DeepLesion's
authors (3DCE, Yan et al. MICCAI 2018, ``load_multislice_img_16bit_png`` /
``get_slice_name``): channel ``j`` (``-k..k``) of a key slice ``s`` sits ``j * z_spacing``
mm away, i.e. at continuous slice index ``t = s + j * z_spacing / slice_interval``, and is
linearly interpolated between slices ``floor(t)`` and ``ceil(t)`` (weights ``ceil(t) - t``
and ``t - floor(t)``); the LP paper interpolates to 2 mm this way. A slice index whose
file is missing is replaced by the nearest existing one *towards the key slice*
(3DCE's rule: at a series end, or when only the key slice was released, the nearest
slice repeats). ``z_spacing=None`` takes the native neighbours ``s + j``. Every
replacement is counted (:attr:`SlicePlan.substituted`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssmd.data.io import image_array
from ssmd.utils.errors import DataError

__all__ = [
    "DL_INFO_REQUIRED",
    "HU_OFFSET",
    "SPLIT_CODES",
    "DeepLesionRow",
    "SlicePlan",
    "neighbour_plan",
    "parse_file_name",
    "read_dl_info",
    "read_hu_png",
    "resolve_slice",
]

HU_OFFSET = 32768
"""DeepLesion PNG value of 0 HU (``HU = value - HU_OFFSET``)."""

DL_INFO_REQUIRED = (
    "File_name",
    "Key_slice_index",
    "Bounding_boxes",
    "Spacing_mm_px_",
    "Slice_range",
    "Image_size",
    "DICOM_windows",
    "Possibly_noisy",
    "Train_Val_Test",
)
"""Columns of ``DL_info.csv`` the reader needs."""

SPLIT_CODES = {1: "train", 2: "val", 3: "test"}
"""``Train_Val_Test`` codes."""

_FILE_RE = re.compile(r"^(\d+_\d+_\d+)_(\d+)\.png$")


@dataclass(frozen=True)
class DeepLesionRow:
    """One lesion (one row of ``DL_info.csv``).

    Attributes:
        line: line of the CSV (the header is line 1).
        file_name: ``File_name`` as written (``000001_01_01_109.png``).
        series: ``<patient>_<study>_<series>`` (the ``Images_png`` sub-folder).
        key_slice: ``Key_slice_index``.
        box: ``(x1, y1, x2, y2)`` pixels.
        spacing: ``(x, y, z)`` mm: pixel size and slice interval.
        slice_range: ``(first, last)`` slice index of the series folder.
        image_size: the two numbers of ``Image_size``.
        window: ``DICOM_windows`` ``(lo, hi)`` HU.
        noisy: ``Possibly_noisy == 1``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        lesion_type: ``Coarse_lesion_type`` (``-1`` unknown or absent).
    """

    line: int
    file_name: str
    series: str
    key_slice: int
    box: tuple[float, float, float, float]
    spacing: tuple[float, float, float]
    slice_range: tuple[int, int]
    image_size: tuple[int, int]
    window: tuple[float, float]
    noisy: bool
    split: str
    lesion_type: int

    @property
    def image_path(self) -> str:
        """``Images_png/<series>/<slice>.png`` (relative to the dataset root)."""
        return f"Images_png/{self.series}/{self.key_slice:03d}.png"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """``"000001_01_01_109.png"`` -> ``("000001_01_01", 109)``; ``None`` if it does not match."""
    m = _FILE_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def _numbers(path: Path, line: int, col: str, text: str | None, n: int) -> list[float]:
    try:
        vals = [float(v) for v in (text or "").split(",")]
    except ValueError:
        raise DataError(
            path, f"line {line}: {col}", text, f"expected {n} comma-separated numbers"
        ) from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise DataError(path, f"line {line}: {col}", text, f"expected {n} finite numbers")
    return vals


def _int(path: Path, line: int, col: str, text: str | None) -> int:
    try:
        v = float(text or "")
    except ValueError:
        raise DataError(path, f"line {line}: {col}", text, "expected an integer") from None
    if not v.is_integer():
        raise DataError(path, f"line {line}: {col}", text, "expected an integer")
    return int(v)


def read_dl_info(path: str | Path) -> list[DeepLesionRow]:
    """Read and validate ``DL_info.csv`` (module docstring); file order kept.

    Raises:
        DataError: see the module docstring.
    """
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(path, "file", str(path), "does not exist") from exc
    with fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in DL_INFO_REQUIRED if c not in cols]
        if missing:
            raise DataError(path, "columns", cols, f"missing DL_info column(s) {missing}")
        rows = []
        for r in reader:
            line = reader.line_num
            name = (r["File_name"] or "").strip()
            parsed = parse_file_name(name)
            if parsed is None:
                raise DataError(
                    path,
                    f"line {line}: File_name",
                    name,
                    "expected <patient>_<study>_<series>_<slice>.png",
                )
            series, slice_idx = parsed
            key = _int(path, line, "Key_slice_index", r["Key_slice_index"])
            if key != slice_idx:
                raise DataError(
                    path,
                    f"line {line}: Key_slice_index",
                    key,
                    f"differs from the slice {slice_idx} of File_name {name}",
                )
            x1, y1, x2, y2 = _numbers(path, line, "Bounding_boxes", r["Bounding_boxes"], 4)
            size = [int(v) for v in _numbers(path, line, "Image_size", r["Image_size"], 2)]
            if min(size) < 1:
                raise DataError(
                    path, f"line {line}: Image_size", r["Image_size"], "must be positive"
                )
            w, h = size
            if not (x2 > x1 and y2 > y1):
                raise DataError(
                    path,
                    f"line {line}: Bounding_boxes",
                    r["Bounding_boxes"],
                    "empty box (need x1 < x2, y1 < y2)",
                )
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                raise DataError(
                    path,
                    f"line {line}: Bounding_boxes",
                    r["Bounding_boxes"],
                    f"outside the image (Image_size {w}, {h})",
                )
            sp = _numbers(path, line, "Spacing_mm_px_", r["Spacing_mm_px_"], 3)
            if min(sp) <= 0:
                raise DataError(
                    path, f"line {line}: Spacing_mm_px_", r["Spacing_mm_px_"], "must be > 0"
                )
            lo, hi = (int(v) for v in _numbers(path, line, "Slice_range", r["Slice_range"], 2))
            if not lo <= key <= hi:
                raise DataError(
                    path,
                    f"line {line}: Slice_range",
                    r["Slice_range"],
                    f"does not contain the key slice {key}",
                )
            win = _numbers(path, line, "DICOM_windows", r["DICOM_windows"], 2)
            if win[1] <= win[0]:
                raise DataError(
                    path, f"line {line}: DICOM_windows", r["DICOM_windows"], "need lo < hi"
                )
            noisy = _int(path, line, "Possibly_noisy", r["Possibly_noisy"])
            if noisy not in (0, 1):
                raise DataError(path, f"line {line}: Possibly_noisy", noisy, "expected 0 or 1")
            code = _int(path, line, "Train_Val_Test", r["Train_Val_Test"])
            if code not in SPLIT_CODES:
                raise DataError(
                    path,
                    f"line {line}: Train_Val_Test",
                    code,
                    "expected 1 (train), 2 (val) or 3 (test)",
                )
            ltype = r.get("Coarse_lesion_type")
            lesion_type = (
                _int(path, line, "Coarse_lesion_type", ltype) if ltype not in (None, "") else -1
            )
            rows.append(
                DeepLesionRow(
                    line=line,
                    file_name=name,
                    series=series,
                    key_slice=key,
                    box=(x1, y1, x2, y2),
                    spacing=(sp[0], sp[1], sp[2]),
                    slice_range=(lo, hi),
                    image_size=(w, h),
                    window=(win[0], win[1]),
                    noisy=bool(noisy),
                    split=SPLIT_CODES[code],
                    lesion_type=lesion_type,
                )
            )
    return rows


def read_hu_png(path: str | Path) -> np.ndarray:
    """A DeepLesion slice as HU: ``int32 (H, W)`` = PNG value - 32768.

    Raises:
        DataError: missing or undecodable file, or a PNG that is not 16-bit grey (an
            8-bit or colour PNG has lost the HU: re-export from the original PNG/DICOM).
    """
    a = image_array(path)
    if a.ndim != 2:
        raise DataError(
            path, "image.shape", tuple(a.shape), "DeepLesion slices are single-channel 16-bit PNG"
        )
    if a.dtype == np.uint8:
        raise DataError(
            path,
            "image.dtype",
            "uint8",
            "an 8-bit PNG: DeepLesion slices are 16-bit (HU + 32768); the HU are lost",
        )
    if a.dtype == np.int32:  # PIL mode "I" for some 16-bit PNGs
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(path, "image.values", (lo, hi), "outside the 16-bit range 0..65535")
    elif a.dtype != np.uint16:
        raise DataError(path, "image.dtype", str(a.dtype), "DeepLesion slices are 16-bit PNG")
    return a.astype(np.int32) - HU_OFFSET


def resolve_slice(available: Collection[int], key: int, index: int) -> int:
    """Slice ``index`` if its file exists, else the nearest existing one towards ``key``.

    3DCE's ``get_slice_name``: step ``index`` one slice at a time towards ``key`` until a
    file exists; ``key`` itself must exist.
    """
    if key not in available:
        raise ValueError(f"key slice {key} is not among the available slices")
    step = -1 if index > key else 1
    while index != key and index not in available:
        index += step
    return index


@dataclass(frozen=True)
class SlicePlan:
    """How to build the ``2k + 1`` channels of one sample.

    Attributes:
        channels: per channel (lowest slice index first), ``((slice_index, weight), ...)``
            sorted by slice, weights summing to 1 (one entry when no interpolation is needed
            or both ends resolve to the same slice).
        substituted: requested slice indices whose file was missing (replaced).
    """

    channels: tuple[tuple[tuple[int, float], ...], ...]
    substituted: int

    @property
    def slices(self) -> list[int]:
        """Every slice index the plan reads (sorted, unique)."""
        return sorted({s for ch in self.channels for s, _ in ch})


def neighbour_plan(
    key: int,
    available: Collection[int],
    num_neighbors: int,
    slice_interval: float | None = None,
    z_spacing: float | None = None,
) -> SlicePlan:
    """The channels of key slice ``key`` with ``num_neighbors`` (``k``) on each side.

    Args:
        key: the key slice index (must be in ``available``).
        available: slice indices whose file exists.
        num_neighbors: ``k >= 0``; ``2k + 1`` channels.
        slice_interval: the series' slice interval in mm (``Spacing_mm_px_[2]``); needed
            when ``z_spacing`` is given.
        z_spacing: distance in mm between channels (2 in the LP paper); ``None``: native
            neighbours ``key + j``.
    """
    if num_neighbors < 0:
        raise ValueError(f"num_neighbors = {num_neighbors}: need >= 0")
    if z_spacing is None:
        step = 1.0
    else:
        if slice_interval is None or not slice_interval > 0 or not z_spacing > 0:
            raise ValueError(
                f"z_spacing = {z_spacing}, slice_interval = {slice_interval}: need both > 0"
            )
        step = z_spacing / slice_interval
    avail = available if isinstance(available, (set, frozenset)) else set(available)
    channels: list[tuple[tuple[int, float], ...]] = []
    substituted = 0
    for j in range(-num_neighbors, num_neighbors + 1):
        t = key + j * step
        lo, hi = math.floor(t + 1e-9), math.ceil(t - 1e-9)  # exact multiples need no blend
        parts: dict[int, float] = {}
        pairs: Sequence[tuple[int, float]] = (
            [(lo, 1.0)] if lo >= hi else [(lo, hi - t), (hi, t - lo)]
        )
        for idx, w in pairs:
            got = resolve_slice(avail, key, idx)
            substituted += got != idx
            parts[got] = parts.get(got, 0.0) + w  # both ends replaced by one slice: merge
        channels.append(tuple(sorted(parts.items())))
    return SlicePlan(tuple(channels), substituted)
