"""``data.format: synthetic_ct``: resampled, windowed volumes with boxes on the new grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssmd.data.datasets.luna16 import VolumeSample
from ssmd.data.datasets.synthetic_ct import SyntheticCTDataset
from ssmd.data.factory import build_dataset
from ssmd.data.volumes.synthetic_ct import SyntheticCTConfig

SMALL = SyntheticCTConfig(fov_mm=48.0, diameter_mm=(3.0, 15.0))


def test_samples_are_isotropic_windowed_volumes_with_6d_boxes(tmp_path: Path) -> None:
    ds = build_dataset("synthetic_ct", tmp_path, n_volumes=4, spacing=1.5, config=SMALL)
    assert isinstance(ds, SyntheticCTDataset) and len(ds) == 4
    for i in range(4):
        s = ds[i]
        assert isinstance(s, VolumeSample) and s.spatial_dims == 3
        assert s.spacing == (1.5, 1.5, 1.5)
        z, y, x = s.image.shape[1:]
        assert (x, y, z) == ds.geometry(i).size_xyz
        assert float(s.image.min()) >= 0.0 and float(s.image.max()) <= 1.0
        assert s.boxes.shape[1] == 6 and s.boxes.shape[0] == len(ds.nodules(i))
        assert torch.equal(ds.annotation(i)[0], s.boxes)
        for box, n in zip(s.boxes.tolist(), ds.nodules(i), strict=True):
            centre = (np.asarray(box[:3]) + np.asarray(box[3:])) / 2 - 0.5  # continuous index
            assert np.allclose(centre * 1.5, n.center_world, atol=1e-4)  # origin 0, 1.5 mm
            assert np.allclose(np.asarray(box[3:]) - box[:3], n.diameter_mm / 1.5, atol=1e-4) or (
                min(box[:3]) == 0.0 or max(np.asarray(box[3:]) - [x, y, z]) == 0.0
            )


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="n_volumes"):
        SyntheticCTDataset(n_volumes=0)
    with pytest.raises(ValueError, match="spacing"):
        SyntheticCTDataset(n_volumes=2, spacing=-1.0)
