"""Hounsfield-unit windowing and normalisation for CT (slices and volumes).

A window clips HU to ``[lo, hi]`` and maps that range linearly onto ``[out_lo, out_hi]``:
``out = out_lo + (clip(hu, lo, hi) - lo) * (out_hi - out_lo) / (hi - lo)``.

Presets (:data:`HU_WINDOWS`):

- ``"lp"`` -- the single window of the label-propagation paper (Sec. 4.1 of "CT slice
  label propagation and missing ground-truth mining"), ``-1024..3071`` HU (the 12-bit CT
  range, covering lung, soft tissue and bone). The paper rescales it to ``[0, 255]``;
  ssmd maps it to ``[0, 1]``, the range every ssmd image has before normalisation (the
  factor 255 is absorbed by the per-set mean/std or the model's input normalisation).
- ``"ssmd"`` -- the SSMD paper's DeepLesion preprocessing (Sec. 4.1 of the SSMD paper):
  clip to ``[-1100, 1100]`` HU and normalise to ``[-1, 1]``.
- ``"luna16"`` -- ``-1024..300`` HU to ``[0, 1]``, MONAI's LUNA16 detection tutorial
  (``ScaleIntensityRanged(a_min=-1024, a_max=300, b_min=0, b_max=1, clip=True)``).

The SSMD paper further normalises by the mean and standard deviation of the whole
training set: :func:`standardize` with statistics from :class:`RunningMeanStd`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HU_WINDOWS",
    "RunningMeanStd",
    "Window",
    "apply_window",
    "resolve_window",
    "standardize",
]


@dataclass(frozen=True)
class Window:
    """An HU window ``[lo, hi]`` mapped onto ``[out_lo, out_hi]``."""

    lo: float
    hi: float
    out_lo: float = 0.0
    out_hi: float = 1.0

    def __post_init__(self) -> None:
        vals = (self.lo, self.hi, self.out_lo, self.out_hi)
        if not all(math.isfinite(v) for v in vals) or self.hi <= self.lo:
            raise ValueError(f"HU window {vals}: need finite lo < hi")


HU_WINDOWS: dict[str, Window] = {
    "lp": Window(-1024.0, 3071.0, 0.0, 1.0),
    "ssmd": Window(-1100.0, 1100.0, -1.0, 1.0),
    "luna16": Window(-1024.0, 300.0, 0.0, 1.0),
}
"""Named windows (see the module docstring)."""


def resolve_window(window: str | Window | tuple[float, float]) -> Window:
    """A :class:`Window` from a preset name, a ``Window``, or ``(lo, hi)`` (mapped to ``[0, 1]``).

    Raises:
        ValueError: an unknown preset name (the message lists the known ones).
    """
    if isinstance(window, Window):
        return window
    if isinstance(window, str):
        if window not in HU_WINDOWS:
            raise ValueError(
                f"window = {window!r}: unknown preset; known: {', '.join(sorted(HU_WINDOWS))}"
            )
        return HU_WINDOWS[window]
    lo, hi = window
    return Window(float(lo), float(hi))


def apply_window(hu: np.ndarray, window: str | Window | tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and map it linearly to its output range; float32."""
    w = resolve_window(window)
    scale = (w.out_hi - w.out_lo) / (w.hi - w.lo)
    out = (np.clip(hu.astype(np.float32), w.lo, w.hi) - np.float32(w.lo)) * np.float32(scale)
    return out + np.float32(w.out_lo)


def standardize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x - mean) / std`` in float32 (the SSMD paper's training-set normalisation)."""
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise ValueError(f"mean, std = {mean}, {std}: need finite values and std > 0")
    return (x.astype(np.float32) - np.float32(mean)) / np.float32(std)


class RunningMeanStd:
    """Mean and standard deviation of many arrays, accumulated in float64.

    ``update`` adds every element of an array; ``mean`` / ``std`` are those of all
    elements seen (population std, ``ddof=0``), the per-set statistics the SSMD paper
    normalises with. Batches are merged with Chan et al.'s pairwise update, so the
    result does not suffer the cancellation of ``E[x^2] - E[x]^2``.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the mean

    def update(self, x: np.ndarray) -> None:
        """Add the elements of ``x``."""
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        n_b = int(a.size)
        if n_b == 0:
            return
        mean_b = float(a.mean())
        m2_b = float(np.square(a - mean_b).sum())
        n = self.count + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n

    @property
    def mean(self) -> float:
        """Mean of every element seen (raises if none)."""
        if self.count == 0:
            raise ValueError("RunningMeanStd: no values seen")
        return self._mean

    @property
    def std(self) -> float:
        """Population standard deviation of every element seen."""
        if self.count == 0:
            raise ValueError("RunningMeanStd: no values seen")
        return math.sqrt(self._m2 / self.count)
