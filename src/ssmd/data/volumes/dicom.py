"""DICOM CT series (one folder of single-frame slices) read with pydicom.

What hospitals hold. The reader:

1. reads every file's header (files pydicom does not recognise as DICOM are listed in
   ``meta["ignored_files"]``, not silently dropped);
2. groups slices by ``SeriesInstanceUID``: a folder with two series raises unless
   ``series_uid=`` picks one;
3. checks the slices agree on ``ImageOrientationPatient``, ``PixelSpacing``, ``Rows``
   and ``Columns``;
4. sorts them by position along the slice normal ``n = row x col`` (the direction
   cosines of ``ImageOrientationPatient``): ``d_k = n . ImagePositionPatient_k``, ascending
   -- the order of ITK/SimpleITK's series reader, so ``origin`` is the position of the
   first slice in that order, as in LUNA16's ``.mhd`` files;
5. checks the spacing between consecutive positions: two slices at the same position
   raise; a step more than ``rel_tol`` (1 %) away from the median step is a **gap**
   (an integer multiple of the median: "missing slice(s)") or **non-uniform spacing**,
   both raised unless ``allow_nonuniform=True``, in which case the volume gets the
   median step and ``meta`` reports every step (``slice_steps``, ``nonuniform``,
   ``suspected_missing_slices``) -- SimpleITK warns and does the same;
6. converts pixels to HU with each slice's own ``RescaleSlope`` / ``RescaleIntercept``
   (default 1 / 0): ``int16`` when the result is integral and fits, else ``float32``.

Geometry (:mod:`.volume`): ``spacing = (PixelSpacing[1], PixelSpacing[0], median step)``
(DICOM's ``PixelSpacing`` is row spacing first, i.e. ``y`` then ``x``), direction columns
``(row cosine, column cosine, normal)``, array ``(Z, Y, X)``.

Every problem raises :class:`~ssmd.utils.errors.DataError` naming the file (or folder),
the DICOM attribute and the value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssmd.data.volumes._deps import require
from ssmd.data.volumes.volume import Volume
from ssmd.utils.errors import DataError

__all__ = ["DicomSlice", "read_dicom_headers", "read_dicom_series", "sort_slices"]


@dataclass(frozen=True)
class DicomSlice:
    """The geometry and rescale fields of one DICOM slice (no pixels).

    Attributes:
        path: the file.
        series_uid: ``SeriesInstanceUID``.
        sop_uid: ``SOPInstanceUID`` ("" if absent).
        instance_number: ``InstanceNumber`` (``None`` if absent).
        position: ``ImagePositionPatient`` (x, y, z) mm, LPS.
        orientation: ``ImageOrientationPatient``: row cosine (3) then column cosine (3).
        pixel_spacing: ``PixelSpacing`` (row spacing = y, column spacing = x) mm.
        rows: ``Rows``.
        columns: ``Columns``.
        slope: ``RescaleSlope`` (1 if absent).
        intercept: ``RescaleIntercept`` (0 if absent).
    """

    path: Path
    series_uid: str
    sop_uid: str
    instance_number: int | None
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal ``row x col``."""
        o = np.asarray(self.orientation, dtype=np.float64)
        n = np.cross(o[:3], o[3:])
        return n / np.linalg.norm(n)


def _floats(path: Path, ds: Any, key: str, n: int) -> tuple[float, ...]:
    value = ds.get(key)
    if value is None:
        raise DataError(path, key, None, "missing DICOM attribute (needed for the geometry)")
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(path, key, str(value), "expected numbers") from None
    if len(vals) != n or not all(np.isfinite(vals)):
        raise DataError(path, key, vals, f"expected {n} finite numbers")
    return vals


def _slice_of(path: Path, ds: Any) -> DicomSlice:
    if "SeriesInstanceUID" not in ds:
        raise DataError(path, "SeriesInstanceUID", None, "missing DICOM attribute")
    orient = _floats(path, ds, "ImageOrientationPatient", 6)
    o = np.asarray(orient)
    if np.linalg.norm(np.cross(o[:3], o[3:])) < 1e-3:
        raise DataError(
            path, "ImageOrientationPatient", orient, "row and column cosines are parallel"
        )
    spacing = _floats(path, ds, "PixelSpacing", 2)
    if min(spacing) <= 0:
        raise DataError(path, "PixelSpacing", spacing, "must be > 0")
    pos = _floats(path, ds, "ImagePositionPatient", 3)
    inst = ds.get("InstanceNumber")
    return DicomSlice(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        instance_number=int(inst) if inst not in (None, "") else None,
        position=(pos[0], pos[1], pos[2]),
        orientation=orient,
        pixel_spacing=(spacing[0], spacing[1]),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(ds.get("RescaleSlope", 1) or 1),
        intercept=float(ds.get("RescaleIntercept", 0) or 0),
    )


