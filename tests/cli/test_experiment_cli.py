"""``ssmd experiment`` end to end on a tiny synthetic grid (2 methods x 1 ratio x 2 seeds):
dry run, run, resume without re-running, report, and a bad file's message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssmd.cli.main import main

TINY = [
    "data.synthetic.n_images=12",
    "data.synthetic.image_size=128",
    "data.input_size=128",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "model.head_norm=null",
    "train.max_iters=2",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.progress=false",
]


def _experiment(tmp_path: Path) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text("method: {name: supervised}\ndata: {format: synthetic}\n")
    doc = {
        "name": "cli smoke",
        "base_config": "base.yaml",  # relative to the experiment file
        "output_dir": str(tmp_path / "out"),
        "overrides": [*TINY, f"data.cache_dir={tmp_path / 'cache'}"],
        "ratios": [0.5],
        "seeds": [0, 1],
        "metrics": ["AP50", "AP"],
        "methods": [
            {"label": "Supervised", "name": "supervised"},
            {"label": "CSD", "name": "csd", "params": {"ramp": "none"}},
        ],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_experiment_command_runs_resumes_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(tmp_path)
    assert main(["experiment", "--config", str(exp), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "4 cells" in listing and listing.count("todo") == 4
    assert "csd__r0.5__s1" in listing

    assert main(["experiment", "--config", str(exp)]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "| Supervised |" in printed and "| CSD |" in printed and "paired t-test" in printed
    for name in ("results.csv", "table.md", "summary.json", "plot_ap50.png"):
        assert (out / name).is_file(), name
    result = out / "runs" / "csd__r0.5__s0" / "result.json"
    assert json.loads(result.read_text())["method"] == "csd"
    assert (out / "runs" / "csd__r0.5__s0" / "best.pt").is_file()
    mtime = result.stat().st_mtime_ns

    assert main(["experiment", "--config", str(exp)]) == 0  # resumes: nothing to run
    assert result.stat().st_mtime_ns == mtime
    assert "running" not in capsys.readouterr().out
    assert main(["experiment", "--config", str(exp), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("done") == 4
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 5


def test_bad_experiment_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("base_config: nowhere.yaml\nmethods: [supervised]\nratios: [0.1]\nseeds: [0]\n")
    assert main(["experiment", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "base_config" in err
