"""Experiment rows that start from a pretrained backbone: per-cell paths and the Init column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ssmd import experiments as ex
from ssmd.experiments import runner

BASE = Path(__file__).resolve().parents[2] / "configs" / "synthetic_cpu.yaml"
PRE = "runs/pretrain/simclr_r{ratio}_s{seed}/backbone.pt"


def _experiment(tmp_path: Path) -> ex.Experiment:
    doc = {
        "name": "init",
        "base_config": str(BASE),
        "output_dir": str(tmp_path / "exp"),
        "ratios": [0.1, 0.2],
        "seeds": [0, 1],
        "metrics": ["AP"],
        "methods": [
            {"label": "Supervised", "name": "supervised"},
            {
                "label": "Supervised + SimCLR",
                "name": "supervised",
                "overrides": [f"model.pretrained_weights={PRE}"],
            },
        ],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(doc))
    return ex.load_experiment(path)


def test_ratio_and_seed_are_filled_into_a_rows_overrides(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    cell = next(
        c for c in exp.cells() if c.method.label == "Supervised + SimCLR" and c.ratio == 0.2
    )
    assert exp.cell_config(cell)["model"]["pretrained_weights"] == (
        f"runs/pretrain/simclr_r0.2_s{cell.seed}/backbone.pt"
    )
    scratch = next(c for c in exp.cells() if c.method.label == "Supervised")
    assert exp.cell_config(scratch)["model"]["pretrained_weights"] is None
    assert [exp.row_init(m) for m in exp.methods] == ["scratch", PRE]


def test_results_and_table_say_which_init_each_row_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = _experiment(tmp_path)
    seen: list[Any] = []

    def train(config: dict[str, Any], resume: Any, log: Any) -> dict[str, Any]:
        seen.append(config["model"]["pretrained_weights"])
        pre = config["model"]["pretrained_weights"] is not None
        ap = (0.3 + 0.02 * config["seed"]) if pre else (0.2 + 0.01 * config["seed"])
        return {"test": {"AP": ap}, "train_seconds": 1.0}

    monkeypatch.setattr(runner, "run_cell_training", train)
    ex.run_experiment(exp, log=lambda s: None)
    assert "runs/pretrain/simclr_r0.1_s1/backbone.pt" in seen and None in seen
    result = json.loads((exp.run_dir(exp.cells()[1]) / "result.json").read_text())
    assert result["init"] == "runs/pretrain/simclr_r0.1_s0/backbone.pt"
    csv_rows = (exp.output_dir / "results.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",run_dir,init") and csv_rows[1].endswith(",scratch")
    table = (exp.output_dir / "table.md").read_text()
    assert "| Method | Init | 10% | 20% |" in table
    assert "| Supervised | scratch | 20.5 ± 0.7 | 20.5 ± 0.7 |" in table
    assert f"| Supervised + SimCLR | {PRE} | **31.0 ± 1.4** +10.5 | **31.0 ± 1.4** +10.5 |" in table
    assert "| *p*-value (best vs second) | | " in table


def test_tables_without_pretrained_rows_keep_their_layout(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    summary = {"metrics": {"AP": {}}}
    table = ex.format_table(exp, summary, "AP", {"Supervised": "scratch"})
    assert "| Method | 10% | 20% |" in table and "Init" not in table
