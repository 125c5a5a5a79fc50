"""The model registry and config-to-builder matching (``model.name``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssmd.config import DEFAULTS, ConfigError, dump_config, load_config
from ssmd.models import MODELS, RetinaNet
from ssmd.models.factory import builder_keys, model_from_config
from ssmd.tasks.detection import build_model
from ssmd.utils.registry import Registry


def test_registry_refuses_duplicates_and_lists_what_it_holds() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    with pytest.raises(KeyError, match="thing 'a' is already registered"):
        reg.register("a")(3)
    assert reg.get("a") == 1  # the first registration is kept
    assert reg.names() == ["a", "b"]
    with pytest.raises(KeyError, match=r"unknown thing 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(KeyError, match="already registered"):
        MODELS.register("retinanet")(lambda **kw: nn.Identity())


def test_unknown_model_name_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"model\.name = 'yolo'.*retinanet") as err:
        build_model({**DEFAULTS["model"], "name": "yolo"}, 1)
    for name in MODELS.names():
        assert name in str(err.value)


def test_default_section_builds_the_configured_retinanet() -> None:
    cfg = load_config(None, ["model.fpn_channels=16", "model.detections_per_img=7"])
    assert cfg["model"]["name"] == "retinanet"
    model = build_model(cfg["model"], 2)
    assert isinstance(model, RetinaNet)
    assert model.fpn.out_channels == 16 and model.detections_per_img == 7
    assert model.num_classes == 2
    # a section written before model.name existed (an older checkpoint) is a RetinaNet
    old = {k: v for k, v in cfg["model"].items() if k != "name"}
    assert isinstance(build_model(old, 1), RetinaNet)


def test_builder_keys_are_its_keyword_parameters() -> None:
    keys, takes_any = builder_keys(MODELS.get("retinanet"))
    assert not takes_any and "num_classes" not in keys
    # every default model key is one the built-in RetinaNet reads
    assert set(DEFAULTS["model"]) - {"name"} <= keys
    assert builder_keys(MODELS.get("retinanet_resnet18_cpu"))[1]


def test_model_keys_are_checked_against_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    # the model section is open at load time (a detector may read keys of its own) ...
    cfg = load_config(None, ["model.fpn_chanels=16"])
    # ... and checked when the model is built
    with pytest.raises(ConfigError, match=r"unknown config key model\.fpn_chanels = 16"):
        build_model(cfg["model"], 1)

    def toy(*, num_classes: int = 1, backbone: str = "resnet18", depth: int = 2) -> nn.Module:
        return nn.Linear(depth, num_classes)

    monkeypatch.setitem(MODELS._entries, "toy", toy)
    section = {**DEFAULTS["model"], "name": "toy", "depth": 3}
    model = model_from_config(section, 4, shared=DEFAULTS["model"])
    assert isinstance(model, nn.Linear) and tuple(model.weight.shape) == (4, 3)
    # a RetinaNet key at its default value is another detector's: ignored
    # set away from it, the detector would silently ignore the user: refused
    with pytest.raises(
        ConfigError, match=r"model\.head_convs = 4 is not used by model\.name='toy'"
    ):
        model_from_config({**section, "head_convs": 4}, 1, shared=DEFAULTS["model"])


def test_stage1_of_a_run_from_before_model_name_still_matches(tmp_path: Path) -> None:
    from ssmd.tasks.pseudo_label import stage1_config, stage1_mismatch

    config = load_config(None, [f"output_dir={tmp_path / 'pl'}", "method.name=pseudo_label"])
    run = tmp_path / "sup"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    (run / "test_metrics.json").write_text("{}")
    mine = stage1_config(config)
    old = {**mine, "model": {k: v for k, v in mine["model"].items() if k != "name"}}
    dump_config(old, run / "config.yaml")
    assert stage1_mismatch(config, run) is None
    dump_config({**mine, "model": {**mine["model"], "name": "other"}}, run / "config.yaml")
    assert "model.name = 'other'" in str(stage1_mismatch(config, run))


def test_built_model_predicts() -> None:
    model = build_model(load_config(None, ["model.fpn_channels=16"])["model"], 1).eval()
    dets = model.predict(torch.randn(1, 3, 256, 256))  # type: ignore[operator]
    assert set(dets[0]) == {"boxes", "scores", "labels"}
