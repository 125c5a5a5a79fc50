"""The ``ssmd pretrain`` job: config, images of the split, loss going down, checkpoints that load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ssmd.cli.main import main
from ssmd.config import ConfigError
from ssmd.engine.checkpoint import load_checkpoint
from ssmd.pretrain.job import load_pretrain_config, pretrain_images, run_pretraining
from ssmd.tasks.detection import build_data, build_model

pytest.importorskip("lightly")

TINY = [
    "data.synthetic.n_images=24",
    "data.synthetic.image_size=96",
    "data.input_size=96",
    "model.width_multiplier=0.125",
    "split.labeled_ratio=0.25",
    "pretrain.augment.crop_size=48",
    "pretrain.train.batch_size=8",
    "pretrain.train.progress=false",
    "pretrain.train.log_every=5",
]


def _write(tmp_path: Path, pretrain: dict[str, Any] | None = None, **top: Any) -> Path:
    doc: dict[str, Any] = {"data": {"format": "synthetic", "cache_dir": str(tmp_path / "cache")}}
    doc.update(top)
    if pretrain is not None:
        doc["pretrain"] = pretrain
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_config_routes_overrides_and_names_the_users_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"part": "train", "method": {"name": "simclr", "temperature": 0.3}})
    config = load_pretrain_config(
        path, ["pretrain.method.name=vicregl", "pretrain.train.lr=1e-3", "split.labeled_ratio=0.2"]
    )
    assert config["split"]["labeled_ratio"] == 0.2  # the training part, as ssmd train reads it
    assert config["pretrain"]["part"] == "train"
    assert config["pretrain"]["method"] == {"name": "vicregl", "temperature": 0.3}
    assert config["pretrain"]["train"]["lr"] == 0.001  # "1e-3" read as a number
    assert config["pretrain"]["augment"]["preset"] == "microscopy"
    with pytest.raises(ConfigError, match=rf"{path}: unknown config key 'pretrain\.steps'"):
        load_pretrain_config(_write(tmp_path, {"steps": 3}))
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key 'trian'"):
        load_pretrain_config(_write(tmp_path, {}, trian={}))  # the training part's check
    with pytest.raises(ConfigError, match=r"pretrain\.part = 'test': expected one of"):
        load_pretrain_config(_write(tmp_path, {"part": "test"}))
    with pytest.raises(
        ConfigError, match=r"pretrain\.method\.name = 'byol': unknown; known: simclr"
    ):
        load_pretrain_config(None, ["pretrain.method.name=byol"])
    with pytest.raises(
        ConfigError, match=r"pretrain\.train\.batch_size = 1: expected an integer >= 2"
    ):
        load_pretrain_config(None, ["pretrain.train.batch_size=1"])
    with pytest.raises(ConfigError, match=r"pretrain\.train\.lr = 0: expected a number > 0"):
        load_pretrain_config(None, ["pretrain.train.lr=0"])


def test_images_are_the_unlabeled_part_of_the_training_runs_split(tmp_path: Path) -> None:
    over = [*TINY, f"data.cache_dir={tmp_path}"]
    config = load_pretrain_config(None, over)
    images, indices, info = pretrain_images(config)
    data = build_data(config)  # what `ssmd train` with this config splits
    assert (
        indices == sorted(data.indices("unlabeled")) and info["images"] == 14
    )  # 19 train images, 5 labeled
    assert max(images[indices[0]].shape[1:]) == 96 and info["channels"] == 3
    train = pretrain_images(load_pretrain_config(None, [*over, "pretrain.part=train"]))[1]
    assert train == sorted(data.indices("train"))
    assert set(indices) <= set(train) and not set(indices) & set(data.indices("labeled"))
    few = load_pretrain_config(None, [*over, "pretrain.part=train", "pretrain.max_images=5"])
    assert len(pretrain_images(few)[1]) == 5
    with pytest.raises(ConfigError, match=r"holds 0 image\(s\).*use pretrain\.part=train"):
        pretrain_images(load_pretrain_config(None, [*over, "split.labeled_ratio=1.0"]))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "vicregl"])
def test_loss_decreases_and_the_backbone_loads_into_the_detector(
    method: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = load_pretrain_config(
        None,
        [
            *TINY,
            f"data.cache_dir={tmp_path}",
            f"pretrain.output_dir={out}",
            f"pretrain.method.name={method}",
            "pretrain.train.max_iters=40",
            "pretrain.train.lr=0.002",
            "pretrain.train.warmup_iters=0",
            "pretrain.augment.scale=[0.5, 1.0]",
        ],
    )
    summary = run_pretraining(config, log=lambda s: None)
    assert summary["loss_end"] < summary["loss_start"], summary  # the run is seeded
    assert summary["images"] == 14 and summary["steps"] == 40 and summary["batch_size"] == 8
    for name in ("backbone.pt", "last.pt", "config.yaml", "metrics.jsonl", "pretrain_summary.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "pretrain_summary.json").read_text())["method"]["name"] == method
    saved = load_checkpoint(out / "backbone.pt")
    assert saved["method"]["name"] == method and saved["config"]["pretrain"]["part"] == "unlabeled"
    model = build_model({**config["model"], "pretrained_weights": str(out / "backbone.pt")}, 1)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, saved["backbone"][key], msg=key)


def test_a_classifier_trunk_pretrains_and_loads(tmp_path: Path) -> None:
    from ssmd.tasks.classification import build_classification_model

    path = _write(
        tmp_path,
        {"part": "train", "augment": {"preset": "xray"}, "output_dir": str(tmp_path / "cls")},
        task="classification",
    )
    doc = yaml.safe_load(path.read_text())
    doc["data"] = {"format": "synthetic_cls", "image_size": 16, "synthetic": {"n_images": 40}}
    path.write_text(yaml.safe_dump(doc))
    config = load_pretrain_config(
        path,
        [
            "model.width_multiplier=0.125",
            "pretrain.train.max_iters=2",
            "pretrain.train.progress=false",
        ],
    )
    summary = run_pretraining(config, log=lambda s: None)
    assert summary["arch"]["stem"] == "small" and summary["arch"]["in_channels"] == 1
    assert summary["crop_size"] == 16  # the classifier's image size
    backbone = tmp_path / "cls" / "backbone.pt"
    model = build_classification_model(
        {**config["model"], "pretrained_weights": str(backbone)}, 3, 1
    )
    saved = load_checkpoint(backbone)["backbone"]
    torch.testing.assert_close(model.trunk.body.conv1.weight, saved["conv1.weight"])  # type: ignore[union-attr]


def test_the_command_writes_a_backbone_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    path = _write(tmp_path, {"output_dir": str(out), "train": {"checkpoint_every": 1}})
    args = ["pretrain", "--config", str(path), *TINY, "pretrain.train.max_iters=2"]
    assert main(args) == 0
    assert (out / "backbone.pt").is_file() and (out / "last.pt").is_file()
    assert "model.pretrained_weights=" in capsys.readouterr().out
    more = [*args[:-1], "pretrain.train.max_iters=3", "--resume", str(out / "last.pt")]
    assert main(more) == 0
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["steps"] == 3 and summary["steps_this_call"] == 1
    assert main(["pretrain", "--config", str(path), "pretrain.nope=1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        "ssmd pretrain: error: override 'pretrain.nope=1': unknown key 'pretrain.nope'; known "
        "keys here: augment, image_size, max_images, method, output_dir, part, seed, train"
    )
