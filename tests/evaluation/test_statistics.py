"""compare / mean_std / mean_ci against scipy and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ssmd.evaluation import compare, mean_ci, mean_std

A = [0.412, 0.398, 0.431, 0.405, 0.420, 0.417]
B = [0.395, 0.391, 0.418, 0.401, 0.402, 0.409]


def test_mean_std_sample_std() -> None:
    # [1, 2, 3, 4]: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # sample variance 5 / 3 -> std sqrt(5/3) (population std would be sqrt(5/4)).
    m, s = mean_std([1, 2, 3, 4])
    assert m == 2.5
    assert s == pytest.approx(math.sqrt(5 / 3), abs=1e-15)


def test_mean_std_single_value_has_zero_std() -> None:
    assert mean_std([0.7]) == (0.7, 0.0)


def test_mean_std_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="empty"):
        mean_std([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_std([1.0, float("nan")])


@pytest.mark.parametrize(
    ("test", "reference"),
    [
        ("paired_t", lambda a, b: stats.ttest_rel(a, b).pvalue),
        ("welch", lambda a, b: stats.ttest_ind(a, b, equal_var=False).pvalue),
        ("wilcoxon", lambda a, b: stats.wilcoxon(a, b).pvalue),
    ],
)
def test_compare_p_values_equal_scipy(test: str, reference: object) -> None:
    out = compare(A, B, test=test)  # type: ignore[arg-type]
    assert out["p_value"] == reference(A, B)  # type: ignore[operator]
    assert out["test"] == test
    assert out["mean_a"] == pytest.approx(np.mean(A))
    assert out["std_b"] == pytest.approx(np.std(B, ddof=1))
    assert out["diff"] == pytest.approx(np.mean(A) - np.mean(B))


def test_compare_known_p_values() -> None:
    # Hand check of the paired t-test: differences d = [1, 2, 3]; mean 2, sample std 1,
    # t = 2 / (1 / sqrt(3)) = 2 sqrt(3) with 2 dof -> two-sided p = 2 * t.sf(3.4641, 2).
    out = compare([2, 4, 6], [1, 2, 3], test="paired_t")
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2), rel=1e-12)
    assert out["p_value"] == pytest.approx(0.07417990022744858, rel=1e-9)
    # Exact Wilcoxon: 6 pairs, all differences positive -> W- = 0, p = 2 / 2^6 = 1/32.
    w = compare([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1.5], test="wilcoxon")
    assert w["p_value"] == pytest.approx(1 / 32, rel=1e-12)


def test_compare_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pairs"):
        compare([1, 2, 3], [1, 2], test="paired_t")
    with pytest.raises(ValueError, match="at least 2"):
        compare([1], [2], test="welch")
    with pytest.raises(ValueError, match="unknown test"):
        compare([1, 2], [2, 3], test="mann_whitney")  # type: ignore[arg-type]
    # Welch does not pair: unequal lengths are fine.
    assert 0.0 <= float(compare([1, 2, 3], [1, 2.5], test="welch")["p_value"]) <= 1.0


def test_mean_ci() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    m, lo, hi = mean_ci(xs)
    half = stats.t.ppf(0.975, 3) * math.sqrt(5 / 3) / 2  # t_{.975,3} * s / sqrt(n)
    assert m == 2.5
    assert lo == pytest.approx(2.5 - half, rel=1e-12)
    assert hi == pytest.approx(2.5 + half, rel=1e-12)
    assert mean_ci([0.3]) == (0.3, 0.3, 0.3)
