"""Pseudo-labeling as resumable stages: a finished stage 1 and its pseudo boxes are reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ssmd.config import load_config
from ssmd.tasks import pseudo_label as pl
from ssmd.tasks.detection import run_training

# a detector and data small enough for a 2-step run of both stages on a CPU
TINY = [
    "data.synthetic.n_images=12",
    "data.synthetic.image_size=128",
    "data.input_size=128",
    "split.labeled_ratio=0.5",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "model.head_norm=null",
    "model.score_thresh=0.0",
    "model.detections_per_img=20",
    "train.max_iters=2",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.progress=false",
    "method.name=pseudo_label",
    "method.threshold=0.0",  # an untrained detector: keep everything it predicts
    "method.cutout_size=20",
    "method.cutout_reference=128",
]


def test_a_second_run_reuses_stage1_and_the_pseudo_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        None, [f"output_dir={tmp_path / 'pl'}", f"data.cache_dir={tmp_path / 'c'}", *TINY]
    )
    first = run_training(config, log=lambda _: None)
    record = json.loads((tmp_path / "pl" / "pseudo_labels.json").read_text())
    assert record["stats"] == first["pseudo_labels"]
    assert record["stats"]["boxes"] == sum(len(im["boxes"]) for im in record["images"]) > 0
    assert pl.PseudoBoxes().done(config)
    # another threshold needs other pseudo boxes
    assert not pl.PseudoBoxes().done({**config, "method": {**config["method"], "threshold": 0.5}})

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("stage 1 trained again")

    def no_prediction(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pseudo boxes predicted again")

    real = pl.train_once
    calls: list[str] = []

    def only_stage2(cfg: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if cfg["output_dir"].endswith("stage1"):
            no_training()
        calls.append(cfg["output_dir"])
        return real(cfg, **kwargs)

    monkeypatch.setattr(pl, "train_once", only_stage2)
    monkeypatch.setattr(pl, "predict_samples", no_prediction)
    logs: list[str] = []
    second = run_training(config, log=logs.append)
    assert calls == [str(tmp_path / "pl")]  # stage 2 only
    assert any("stage 1 already finished" in line for line in logs)
    assert second["pseudo_labels"] == first["pseudo_labels"]
    assert second["stage1"] == first["stage1"]
    # the same seed and the same pseudo boxes: stage 2 trains to the same result
    assert second["best_val"] == pytest.approx(first["best_val"])
