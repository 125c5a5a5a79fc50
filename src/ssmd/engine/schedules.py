"""Learning-rate schedules as multiplicative factors of the base rate (for ``LambdaLR``)."""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(
    step: int,
    *,
    max_iters: int,
    schedule: str,
    warmup_iters: int = 0,
    step_at: float = 0.75,
    gamma: float = 0.1,
) -> float:
    """Factor of the base learning rate at ``step`` (0-based).

    * ``step``: ``1`` until ``step_at * max_iters``, then ``gamma`` — the SSMD paper's
      "divided by 10 at the 75th of 100 epochs" (Sec. 4.2).
    * ``cosine``: half-cosine from 1 to 0 over ``max_iters``.
    * ``constant``: 1.

    A linear warm-up from ``1 / warmup_iters`` to 1 over the first ``warmup_iters``
    steps multiplies any of them.
    """
    if schedule == "step":
        factor = gamma if step >= int(step_at * max_iters) else 1.0
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, max_iters) / max(1, max_iters)))
    elif schedule == "constant":
        factor = 1.0
    else:
        raise ValueError(f"train.schedule = {schedule!r}: expected one of step, cosine, constant")
    if warmup_iters > 0 and step < warmup_iters:
        factor *= (step + 1) / warmup_iters
    return factor
