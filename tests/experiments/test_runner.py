"""Running cells: resuming without re-running finished cells, failing cells, workers (threads
and processes) that never run one cell twice, the classification task, shared stage 1."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ssmd import experiments as ex
from ssmd.experiments import runner

BASE = Path(__file__).resolve().parents[2] / "configs" / "synthetic_cpu.yaml"


def test_resume_does_not_rerun_finished_cells(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_experiment: Callable[..., Path],
    fake_train: Callable[..., Callable[..., dict[str, Any]]],
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1], seeds=[0, 1]))
    calls: list[str] = []
    monkeypatch.setattr(runner, "run_cell_training", fake_train(calls))
    first = ex.run_experiment(exp, log=lambda s: None, max_cells=3)
    assert first["ran"] == calls and len(calls) == 3
    second = ex.run_experiment(exp, log=lambda s: None)
    assert len(calls) == len(exp.cells()) == 6  # only the 3 unfinished cells ran
    assert set(second["ran"]).isdisjoint(first["ran"])
    third = ex.run_experiment(exp, log=lambda s: None)
    assert third["ran"] == [] and len(calls) == 6
    assert not list((exp.output_dir / "locks").glob("*.lock"))  # released
    rows = (exp.output_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("cell,label,method,ratio,seed,AP,AP50")
    assert (exp.output_dir / "table.md").is_file() and (exp.output_dir / "plot_ap.png").is_file()


def test_a_failing_cell_is_recorded_and_retried_later(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_experiment: Callable[..., Path],
    fake_train: Callable[..., Callable[..., dict[str, Any]]],
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1], seeds=[0]))

    def boom(config: dict[str, Any], resume: Any, log: Any) -> dict[str, Any]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "run_cell_training", boom)
    out = ex.run_experiment(exp, log=lambda s: None)
    assert len(out["failed"]) == 3 and out["ran"] == []
    assert "out of memory" in (exp.run_dir(exp.cells()[0]) / "error.txt").read_text()
    calls: list[str] = []
    monkeypatch.setattr(runner, "run_cell_training", fake_train(calls))
    assert len(ex.run_experiment(exp, log=lambda s: None)["ran"]) == 3


def test_two_workers_never_run_the_same_cell(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_experiment: Callable[..., Path],
    fake_train: Callable[..., Callable[..., dict[str, Any]]],
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    calls: list[str] = []
    monkeypatch.setattr(runner, "run_cell_training", fake_train(calls, sleep=0.05))
    workers = [
        threading.Thread(
            target=ex.run_experiment, args=(exp,), kwargs={"log": lambda s: None, "report": False}
        )
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(calls) == sorted(c.id for c in exp.cells())  # each cell exactly once


def test_classification_base_config_trains_with_the_classification_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_experiment: Callable[..., Path]
) -> None:
    cls_engine = pytest.importorskip("ssmd.tasks.classification")
    base = BASE.parent / "classification" / "synthetic_cpu.yaml"
    if not base.is_file():
        pytest.skip("no classification config")
    seen: list[tuple[str, Any]] = []

    def fake(config: dict[str, Any], resume: Any = False) -> dict[str, Any]:
        seen.append((config["task"], resume))
        return {"test": {"AUC": 0.8, "accuracy": 0.7}, "train_seconds": 1.0}

    monkeypatch.setattr(cls_engine, "run_classification_training", fake)
    path = write_experiment(
        tmp_path,
        base_config=str(base),
        ratios=[0.2],
        seeds=[0, 1],
        metrics=["AUC", "accuracy"],
        methods=[{"label": "Supervised", "name": "supervised"}],
    )
    exp = ex.load_experiment(path)
    assert ex.run_experiment(exp, log=lambda s: None)["ran"] == [
        "supervised__r0.2__s0",
        "supervised__r0.2__s1",
    ]
    assert seen == [("classification", False), ("classification", False)]
    summary = json.loads((exp.output_dir / "summary.json").read_text())
    assert summary["metrics"]["AUC"]["0.2"]["cells"]["Supervised"]["mean"] == pytest.approx(80.0)


WORKER = """
import sys, time
from pathlib import Path
from ssmd import experiments as ex
from ssmd.experiments import runner

