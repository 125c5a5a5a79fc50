"""Shared helpers of the experiment tests: a small experiment file, a fake cell training that
records which cells ran, and hand-written ``result.json`` files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ssmd import experiments as ex

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


def _fake_train(
    calls: list[str], ap: dict[str, float] | None = None, sleep: float = 0.0
) -> Callable[..., dict[str, Any]]:
    def train(config: dict[str, Any], resume: Any, log: Any) -> dict[str, Any]:
        cell = Path(config["output_dir"]).name
        calls.append(cell)
        time.sleep(sleep)
        value = (ap or {}).get(cell, 0.5)
        return {"test": {"AP": value, "AP50": value + 0.1}, "train_seconds": 1.0}

    return train


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


@pytest.fixture
def write_experiment() -> Callable[..., Path]:
    """``write_experiment(tmp_path, **changes)``: a 3-row, 2-ratio, 3-seed experiment file on the
    synthetic config, with ``changes`` replacing its top-level fields."""
    return _write


@pytest.fixture
def fake_train() -> Callable[..., Callable[..., dict[str, Any]]]:
    """``fake_train(calls, ap=None, sleep=0.0)``: a stand-in for the cell training that appends
    each cell's folder name to ``calls`` and returns ``ap[cell]`` (default 0.5) as its AP."""
    return _fake_train


@pytest.fixture
def write_results() -> Callable[..., None]:
    """``write_results(exp, {label: [value per seed]}, ratio=0.1)``: finished cells' result.json."""
    return _results
