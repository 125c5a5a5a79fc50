"""The classification job end to end on the synthetic set: outputs, resume, Grad-CAM, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.cli.main import main
from ssmd.config import load_config
from ssmd.engine.checkpoint import load_checkpoint
from ssmd.models.gradcam import grad_cam, write_gradcam_overlays
from ssmd.tasks.classification import load_classifier, run_classification_training

TINY = [
    "task=classification",
    "data.image_size=16",
    "data.synthetic.n_images=120",
    "model.width_multiplier=0.125",
    "train.batch_size=8",
    "train.progress=false",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "eval.batch_size=64",
]


def _config(out: Path, *extra: str) -> dict[str, Any]:
    return load_config(None, [*TINY, f"output_dir={out}", *extra])


def test_stsc_run_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = run_classification_training(
        _config(out, "method.name=stsc", "train.max_iters=6", "method.tc_start=0.0")
    )
    for name in ("config.yaml", "split.json", "metrics.jsonl", "last.pt", "best.pt",
                 "test_metrics.json", "test_predictions.csv", "summary.json"):  # fmt: skip
        assert (out / name).is_file(), name
    test = json.loads((out / "test_metrics.json").read_text())
    assert all(isinstance(v, float) for v in test.values())
    for key in ("AUC", "accuracy", "sensitivity", "specificity", "F1", "AUC/class0"):
        assert key in test
    assert summary["test"] == test and summary["output_dir"] == str(out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss_tc" in r]
    assert train_rows and "train/loss_sc" in train_rows[0] and "train/loss_c" in train_rows[0]
    assert any("val/AUC" in r for r in rows)
    best = load_checkpoint(out / "best.pt")  # weights_only
    assert best["task"] == "classification" and "teacher" in best
    model, _ = load_classifier(out / "best.pt", which="teacher")
    assert isinstance(model, torch.nn.Module)


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    common = ["method.name=stsc", "method.rampup=0.0", "method.tc_start=0.0",
              "train.schedule=constant"]  # fmt: skip
    run_classification_training(_config(tmp_path / "full", *common, "train.max_iters=6"))
    run_classification_training(_config(tmp_path / "part", *common, "train.max_iters=3"))
    resumed = _config(tmp_path / "part", *common, "train.max_iters=6")
    run_classification_training(resumed, resume=True)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["method"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["method"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_supervised_multilabel_run(tmp_path: Path) -> None:
    summary = run_classification_training(
        _config(tmp_path, "data.synthetic.multi_label=true", "train.max_iters=3")
    )
    assert 0.0 <= summary["test"]["AUC"] <= 1.0


def test_gradcam_maps_and_png(tmp_path: Path) -> None:
    run_classification_training(_config(tmp_path, "train.max_iters=3"))
    model, _ = load_classifier(tmp_path / "best.pt")
    x = torch.rand(2, 1, 16, 16)
    cams = grad_cam(model, (x - 0.5) / 0.25)
    assert cams.shape == (2, 16, 16)
    assert float(cams.min()) >= 0 and float(cams.max()) <= 1
    paths = write_gradcam_overlays(
        model, x, (x - 0.5) / 0.25, ["a", "b"], tmp_path / "cam", scale=2
    )
    with Image.open(paths[0]) as im:
        assert im.size == (64, 32) and im.mode == "RGB"
        assert np.asarray(im).std() > 0


def test_cli_train_predict_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(
        ["train", *TINY, f"output_dir={out}", "train.max_iters=3", "method.name=mean_teacher"]
    )
    assert rc == 0
    assert "AUC" in capsys.readouterr().out
    rc = main(["predict", "--checkpoint", str(out / "best.pt"), "--format", "synthetic_cls", "5",
               "--out", str(tmp_path / "p.csv"), "--viz", str(tmp_path / "viz")])  # fmt: skip
    assert rc == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("image,predicted,prob_class0")
    assert len(list((tmp_path / "viz").glob("*.png"))) == 5
    rc = main(["evaluate", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "m.json")])
    assert rc == 0
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["AUC"] == pytest.approx(json.loads((out / "test_metrics.json").read_text())["AUC"])


def test_unknown_classification_key_is_an_error() -> None:
    from ssmd.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.fpn_channels"):
        load_config(None, ["task=classification", "model.fpn_channels=3"])