def fake(config, resume, log):
    time.sleep(0.3)
    with open(sys.argv[2], "a") as fh:  # O_APPEND: whole short lines from both workers
        fh.write(Path(config["output_dir"]).name + "\\n")
    return {"test": {"AP": 0.5, "AP50": 0.6}, "train_seconds": 0.3}

runner.run_cell_training = fake
ex.run_experiment(ex.load_experiment(sys.argv[1]), log=lambda s: None, report=False)
"""


def test_two_worker_processes_share_the_grid(
    tmp_path: Path, write_experiment: Callable[..., Path]
) -> None:
    import subprocess
    import sys

    path = write_experiment(tmp_path, ratios=[0.1], seeds=[0, 1])
    ran = tmp_path / "ran.txt"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(ran)], env=env)
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    cells = ran.read_text().split()
    exp = ex.load_experiment(path)
    assert sorted(cells) == sorted(c.id for c in exp.cells())  # every cell once, none twice
    assert all((exp.run_dir(c) / "result.json").is_file() for c in exp.cells())


def _finished_run(run: Path, config: dict[str, Any]) -> None:
    """A fake finished run: its resolved config, a best checkpoint and test metrics."""
    from ssmd.config import dump_config

    run.mkdir(parents=True, exist_ok=True)
    dump_config(config, run / "config.yaml")
    (run / "best.pt").write_bytes(b"")
    (run / "test_metrics.json").write_text(json.dumps({"test": {"AP": 0.5}}))


def test_pseudo_label_cells_share_a_matching_stage1(
    tmp_path: Path, write_experiment: Callable[..., Path]
) -> None:
    from ssmd.tasks.pseudo_label import stage1_config

    path = write_experiment(
        tmp_path,
        methods=[
            {"label": "Supervised", "name": "supervised"},
            {"label": "PL", "name": "pseudo_label"},
            {"label": "PL 0.3", "name": "pseudo_label", "params": {"threshold": 0.3}},
            {"label": "PL big", "name": "pseudo_label", "overrides": ["model.fpn_channels=32"]},
        ],
    )
    exp = ex.load_experiment(path)
    by = {(c.method.label, c.ratio, c.seed): c for c in exp.cells()}
    pl, pl3, big = by[("PL", 0.1, 0)], by[("PL 0.3", 0.1, 0)], by[("PL big", 0.1, 0)]
    assert ex.shared_stage1(exp, pl3, exp.cell_config(pl3)) is None  # nothing finished yet
    # PL (0.9) finished its stage 1: PL 0.3 of the same ratio and seed reuses it
    _finished_run(exp.run_dir(pl) / "stage1", stage1_config(exp.cell_config(pl)))
    assert ex.shared_stage1(exp, pl3, exp.cell_config(pl3)) == exp.run_dir(pl) / "stage1"
    assert ex.cell_status(exp, pl3) == f"todo (stage 1: {pl.id}/stage1)"
    # ... but not at another seed or ratio, nor with another model (a training field differs)
    for other in (by[("PL 0.3", 0.1, 1)], by[("PL 0.3", 0.2, 0)], big):
        assert ex.shared_stage1(exp, other, exp.cell_config(other)) is None
    # the supervised row's run of the same split and seed is a stage 1 too
    sup = by[("Supervised", 0.2, 1)]
    _finished_run(exp.run_dir(sup), exp.cell_config(sup))
    pl_b = by[("PL", 0.2, 1)]
    assert ex.shared_stage1(exp, pl_b, exp.cell_config(pl_b)) == exp.run_dir(sup)
    # a cell that started its own stage 1 keeps it; other methods never share
    (exp.run_dir(pl_b) / "stage1").mkdir(parents=True)
    (exp.run_dir(pl_b) / "stage1" / "config.yaml").write_text("seed: 1\n")
    assert ex.shared_stage1(exp, pl_b, exp.cell_config(pl_b)) is None
    assert ex.shared_stage1(exp, sup, exp.cell_config(sup)) is None
