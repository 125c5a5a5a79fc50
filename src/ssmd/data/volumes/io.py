"""``read_volume(path)``: one entry point for the volume formats users hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssmd.data.volumes.dicom import read_dicom_series
from ssmd.data.volumes.metaimage import read_metaimage
from ssmd.data.volumes.nifti import read_nifti
from ssmd.data.volumes.volume import Volume
from ssmd.utils.errors import DataError

__all__ = ["VOLUME_SUFFIXES", "read_volume"]

VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")
"""File suffixes :func:`read_volume` reads (a folder is read as a DICOM series)."""


def read_volume(path: str | Path, **kw: Any) -> Volume:
    """Read a volume by its kind: ``.mhd`` / ``.mha`` (SimpleITK), ``.nii`` / ``.nii.gz``
    (nibabel), or a folder of DICOM slices (pydicom; ``**kw`` go to
    :func:`~ssmd.data.volumes.dicom.read_dicom_series`).

    Raises:
        DataError: a missing path, an unknown suffix, or whatever the reader finds wrong.
    """
    p = Path(path)
    if p.is_dir():
        return read_dicom_series(p, **kw)
    name = p.name.lower()
    if kw:
        raise TypeError(f"options {sorted(kw)} apply to DICOM folders only")
    if name.endswith((".mhd", ".mha")):
        return read_metaimage(p)
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(p)
    if not p.exists():
        raise DataError(p, "file", str(p), "does not exist")
    raise DataError(
        p,
        "suffix",
        p.name,
        f"not a volume file; known: {', '.join(VOLUME_SUFFIXES)} or a DICOM folder",
    )
