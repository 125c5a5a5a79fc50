"""Summary statistics and significance tests for comparing methods over seeds/folds.

Thin wrappers over ``scipy.stats``: the p-values are scipy's, unchanged (two-sided).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["Test", "compare", "mean_ci", "mean_std"]

Test = Literal["paired_t", "welch", "wilcoxon"]


def _values(xs: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(xs, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values: {a.tolist()}")
    return a


def mean_std(xs: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and *sample* standard deviation (``ddof=1``) of ``xs``.

    A single value has std 0 (not NaN, which ``ddof=1`` would give), so that a
    one-seed run prints as ``x ± 0`` rather than poisoning a table.

    Raises:
        ValueError: ``xs`` empty or not finite.
    """
    a = _values(xs, "xs")
    std = float(np.std(a, ddof=1)) if a.size > 1 else 0.0
    return float(np.mean(a)), std


def mean_ci(
    xs: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)`` of ``xs``.

    Uses ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sem)``. A single
    value gives ``(x, x, x)``.
    """
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    a = _values(xs, "xs")
    m = float(np.mean(a))
    if a.size == 1:
        return m, m, m
    sem = float(stats.sem(a))
    if sem == 0.0:
        return m, m, m
    low, high = stats.t.interval(confidence, a.size - 1, loc=m, scale=sem)
    return m, float(low), float(high)


def compare(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, test: Test = "paired_t"
) -> dict[str, float | str]:
    """Compare two methods' scores: means, stds, ``diff = mean_a - mean_b`` and a p-value.

    Args:
        a: scores of method A (e.g. AP per seed).
        b: scores of method B; for the paired tests, ``b[i]`` pairs with ``a[i]``
            (same seed/fold/split).
        test: ``"paired_t"`` (``scipy.stats.ttest_rel``), ``"welch"``
            (``scipy.stats.ttest_ind(equal_var=False)``) or ``"wilcoxon"``
            (``scipy.stats.wilcoxon(a, b)``, signed-rank on the paired differences).

    Returns:
        ``{"mean_a", "std_a", "mean_b", "std_b", "diff", "p_value", "test"}``; stds are
        sample stds (see :func:`mean_std`). ``p_value`` is whatever scipy returns,
        including NaN where the test is undefined (e.g. identical paired samples).

    Raises:
        ValueError: empty or non-finite input, unequal lengths for a paired test, or
            fewer than 2 values where the test needs them.
    """
    xa, xb = _values(a, "a"), _values(b, "b")
    if test in ("paired_t", "wilcoxon") and xa.size != xb.size:
        raise ValueError(f"{test} pairs a[i] with b[i]: got {xa.size} and {xb.size} values")
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"{test} needs at least 2 values per group, got {xa.size} and {xb.size}")
    if test == "paired_t":
        p = stats.ttest_rel(xa, xb).pvalue
    elif test == "welch":
        p = stats.ttest_ind(xa, xb, equal_var=False).pvalue
    elif test == "wilcoxon":
        p = stats.wilcoxon(xa, xb).pvalue
    else:
        raise ValueError(f"unknown test {test!r}; expected 'paired_t', 'welch' or 'wilcoxon'")
    mean_a, std_a = mean_std(xa)
    mean_b, std_b = mean_std(xb)
    return {
        "mean_a": mean_a,
        "std_a": std_a,
        "mean_b": mean_b,
        "std_b": std_b,
        "diff": mean_a - mean_b,
        "p_value": float(p),
        "test": test,
    }