def read_dicom_headers(folder: str | Path) -> tuple[list[DicomSlice], list[Path]]:
    """Headers of every DICOM file directly in ``folder`` (sorted by file name).

    Returns:
        ``(slices, ignored)``: one :class:`DicomSlice` per DICOM image file, and the
        files that are not DICOM (or hold no image).

    Raises:
        DataError: the folder is missing or holds no DICOM image, or a slice lacks a
            geometry attribute.
        MissingDependencyError: pydicom is not installed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder", str(folder), "is not a folder of DICOM files")
    pydicom = require("pydicom", "reading DICOM series")
    slices: list[DicomSlice] = []
    ignored: list[Path] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError):
            ignored.append(path)
            continue
        if "Rows" not in ds or "ImagePositionPatient" not in ds:
            ignored.append(path)  # DICOMDIR, structured report, ...: no image slice
            continue
        slices.append(_slice_of(path, ds))
    if not slices:
        raise DataError(folder, "folder", str(folder), "holds no DICOM image slice")
    return slices, ignored


def sort_slices(
    slices: list[DicomSlice], rel_tol: float = 0.01, allow_nonuniform: bool = False
) -> tuple[list[DicomSlice], dict[str, Any]]:
    """Order the slices of one series along their normal and check the steps (steps 3-5).

    Returns:
        ``(ordered, report)`` with ``report`` keys ``step`` (median mm), ``slice_steps``,
        ``nonuniform`` and ``suspected_missing_slices``.

    Raises:
        DataError: inconsistent geometry, duplicate positions, or a gap / non-uniform
            spacing without ``allow_nonuniform``.
    """
    first = slices[0]
    for s in slices[1:]:
        for attr in ("rows", "columns"):
            if getattr(s, attr) != getattr(first, attr):
                raise DataError(
                    s.path, attr.capitalize(), getattr(s, attr),
                    f"differs from {getattr(first, attr)} in {first.path.name} (same series)",
                )  # fmt: skip
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise DataError(
                s.path, "ImageOrientationPatient", s.orientation,
                f"differs from {first.orientation} in {first.path.name} (same series)",
            )  # fmt: skip
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=0):
            raise DataError(
                s.path, "PixelSpacing", s.pixel_spacing,
                f"differs from {first.pixel_spacing} in {first.path.name} (same series)",
            )  # fmt: skip
    normal = first.normal
    dist = [float(np.dot(normal, s.position)) for s in slices]
    order = sorted(range(len(slices)), key=lambda k: dist[k])
    ordered = [slices[k] for k in order]
    d = np.asarray([dist[k] for k in order])
    steps = np.diff(d)
    report: dict[str, Any] = {
        "step": 0.0,
        "slice_steps": steps.tolist(),
        "nonuniform": False,
        "suspected_missing_slices": 0,
    }
    if len(ordered) == 1:
        return ordered, report
    for k, st in enumerate(steps.tolist()):
        if st < 1e-4:
            raise DataError(
                ordered[k + 1].path, "ImagePositionPatient", ordered[k + 1].position,
                f"same position as {ordered[k].path.name}: two slices at one place "
                "(duplicate file, or two series with one SeriesInstanceUID)",
            )  # fmt: skip
    step = float(np.median(steps))
    report["step"] = step
    off = np.abs(steps - step) > rel_tol * step
    if off.any():
        multiples = np.round(steps / step)
        gaps = off & (multiples >= 2) & (np.abs(steps - multiples * step) <= rel_tol * step)
        report["nonuniform"] = True
        report["suspected_missing_slices"] = int((multiples[gaps] - 1).sum())
        if not allow_nonuniform:
            k = int(np.flatnonzero(off)[0])
            a, b = ordered[k], ordered[k + 1]
            what = (
                f"{int(multiples[k]) - 1} missing slice(s)"
                if gaps[k]
                else "non-uniform slice spacing"
            )
            raise DataError(
                b.path, "ImagePositionPatient", b.position,
                f"{what}: step {steps[k]:.4g} mm from {a.path.name} where the series' median "
                f"step is {step:.4g} mm (allow_nonuniform=True reads it anyway)",
            )  # fmt: skip
    return ordered, report


def _hu(pixels: np.ndarray, slopes: list[float], intercepts: list[float]) -> np.ndarray:
    integral = all(
        float(s).is_integer() and float(i).is_integer()
        for s, i in zip(slopes, intercepts, strict=True)
    )
    out = np.empty(pixels.shape, dtype=np.float64)
    for k, (s, i) in enumerate(zip(slopes, intercepts, strict=True)):
        out[k] = pixels[k].astype(np.float64) * s + i
    info = np.iinfo(np.int16)
    if integral and out.min() >= info.min and out.max() <= info.max:
        return out.astype(np.int16)
    return out.astype(np.float32)


def read_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    allow_nonuniform: bool = False,
    rel_tol: float = 0.01,
) -> Volume:
    """Read one DICOM series as a :class:`Volume` of HU (module docstring, steps 1-6).

    Args:
        folder: folder holding the slice files (not searched recursively).
        series_uid: the ``SeriesInstanceUID`` to read when the folder holds several.
        allow_nonuniform: read a series with gaps or uneven steps (median step used;
            ``meta`` reports the steps) instead of raising.
        rel_tol: relative deviation from the median step that counts as uneven.

    Returns:
        ``array (Z, Y, X)`` HU, and ``meta`` with ``series_uid``, ``files`` and
        ``instance_numbers`` (in array order), ``slice_steps``, ``nonuniform``,
        ``suspected_missing_slices``, ``ignored_files``.

    Raises:
        DataError: see the module docstring.
        MissingDependencyError: pydicom is not installed.
    """
    folder = Path(folder)
    slices, ignored = read_dicom_headers(folder)
    by_series = Counter(s.series_uid for s in slices)
    if series_uid is not None:
        if series_uid not in by_series:
            raise DataError(
                folder, "SeriesInstanceUID", series_uid,
                f"no such series in the folder; it holds {dict(by_series)}",
            )  # fmt: skip
        slices = [s for s in slices if s.series_uid == series_uid]
    elif len(by_series) > 1:
        raise DataError(
            folder, "SeriesInstanceUID", dict(by_series),
            f"the folder mixes {len(by_series)} series (uid: slice count); pass series_uid= to "
            "read one",
        )  # fmt: skip
    ordered, report = sort_slices(slices, rel_tol=rel_tol, allow_nonuniform=allow_nonuniform)
    pydicom = require("pydicom", "reading DICOM series")
    planes = []
    for s in ordered:
        ds = pydicom.dcmread(s.path)
        try:
            px = ds.pixel_array
        except Exception as exc:  # pixel handlers raise many types (missing codec, corrupt data)
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise DataError(
                s.path, "PixelData", str(syntax), f"pydicom cannot decode the pixels ({exc})"
            ) from exc
        if px.shape != (s.rows, s.columns):
            raise DataError(
                s.path, "PixelData", px.shape, f"expected ({s.rows}, {s.columns}) pixels"
            )
        planes.append(px)
    pixels = np.stack(planes)  # (Z, Y, X)
    hu = _hu(pixels, [s.slope for s in ordered], [s.intercept for s in ordered])
    first = ordered[0]
    o = np.asarray(first.orientation)
    direction = np.stack([o[:3], o[3:], first.normal], axis=1)  # columns: x, y, z axes
    step = report["step"] if len(ordered) > 1 else 1.0
    meta = {
        "format": "dicom",
        "series_uid": first.series_uid,
        "files": [str(s.path) for s in ordered],
        "instance_numbers": [s.instance_number for s in ordered],
        "ignored_files": [str(p) for p in ignored],
        **report,
    }
    if len(ordered) == 1:
        meta["note"] = "single slice: z spacing set to 1 mm"
    return Volume(
        array=hu,
        spacing=(first.pixel_spacing[1], first.pixel_spacing[0], step),
        origin=first.position,
        direction=direction,
        source=str(folder),
        meta=meta,
    )
