"""Consistency-weight schedules of the SSL methods: SSMD's Eq. (10) ramp-up / ramp-down.

Eq. (10) as printed (``N`` iterations, ``j`` the 0-based iteration index)::

    lambda = exp(-5 (1 - 4j/N)^2)             0 <= j < N/4
             1                                N/4 <= j < 3N/4
             exp(-12.5 (1 - 7(N - j)/N)^2)    3N/4 <= j <= N

The printed ramp-down is discontinuous: at ``j = 3N/4`` it gives ``exp(-12.5 * 0.75^2)``
``= 8.8e-4`` right after ``lambda = 1``, and it rises again towards ``j = 6N/7``. The text
says the weight is decreased *gradually* to 0 over the last quarter, and the ramp-down it
comes from (Laine & Aila's ``exp(-12.5 t^2)``, used verbatim by CSD's reference code as
``exp(-12.5 (1 - (N - j) / L)^2)`` with ``L`` the ramp-down length) reads, for ``L = N/4``,
``exp(-12.5 (1 - 4(N - j)/N)^2)``: 1 at ``j = 3N/4``, ``exp(-12.5) = 3.7e-6`` at ``j = N``,
monotone in between. That continuous form is implemented; ``7`` is taken as a typo of ``4``.
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["RAMPS", "Ramp", "consistency_weight", "sigmoid_rampup", "ssmd_ramp"]

Ramp = Literal["eq10", "none"]
RAMPS: tuple[str, ...] = ("eq10", "none")


def ssmd_ramp(step: int, max_iters: int) -> float:
    """Eq. (10) (continuous reading, module docstring) at iteration ``step`` of ``max_iters``.

    Args:
        step: 0-based iteration ``j``; values beyond ``max_iters`` are treated as ``N``.
        max_iters: ``N`` >= 1.

    Returns:
        ``lambda / lambda_max`` in ``(0, 1]``: ``e^-5`` at ``j = 0``, 1 on ``[N/4, 3N/4]``,
        ``e^-12.5`` at ``j = N``.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    n = float(max_iters)
    j = min(float(step), n)
    if j < n / 4:
        return math.exp(-5.0 * (1.0 - 4.0 * j / n) ** 2)
    if j < 3 * n / 4:
        return 1.0
    return math.exp(-12.5 * (1.0 - 4.0 * (n - j) / n) ** 2)


def consistency_weight(
    step: int, max_iters: int, ramp: str = "eq10", max_weight: float = 1.0
) -> float:
    """``lambda`` of Algorithm 1 line 13: ``max_weight`` times the ramp at ``step``.

    Args:
        step: 0-based iteration.
        max_iters: total iterations ``N``.
        ramp: ``"eq10"`` (:func:`ssmd_ramp`) or ``"none"`` (constant 1).
        max_weight: ``lambda_max`` (the paper ramps to 1).
    """
    if ramp == "eq10":
        return max_weight * ssmd_ramp(step, max_iters)
    if ramp == "none":
        return float(max_weight)
    raise ValueError(f"consistency ramp must be one of {RAMPS}, got {ramp!r}")


def sigmoid_rampup(step: int, length: int) -> float:
    """Laine & Aila's ramp-up ``exp(-5 (1 - t)^2)``, ``t = min(step / length, 1)``.

    The first quarter of Eq. (10) stretched to ``length`` steps: ``e^-5`` at step 0, 1 from
    ``step >= length`` on; ``length = 0`` gives 1 throughout. Used for weights that are
    "gradually increased" (the MIL scale factor of :mod:`ssmd.methods.mil`).
    """
    if step < 0 or length < 0:
        raise ValueError(f"sigmoid_rampup needs step >= 0 and length >= 0, got {step}, {length}")
    if length == 0:
        return 1.0
    t = min(float(step) / float(length), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
