"""NIfTI-1/2 (``.nii``, ``.nii.gz``) read and written with nibabel, in ssmd's LPS convention.

NIfTI stores a voxel -> world affine in **RAS** mm (``+x`` towards the patient's Right,
``+y`` Anterior, ``+z`` Superior), indexed ``data[i, j, k]``. ssmd (like ITK,
DICOM and LUNA16) works in **LPS**, so on reading the affine is flipped:
``A_lps = diag(-1, -1, 1, 1) @ A_ras`` (nibabel's best affine: sform, else qform), then
``spacing_k = |A_lps[:3, k]|``, ``direction[:, k] = A_lps[:3, k] / spacing_k``,
``origin = A_lps[:3, 3]`` -- the geometry SimpleITK reports for the same file. The array
is transposed to ``(Z, Y, X)`` (``(C, Z, Y, X)`` for 4D files, the 4th axis as channels).
``scl_slope`` / ``scl_inter`` are applied (float32 result) unless they are 1 / 0, in
which case the stored dtype is kept.

A sheared affine (non-orthogonal direction) raises :class:`~ssmd.utils.errors.DataError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssmd.data.volumes._deps import require
from ssmd.data.volumes.volume import Volume
from ssmd.utils.errors import DataError

__all__ = ["read_nifti", "write_nifti"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI file as a :class:`Volume` in LPS (module docstring).

    Raises:
        DataError: missing or unreadable file, not 3D/4D, or a sheared affine.
        MissingDependencyError: nibabel is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file", str(path), "does not exist")
    nib = require("nibabel", "reading NIfTI files")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise DataError(path, "file", str(path), f"nibabel cannot read it ({exc})") from exc
    shape = img.shape
    if len(shape) not in (3, 4):
        raise DataError(path, "dim", tuple(shape), "expected a 3D or 4D image")
    slope, inter = img.dataobj.slope, img.dataobj.inter
    try:
        if (slope in (1, None) or np.isnan(slope)) and (inter in (0, None) or np.isnan(inter)):
            data = np.asarray(img.dataobj.get_unscaled())
        else:
            data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise DataError(path, "data", str(path), f"cannot read the voxels ({exc})") from exc
    affine = _RAS_TO_LPS @ np.asarray(img.affine, dtype=np.float64)
    m = affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if (spacing <= 0).any():
        raise DataError(path, "affine", affine.tolist(), "a zero-length voxel axis")
    direction = m / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError(path, "affine", affine.tolist(), "sheared (non-orthogonal) voxel axes")
    if data.ndim == 4:
        array = np.ascontiguousarray(data.transpose(3, 2, 1, 0))  # (C, Z, Y, X)
    else:
        array = np.ascontiguousarray(data.transpose(2, 1, 0))  # (Z, Y, X)
    return Volume(
        array=array,
        spacing=tuple(spacing.tolist()),
        origin=tuple(affine[:3, 3].tolist()),
        direction=direction,
        source=str(path),
        meta={"format": "nifti"},
    )


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI (RAS affine from its LPS geometry, sform and qform set).

    Raises:
        MissingDependencyError: nibabel is not installed.
    """
    nib = require("nibabel", "writing NIfTI files")
    a = volume.array
    data = a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.transpose(2, 1, 0)  # (X, Y, Z[, C])
    affine = np.eye(4)
    affine[:3, :3] = volume.index_to_world_matrix()
    affine[:3, 3] = volume.origin
    img = nib.Nifti1Image(np.ascontiguousarray(data), _RAS_TO_LPS @ affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path
