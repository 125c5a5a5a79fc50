"""Consistency-weight ramp of SSMD Eq. (10) (continuous reading of the ramp-down)."""

from __future__ import annotations

import itertools
import math

import pytest

from ssmd.methods.schedules import consistency_weight, ssmd_ramp

N = 10_000


def test_endpoints() -> None:
    assert ssmd_ramp(0, N) == pytest.approx(math.exp(-5))
    assert ssmd_ramp(N // 4, N) == 1.0
    assert ssmd_ramp(N // 2, N) == 1.0
    assert ssmd_ramp(3 * N // 4, N) == 1.0
    assert ssmd_ramp(N, N) == pytest.approx(math.exp(-12.5))
    assert ssmd_ramp(2 * N, N) == pytest.approx(math.exp(-12.5))  # clamped past the end


def test_continuity_at_both_switches() -> None:
    assert ssmd_ramp(N // 4 - 1, N) == pytest.approx(1.0, abs=1e-5)
    assert ssmd_ramp(3 * N // 4 + 1, N) == pytest.approx(1.0, abs=1e-5)
    # the formula as printed, exp(-12.5 (1 - 7(N-j)/N)^2), would jump to 8.8e-4 here
    printed = math.exp(-12.5 * (1 - 7 * (N - 3 * N // 4) / N) ** 2)
    assert printed == pytest.approx(8.838e-4, rel=1e-3)


def test_monotone() -> None:
    up = [ssmd_ramp(j, N) for j in range(0, N // 4 + 1, 50)]
    down = [ssmd_ramp(j, N) for j in range(3 * N // 4, N + 1, 50)]
    assert all(a < b for a, b in itertools.pairwise(up))
    assert all(a > b for a, b in itertools.pairwise(down))


def test_multiplier_and_none() -> None:
    assert consistency_weight(N // 2, N, "eq10", 2.5) == 2.5
    assert consistency_weight(0, N, "eq10", 2.0) == pytest.approx(2.0 * math.exp(-5))
    assert consistency_weight(0, N, "none", 0.3) == 0.3
    with pytest.raises(ValueError, match="ramp"):
        consistency_weight(0, N, "sigmoid")
    with pytest.raises(ValueError, match="max_iters"):
        ssmd_ramp(0, 0)
    with pytest.raises(ValueError, match="step"):
        ssmd_ramp(-1, N)
