"""The real DSB 2018 stage1_train folder: exact image and nucleus counts, boxes = mask extents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data import DSB2018Dataset, dataset_stats


@pytest.mark.realdata
@pytest.mark.slow
def test_stage1_train_counts_and_mask_extents(dsb_root: Path) -> None:
    ds = DSB2018Dataset(dsb_root, preload=True)
    assert len(ds) == 664
    assert ds.num_unannotated == 0 and ds.ignored_entries == []
    stats = dataset_stats(ds)
    assert stats["images"] == 664
    assert stats["objects"] == 28986
    # independent check on a sample of images: numpy extent of every mask file
    rng = np.random.default_rng(0)
    for i in sorted(rng.choice(len(ds), size=12, replace=False).tolist()):
        boxes, labels = ds.annotation(i)
        paths = ds.mask_paths(i)
        assert boxes.shape == (len(paths), 4) and bool((labels == 1).all())
        for box, p in zip(boxes.tolist(), paths, strict=True):
            m = np.asarray(Image.open(p)) > 0
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert box == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], p
    s = ds[0]
    assert s.image.shape[0] == 3 and float(s.image.max()) <= 1.0
