"""Experiment runner: validation, the grid, resuming without re-running finished cells,
atomic claiming (two workers never run one cell; stale locks are taken over), and the
table's statistics (p-values equal scipy's on known vectors)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from ssmd.config import ConfigError
from ssmd.engine import experiment as ex

BASE = Path(__file__).resolve().parents[2] / "configs" / "synthetic_cpu.yaml"


def _write(tmp_path: Path, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "name": "unit",
        "base_config": str(BASE),
        "output_dir": str(tmp_path / "exp"),
        "ratios": [0.1, 0.2],
        "seeds": [0, 1, 2],
        "metrics": ["AP", "AP50"],
        "methods": [
            {"label": "Supervised", "name": "supervised"},
            {"label": "SSMD w/o ACC", "name": "ssmd", "params": {"acc": False}},
            {"label": "Fully-supervised", "name": "supervised", "ratios": [1.0], "reference": True},
        ],
    }
    doc.update(changes)
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def _fake_train(calls: list[str], ap: dict[str, float] | None = None, sleep: float = 0.0):
    def train(config: dict[str, Any], resume: Any, log: Any) -> dict[str, Any]:
        cell = Path(config["output_dir"]).name
        calls.append(cell)
        time.sleep(sleep)
        value = (ap or {}).get(cell, 0.5)
        return {"test": {"AP": value, "AP50": value + 0.1}, "train_seconds": 1.0}

    return train


def test_grid_and_cell_configs(tmp_path: Path) -> None:
    exp = ex.load_experiment(_write(tmp_path))
    cells = exp.cells()
    assert len(cells) == 3 * (2 * 2 + 1)
    assert cells[0].id == "supervised__r0.1__s0" and cells[1].id == "ssmd-w-o-acc__r0.1__s0"
    assert {c.id for c in cells if c.method.reference} == {
        f"fully-supervised__r1__s{s}" for s in (0, 1, 2)
    }
    cfg = exp.cell_config(cells[1])
    assert cfg["method"] == {"name": "ssmd", "acc": False}
    assert cfg["split"]["labeled_ratio"] == 0.1 and cfg["seed"] == 0
    assert cfg["output_dir"] == str(tmp_path / "exp" / "runs" / "ssmd-w-o-acc__r0.1__s0")


def test_restrict_keeps_reference_rows_and_rejects_unknown_values(tmp_path: Path) -> None:
    exp = ex.load_experiment(_write(tmp_path))
    sub = exp.restrict(ratios=[0.2], seeds=[1, 2])
    ids = [c.id for c in sub.cells()]
    assert ids[0] == "supervised__r0.2__s1"
    assert len(ids) == 2 * (2 + 1)  # two rows at 20% + fully supervised, seeds 1 and 2
    assert "fully-supervised__r1__s1" in ids and not any("__s0" in i or "r0.1" in i for i in ids)
    assert exp.cells()[0].id == "supervised__r0.1__s0"  # the original is unchanged
    with pytest.raises(ConfigError, match=r"ratio 0\.3"):
        exp.restrict(ratios=[0.3])
    with pytest.raises(ConfigError, match="seed 7"):
        exp.restrict(seeds=[7])
    only = exp.restrict(rows=["ssmd-w-o-acc", "fully-SUPERVISED"], seeds=[0])
    assert [c.id for c in only.cells()] == [
        "ssmd-w-o-acc__r0.1__s0",
        "ssmd-w-o-acc__r0.2__s0",
        "fully-supervised__r1__s0",
    ]
    assert only.run_dir(only.cells()[0]) == exp.run_dir(exp.cells()[1])  # the grid's folder
    with pytest.raises(ConfigError, match="row 'CSD'"):
        exp.restrict(rows=["CSD"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ratio": [0.1]}, "unknown key"),
        ({"ratios": [0.0]}, r"ratios = 0\.0"),
        ({"seeds": [0, 0]}, "repeat"),
        ({"test": "t"}, "test = 't'"),
        ({"methods": [{"name": "mean_teacher"}]}, r"methods\[0\]\.name = 'mean_teacher'"),
        ({"methods": [{"name": "csd", "param": {}}]}, r"methods\[0\]\.param"),
        ({"overrides": ["train.max_iter=3"]}, "train.max_iter"),
        ({"base_config": "nowhere.yaml"}, "base_config"),
    ],
)
def test_bad_experiment_files_name_the_field(
    tmp_path: Path, change: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ex.load_experiment(_write(tmp_path, **change))
    assert "exp.yaml" in str(info.value)


def test_resume_does_not_rerun_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = ex.load_experiment(_write(tmp_path, ratios=[0.1], seeds=[0, 1]))
    calls: list[str] = []
    monkeypatch.setattr(ex, "_train", _fake_train(calls))
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = ex.load_experiment(_write(tmp_path, ratios=[0.1], seeds=[0]))

    def boom(config: dict[str, Any], resume: Any, log: Any) -> dict[str, Any]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ex, "_train", boom)
    out = ex.run_experiment(exp, log=lambda s: None)
    assert len(out["failed"]) == 3 and out["ran"] == []
    assert "out of memory" in (exp.run_dir(exp.cells()[0]) / "error.txt").read_text()
    calls: list[str] = []
    monkeypatch.setattr(ex, "_train", _fake_train(calls))
    assert len(ex.run_experiment(exp, log=lambda s: None)["ran"]) == 3


def test_two_workers_never_run_the_same_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = ex.load_experiment(_write(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    calls: list[str] = []
    monkeypatch.setattr(ex, "_train", _fake_train(calls, sleep=0.05))
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


def test_claim_is_exclusive_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "cell.lock"
    assert ex.claim(lock) and not ex.claim(lock)  # held by a live process (this one)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 12345}))
    assert ex.is_stale(lock, 1e9)  # same host, process gone
    assert ex.claim(lock) and json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not ex.claim(lock, stale_after=3600)  # another host, recently refreshed
    old = time.time() - 7200
    os.utime(lock, (old, old))
    assert ex.claim(lock, stale_after=3600)  # silent for 2 h: taken over


def _results(exp: ex.Experiment, values: dict[str, list[float]], ratio: float = 0.1) -> None:
    for label, vals in values.items():
        spec = next(m for m in exp.methods if m.label == label)
        for seed, v in zip(exp.seeds, vals, strict=True):
            cell = ex.Cell(spec, ratio, seed)
            d = exp.run_dir(cell)
            d.mkdir(parents=True)
            (d / "result.json").write_text(
                json.dumps(
                    {
                        "cell": cell.id,
                        "label": label,
                        "method": spec.name,
                        "ratio": ratio,
                        "seed": seed,
                        "test": {"AP": v, "AP50": v},
                    }
                )
            )


@pytest.mark.parametrize("test", ["paired_t", "wilcoxon"])
def test_table_statistics_equal_scipy(tmp_path: Path, test: str) -> None:
    exp = ex.load_experiment(
        _write(tmp_path, ratios=[0.1], seeds=[0, 1, 2, 3, 4, 5], test=test, percent=False)
    )
    sup = [0.40, 0.42, 0.39, 0.41, 0.43, 0.40]
    ssmd = [0.52, 0.50, 0.55, 0.49, 0.51, 0.56]
    full = [0.76, 0.77, 0.75, 0.78, 0.76, 0.77]
    _results(exp, {"Supervised": sup, "SSMD w/o ACC": ssmd})
    _results(exp, {"Fully-supervised": full}, ratio=1.0)
    summary = ex.write_report(exp)
    entry = summary["metrics"]["AP"]["0.1"]
    assert (
        entry["best"] == "SSMD w/o ACC" and entry["second"] == "Supervised"
    )  # reference not ranked
    ref = stats.ttest_rel(ssmd, sup) if test == "paired_t" else stats.wilcoxon(ssmd, sup)
    assert entry["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert entry["gain"] == pytest.approx(sum(ssmd) / 6 - sum(sup) / 6)
    table = (exp.output_dir / "table.md").read_text()
    assert f"**{sum(ssmd) / 6:.3f} ±" in table and f"+{entry['gain']:.3f}" in table
    assert f"{float(ref.pvalue):.4f}" in table
    assert ("paired t-test" if test == "paired_t" else "Wilcoxon") in table
    assert "Fully-supervised" in table and f"{sum(full) / 6:.3f}" in table
    assert "| 10% |" in table


def test_percent_scaling_and_missing_cells(tmp_path: Path) -> None:
    exp = ex.load_experiment(_write(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    _results(exp, {"Supervised": [0.4, 0.5]})
    summary = ex.write_report(exp)
    cell = summary["metrics"]["AP"]["0.1"]["cells"]["Supervised"]
    assert cell["mean"] == pytest.approx(45.0) and cell["n"] == 2
    table = (exp.output_dir / "table.md").read_text()
    assert "45.0 ± 7.1" in table and "—" in table and "Finished cells: 2/10" in table


def test_single_seed_cell_shows_no_spread(tmp_path: Path) -> None:
    exp = ex.load_experiment(_write(tmp_path, ratios=[0.1], seeds=[0, 1]))
    _results(exp, {"Supervised": [0.4, 0.5], "SSMD w/o ACC": [0.3, 0.6]})
    spec = next(m for m in exp.methods if m.label == "SSMD w/o ACC")
    shutil.rmtree(exp.run_dir(ex.Cell(spec, 0.1, 1)))
    ex.write_report(exp)
    table = (exp.output_dir / "table.md").read_text()
    assert "| SSMD w/o ACC | 30.0 (n=1) |" in table  # a std of one value would read as 0.0
    assert "**45.0 ± 7.1** +15.0" in table and "n/a (< 2 paired seeds)" in table


def test_a_restricted_worker_reports_the_whole_file(tmp_path: Path) -> None:
    full = ex.load_experiment(_write(tmp_path, ratios=[0.1, 0.2], seeds=[0, 1]))
    _results(full, {"Supervised": [0.4, 0.5]})
    _results(full, {"SSMD w/o ACC": [0.3, 0.6]}, ratio=0.2)
    worker = full.restrict(ratios=[0.1], seeds=[0], rows=["Supervised"])
    assert [c.id for c in worker.cells()] == ["supervised__r0.1__s0"]
    ex.write_report(worker)  # what a worker writes after its cell
    table = (full.output_dir / "table.md").read_text()
    assert "| 10% | 20% |" in table and "seeds [0, 1]" in table
    assert "**45.0 ± 7.1**" in table and "**45.0 ± 21.2**" in table  # SSMD's 20% cell kept
    assert "Finished cells: 4/" in table


EXPERIMENTS = sorted((BASE.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiment_files_load_and_name_real_parameters(path: Path) -> None:
    from ssmd.methods import METHODS

    exp = ex.load_experiment(path)
    assert exp.cells() and len(exp.seeds) >= 2
    for spec in exp.methods:
        if exp.task != "detection":  # classification methods have their own registry
            continue
        unknown = set(spec.params) - set(METHODS.get(spec.name).defaults)
        assert not unknown, f"{path.name}: {spec.label}: {unknown}"
        exp.cell_config(ex.Cell(spec, (spec.ratios or exp.ratios)[0], exp.seeds[0]))


def test_table1_files_cover_every_baseline() -> None:
    for variant in ("cpu", "paper"):
        exp = ex.load_experiment(BASE.parent / "experiments" / f"table1_{variant}.yaml")
        # the paper's rows, in its order; extra rows are variants with their own params
        assert [m.name for m in exp.methods if not m.params] == [
            "supervised",
            "pseudo_label",
            "csd",
            "focalmix",
            "ssmd",
            "supervised",
        ]
        assert exp.ratios == [0.1, 0.2, 0.3, 0.4, 0.5] and exp.methods[-1].reference


def test_classification_base_config_trains_with_the_classification_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls_engine = pytest.importorskip("ssmd.engine.classification")
    base = BASE.parent / "classification" / "synthetic_cpu.yaml"
    if not base.is_file():
        pytest.skip("no classification config")
    seen: list[tuple[str, Any]] = []

    def fake(config: dict[str, Any], resume: Any = False) -> dict[str, Any]:
        seen.append((config["task"], resume))
        return {"test": {"AUC": 0.8, "accuracy": 0.7}, "train_seconds": 1.0}

    monkeypatch.setattr(cls_engine, "run_classification_training", fake)
    path = _write(
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
from ssmd.engine import experiment as ex

def fake(config, resume, log):
    time.sleep(0.3)
    with open(sys.argv[2], "a") as fh:  # O_APPEND: whole short lines from both workers
        fh.write(Path(config["output_dir"]).name + "\\n")
    return {"test": {"AP": 0.5, "AP50": 0.6}, "train_seconds": 0.3}

ex._train = fake
ex.run_experiment(ex.load_experiment(sys.argv[1]), log=lambda s: None, report=False)
"""


