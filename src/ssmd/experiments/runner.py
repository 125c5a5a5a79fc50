"""Running an experiment's cells: one worker's loop over the grid.

Each cell is one training run (:func:`run_cell_training`) in ``<output_dir>/runs/<cell>/``.
A finished cell has ``result.json`` (written atomically) and is never re-run; an interrupted
one resumes from its ``last.pt``. A pseudo-labeling cell whose stage 1 (the supervised
detector) already exists as a finished run of the same ratio and seed with the same config —
another threshold's ``<run>/stage1``, or the supervised row's run — reuses it instead of
training it again (:func:`shared_stage1`). :func:`run_experiment` claims each unfinished cell
(:mod:`ssmd.experiments.claims`), runs it, and rewrites the report
(:mod:`ssmd.experiments.report`) after every cell. Each cell records its initialisation
(``init``: ``scratch`` or the ``model.pretrained_weights`` file, e.g. a backbone from
``ssmd pretrain``) in ``result.json``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmd.experiments.claims import claim, held, is_stale, lock_owner, write_atomic
from ssmd.experiments.report import write_report
from ssmd.experiments.spec import Cell, Experiment

__all__ = [
    "cell_status",
    "lock_path",
    "run_cell",
    "run_cell_training",
    "run_experiment",
    "shared_stage1",
]


def run_cell_training(
    config: dict[str, Any], resume: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train one cell's resolved ``config`` (resuming ``resume``, a ``last.pt``, if given).

    The one place that knows how a cell's task is trained; returns the run's summary, whose
    ``test`` (or top level) holds the test metrics that go into ``result.json``.
    """
    from ssmd.tasks import get_task  # the task registry (``config["task"]``)

    return get_task(config).train(config, resume=resume, log=log)


def lock_path(exp: Experiment, cell: Cell) -> Path:
    """``<output_dir>/locks/<cell>.lock``, the file whose creation claims ``cell``."""
    return exp.output_dir / "locks" / f"{cell.id}.lock"


def cell_status(exp: Experiment, cell: Cell, stale_after: float = 1800.0) -> str:
    """``done``, ``running (host:pid)``, ``stale lock`` or ``todo``.

    A pseudo-labeling cell that would reuse a finished stage 1 says so: ``todo (stage 1:
    <run>)``.
    """
    if (exp.run_dir(cell) / "result.json").is_file():
        return "done"
    lock = lock_path(exp, cell)
    if lock.exists():
        if is_stale(lock, stale_after):
            return "stale lock"
        owner = lock_owner(lock)
        return f"running ({owner.get('host', '?')}:{owner.get('pid', '?')})"
    if cell.method.name == "pseudo_label":
        shared = shared_stage1(exp, cell, exp.cell_config(cell))
        if shared is not None:
            return f"todo (stage 1: {shared.relative_to(exp.run_dir(cell).parent)})"
    return "todo"


def shared_stage1(exp: Experiment, cell: Cell, config: dict[str, Any]) -> Path | None:
    """A finished run of the same ratio and seed that can be this pseudo-labeling cell's stage 1.

    Pseudo-labeling rows that differ only in stage-2 settings (the threshold) have the same
    stage 1, and so does the supervised row of their split and seed: the first finished one
    whose config matches (:func:`ssmd.tasks.pseudo_label.stage1_mismatch`) — another row's
    ``<run>/stage1`` or a supervised ``<run>`` — is reused instead of trained again. ``None``
    for other methods, a cell whose own stage 1 already started, or when nothing matches.
    """
    if cell.method.name != "pseudo_label" or config["method"].get("stage1_dir"):
        return None
    own = exp.run_dir(cell) / "stage1"
    if (own / "config.yaml").is_file():  # started (or finished) its own: keep it
        return None
    from ssmd.tasks.pseudo_label import stage1_mismatch

    runs = exp.run_dir(cell).parent
    for other in sorted(runs.glob(f"*__r{cell.ratio:g}__s{cell.seed}")):
        if other == exp.run_dir(cell):
            continue
        for candidate in (other / "stage1", other):
            if stage1_mismatch(config, candidate) is None:
                return candidate
    return None


def run_cell(exp: Experiment, cell: Cell, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one cell (resuming its ``last.pt``) and write its ``result.json``.

    A pseudo-labeling cell reuses a matching finished stage 1 (:func:`shared_stage1`).
    """
    run_dir = exp.run_dir(cell)
    config = exp.cell_config(cell)
    shared = shared_stage1(exp, cell, config)
    if shared is not None:
        config["method"]["stage1_dir"] = str(shared)
        log(f"experiment: {cell.id} reuses the finished stage 1 {shared}")
    last = run_dir / "last.pt"
    start = time.time()
    summary = run_cell_training(config, last if last.is_file() else None, log)
    test = summary.get("test", summary)
    result = {
        "cell": cell.id,
        "label": cell.method.label,
        "method": cell.method.name,
        "params": cell.method.params,
        "ratio": cell.ratio,
        "seed": cell.seed,
        "init": str(config.get("model", {}).get("pretrained_weights") or "scratch"),
        "test": {k: v for k, v in test.items() if isinstance(v, int | float)},
        "train_seconds": summary.get("train_seconds_total", summary.get("train_seconds")),
        "wall_seconds": round(time.time() - start, 1),
        "run_dir": str(run_dir),
        "host": socket.gethostname(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "result.json", json.dumps(result, indent=2))
    return result


def run_experiment(
    exp: Experiment,
    log: Callable[[str], None] = print,
    max_cells: int | None = None,
    stale_after: float = 1800.0,
    report: bool = True,
) -> dict[str, Any]:
    """Run every unfinished, unclaimed cell (module docstring); returns ``{"ran", "failed", ...}``.

    A failing cell is logged (``<run>/error.txt``), released and left for a later call; the
    other cells go on.
    """
    ran: list[str] = []
    failed: list[str] = []
    skipped: list[str] = []
    for cell in exp.cells():
        if max_cells is not None and len(ran) + len(failed) >= max_cells:
            break
        if (exp.run_dir(cell) / "result.json").is_file():
            continue
        lock = lock_path(exp, cell)
        if not claim(lock, stale_after):
            skipped.append(cell.id)
            log(f"experiment: {cell.id} is claimed by another worker; skipping")
            continue
        with held(lock):
            if (exp.run_dir(cell) / "result.json").is_file():  # finished while we looked
                continue
            log(f"experiment: running {cell.id}")
            try:
                run_cell(exp, cell, log)
                ran.append(cell.id)
            except Exception as exc:  # one bad cell must not stop the grid
                failed.append(cell.id)
                exp.run_dir(cell).mkdir(parents=True, exist_ok=True)
                (exp.run_dir(cell) / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
                log(f"experiment: {cell.id} failed: {type(exc).__name__}: {exc}")
        if report:
            write_report(exp)
    if report:
        write_report(exp)
    return {"ran": ran, "failed": failed, "claimed_elsewhere": skipped}
