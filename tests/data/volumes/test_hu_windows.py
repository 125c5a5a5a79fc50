"""HU windows and the running mean/std, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ssmd.data.volumes import HU_WINDOWS, RunningMeanStd, Window, apply_window, standardize


def test_presets_by_hand() -> None:
    hu = np.array([-2000, -1024, 0, 1100, 3071, 5000], dtype=np.int32)
    lp = apply_window(hu, "lp")  # -1024..3071 -> [0, 1]
    np.testing.assert_allclose(lp, [0, 0, 1024 / 4095, 2124 / 4095, 1, 1], rtol=1e-6)
    ssmd = apply_window(hu, "ssmd")  # clip [-1100, 1100] -> [-1, 1]
    np.testing.assert_allclose(ssmd, [-1, -1024 / 1100, 0, 1, 1, 1], rtol=1e-6)
    assert apply_window(hu, (0, 100)).tolist() == [0, 0, 0, 1, 1, 1]
    assert apply_window(hu, "ssmd").dtype == np.float32
    assert HU_WINDOWS["luna16"] == Window(-1024.0, 300.0, 0.0, 1.0)


def test_bad_windows() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        apply_window(np.zeros(2), "bone")
    with pytest.raises(ValueError, match="lo < hi"):
        Window(10.0, 10.0)
    with pytest.raises(ValueError, match="std > 0"):
        standardize(np.zeros(2), 0.0, 0.0)


def test_running_mean_std_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(1000.0, 3.0, size=n) for n in (5, 1, 50, 7)]
    acc = RunningMeanStd()
    for p in parts:
        acc.update(p)
    acc.update(np.zeros(0))
    allv = np.concatenate(parts)
    assert acc.count == allv.size
    assert acc.mean == pytest.approx(allv.mean(), rel=1e-12)
    assert acc.std == pytest.approx(allv.std(), rel=1e-9)
    np.testing.assert_allclose(standardize(allv, acc.mean, acc.std).std(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="no values"):
        _ = RunningMeanStd().mean
