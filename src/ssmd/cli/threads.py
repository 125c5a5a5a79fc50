"""CPU thread settings of the ``ssmd`` command that degrade gracefully on a shared machine.

Two things made a 2-thread training ~25x slower when one other busy process shared the
2 cores (issue 23): OpenMP's default wait policy, whose idle threads spin and steal the core
the other process needs, and more intra-op threads than free cores, so every parallel region
waits for the thread that is descheduled. The command therefore, before torch is imported:

- sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it (idle OpenMP threads sleep);
- picks the number of intra-op threads: ``--threads N`` if given, else ``SSMD_NUM_THREADS``,
  else ``OMP_NUM_THREADS``, else ``auto`` — the usable cores minus the cores other processes
  keep busy, read from the 1-minute load average, at least 1.

The choice is made once at start; ``docs/benchmarks.md`` ("CPU threads of the ssmd command")
has the measurements behind it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

__all__ = [
    "ThreadChoice",
    "apply_torch_threads",
    "choose_threads",
    "configure_cpu_threads",
    "usable_cores",
]


@dataclass(frozen=True)
class ThreadChoice:
    """How many intra-op threads the run uses and why (printed at start)."""

    threads: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(
    requested: str | int | None,
    env: MutableMapping[str, str],
    cores: int,
    load: float,
) -> ThreadChoice:
    """The intra-op thread count for ``requested`` (``None``/``"auto"`` or a number).

    Args:
        requested: the ``--threads`` value (``None`` when not given).
        env: the environment (``SSMD_NUM_THREADS`` / ``OMP_NUM_THREADS`` are read).
        cores: usable cores.
        load: the 1-minute load average *before* this process started working.

    Raises:
        ValueError: a thread count that is not a positive integer, naming where it came from.
    """
    for source, value in (
        ("--threads", requested),
        ("SSMD_NUM_THREADS", env.get("SSMD_NUM_THREADS")),
        ("OMP_NUM_THREADS", env.get("OMP_NUM_THREADS")),
    ):
        if value is None or str(value).strip().lower() in ("", "auto"):
            if source == "--threads" and value is not None:
                break  # an explicit "auto" wins over the environment
            continue
        try:
            n = int(str(value))
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{source} = {value!r}: expected a positive integer or 'auto'")
        return ThreadChoice(n, f"{source}={n}")
    busy = int(load + 0.5)  # cores other processes keep busy
    n = max(1, cores - busy)
    return ThreadChoice(
        n, f"auto: {cores} usable core(s), load {load:.2f} from other processes -> {n}"
    )


def configure_cpu_threads(
    requested: str | int | None = None, env: MutableMapping[str, str] | None = None
) -> ThreadChoice:
    """Set the OpenMP wait policy and thread count in ``env`` before torch is imported.

    Call it before the first ``import torch`` of the process (environment variables are read
    when the OpenMP runtime loads); :func:`apply_torch_threads` then sets torch's count.
    """
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    choice = choose_threads(requested, env, usable_cores(), load)
    env["OMP_NUM_THREADS"] = str(choice.threads)
    return choice


def apply_torch_threads(choice: ThreadChoice) -> None:
    """``torch.set_num_threads`` for the chosen count (imports torch)."""
    import torch

    torch.set_num_threads(choice.threads)
