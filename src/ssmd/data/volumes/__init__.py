"""CT/MR volumes and CT slice stacks: readers, geometry, resampling, HU windows.

- :class:`Volume` / :class:`VolumeGeometry` -- array ``(Z, Y, X)`` (or ``(C, Z, Y, X)``),
  spacing, origin, direction; world (LPS mm) <-> voxel maps (:mod:`.volume`);
- readers: MetaImage ``.mhd`` (:mod:`.metaimage`, SimpleITK), DICOM series
  (:mod:`.dicom`, pydicom), NIfTI (:mod:`.nifti`, nibabel), :func:`read_volume`;
- LUNA16 annotations -> voxel boxes (:mod:`.luna16`);
- DeepLesion slices: ``DL_info.csv``, 16-bit PNG -> HU, neighbour-slice plans
  (:mod:`.deeplesion`);
- HU windows and per-set mean/std (:mod:`.intensity`).

SimpleITK, pydicom and nibabel are the ``medical`` extra (``pip install 'ssmd[medical]'``),
imported only when a reader needs them.
"""

from __future__ import annotations

from ssmd.data.volumes._deps import MissingDependencyError
from ssmd.data.volumes.dicom import DicomSlice, read_dicom_headers, read_dicom_series
from ssmd.data.volumes.intensity import (
    HU_WINDOWS,
    RunningMeanStd,
    Window,
    apply_window,
    resolve_window,
    standardize,
)
from ssmd.data.volumes.io import read_volume
from ssmd.data.volumes.luna16 import (
    LunaNodule,
    NoduleBox,
    nodule_box,
    read_luna16_annotations,
    voxel_box_to_world,
)
from ssmd.data.volumes.metaimage import (
    check_metaimage,
    read_metaimage,
    read_metaimage_geometry,
    write_metaimage,
)
from ssmd.data.volumes.nifti import read_nifti, write_nifti
from ssmd.data.volumes.volume import Volume, VolumeGeometry, resample, resample_isotropic

__all__ = [
    "HU_WINDOWS",
    "DicomSlice",
    "LunaNodule",
    "MissingDependencyError",
    "NoduleBox",
    "RunningMeanStd",
    "Volume",
    "VolumeGeometry",
    "Window",
    "apply_window",
    "check_metaimage",
    "nodule_box",
    "read_dicom_headers",
    "read_dicom_series",
    "read_luna16_annotations",
    "read_metaimage",
    "read_metaimage_geometry",
    "read_nifti",
    "read_volume",
    "resample",
    "resample_isotropic",
    "resolve_window",
    "standardize",
    "voxel_box_to_world",
    "write_metaimage",
    "write_nifti",
]