def test_two_worker_processes_share_the_grid(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _write(tmp_path, ratios=[0.1], seeds=[0, 1])
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


def test_baseline_row_difference_and_p_value_equal_scipy(tmp_path: Path) -> None:
    methods = [
        {"label": "Supervised", "name": "supervised"},
        {"label": "CSD", "name": "csd"},
        {"label": "SSMD", "name": "ssmd"},
        {"label": "Fully-supervised", "name": "supervised", "ratios": [1.0], "reference": True},
    ]
    exp = ex.load_experiment(
        _write(tmp_path, ratios=[0.1], seeds=[0, 1, 2], methods=methods, baseline="Supervised")
    )
    sup, csd, ssmd = [0.30, 0.29, 0.32], [0.31, 0.29, 0.30], [0.20, 0.17, 0.18]
    _results(exp, {"Supervised": sup, "CSD": csd, "SSMD": ssmd})
    spec = next(m for m in exp.methods if m.label == "CSD")
    shutil.rmtree(exp.run_dir(ex.Cell(spec, 0.1, 2)))  # CSD has seeds 0 and 1 only
    vs = ex.write_report(exp)["metrics"]["AP"]["0.1"]["vs_baseline"]
    assert set(vs) == {"CSD", "SSMD"}  # not the baseline itself, not the reference row
    p_ssmd = float(stats.ttest_rel(ssmd, sup).pvalue)
    p_csd = float(stats.ttest_rel(csd[:2], sup[:2]).pvalue)
    assert vs["SSMD"]["p_value"] == pytest.approx(p_ssmd, rel=1e-12)
    assert vs["CSD"]["p_value"] == pytest.approx(p_csd, rel=1e-12)
    assert vs["CSD"]["paired_seeds"] == [0, 1]
    assert vs["SSMD"]["diff"] == pytest.approx(100 * (sum(ssmd) - sum(sup)) / 3)
    table = (exp.output_dir / "table.md").read_text()
    assert "AP (x100) difference to Supervised:" in table
    assert f"| SSMD | {100 * (sum(ssmd) - sum(sup)) / 3:+.1f} (p = {p_ssmd:.4f}) |" in table
    # paired on CSD's seeds 0-1: +0.5, although the table's means differ by -0.3
    assert vs["CSD"]["diff"] == pytest.approx(100 * (0.30 - 0.295))
    assert f"| CSD | +0.5 (p = {p_csd:.4f}, n=2) |" in table


def test_baseline_must_be_a_ranked_row(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baseline = 'Fully-supervised'"):
        ex.load_experiment(_write(tmp_path, baseline="Fully-supervised"))
    with pytest.raises(ConfigError, match="baseline = 'Nope'"):
        ex.load_experiment(_write(tmp_path, baseline="Nope"))


def _finished_run(run: Path, config: dict[str, Any]) -> None:
    """A fake finished run: its resolved config, a best checkpoint and test metrics."""
    from ssmd.config import dump_config

    run.mkdir(parents=True, exist_ok=True)
    dump_config(config, run / "config.yaml")
    (run / "best.pt").write_bytes(b"")
    (run / "test_metrics.json").write_text(json.dumps({"test": {"AP": 0.5}}))


def test_pseudo_label_cells_share_a_matching_stage1(tmp_path: Path) -> None:
    from ssmd.engine.pseudo_label import stage1_config

    path = _write(
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
