"""Backbone checkpoints (ssmd-backbone): round trip into detectors and classifiers, refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ssmd.config import DEFAULTS, DETECTION3D_DEFAULTS, ConfigError
from ssmd.engine.checkpoint import load_checkpoint, save_checkpoint
from ssmd.models.backbones.resnet import build_resnet
from ssmd.models.backbones.weights import (
    BACKBONE_KIND,
    BackboneMismatchError,
    load_backbone_checkpoint,
    save_backbone_checkpoint,
)
from ssmd.models.classifiers import build_classifier
from ssmd.models.factory import MODELS
from ssmd.tasks.detection import build_model


def _perturbed(module: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter and buffer values no fresh model has (so a load is visible)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return module


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)


def test_round_trip_keys_shapes_and_values(tmp_path: Path) -> None:
    src = _perturbed(build_resnet("resnet18", width_multiplier=0.25, norm="gn"))
    path = save_backbone_checkpoint(src, tmp_path / "bb.pt", method={"name": "simclr"})
    state = load_checkpoint(path)  # weights_only
    assert state["kind"] == BACKBONE_KIND and state["method"] == {"name": "simclr"}
    assert state["arch"] == {
        "family": "resnet",
        "name": "resnet18",
        "width_multiplier": 0.25,
        "in_channels": 3,
        "norm": "gn",
        "stem": "imagenet",
    }
    assert set(state["backbone"]) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert tuple(state["backbone"][k].shape) == tuple(v.shape)
    dst = build_resnet("resnet18", width_multiplier=0.25, norm="gn", pretrained_weights=path)
    _assert_same(src, dst)
    assert not torch.equal(  # a fresh model differs, so the load did something
        build_resnet("resnet18", width_multiplier=0.25, norm="gn").conv1.weight, dst.conv1.weight
    )


_2D = [n for n in MODELS.names() if not n.endswith("3d")]


@pytest.mark.parametrize("name", _2D)
def test_every_detector_loads_a_backbone_from_the_config_key(name: str, tmp_path: Path) -> None:
    section = {**DEFAULTS["model"], "name": name}
    donor = build_model(section, 1)
    _perturbed(donor.backbone)
    path = save_backbone_checkpoint(donor.backbone, tmp_path / "bb.pt")
    model = build_model({**section, "pretrained_weights": str(path)}, 1)
    _assert_same(donor.backbone, model.backbone)


@pytest.mark.parametrize(
    ("backbone", "small_input"), [("resnet18", True), ("resnet50", False), ("densenet121", True)]
)
def test_every_classifier_trunk_loads_its_backbone(
    backbone: str, small_input: bool, tmp_path: Path
) -> None:
    kw = {"in_channels": 1, "width_multiplier": 0.125, "small_input": small_input}
    donor = build_classifier(backbone, num_classes=2, **kw)
    trunk = getattr(donor.trunk, "body", donor.trunk)
    _perturbed(trunk)
    path = save_backbone_checkpoint(trunk, tmp_path / "bb.pt")
    model = build_classifier(backbone, num_classes=3, pretrained_weights=path, **kw)
    _assert_same(trunk, getattr(model.trunk, "body", model.trunk))
    assert model.fc.out_features == 3  # the linear layer is the new task's


def test_mismatched_architecture_is_refused_naming_file_field_and_values(tmp_path: Path) -> None:
    path = save_backbone_checkpoint(
        build_resnet("resnet18", width_multiplier=0.25, norm="gn"), tmp_path / "r18q.pt"
    )
    cases = [
        (dict(name="resnet18", width_multiplier=0.5, norm="gn"), "width_multiplier", "0.25", "0.5"),
        (dict(name="resnet18", width_multiplier=0.25, norm="bn"), "norm", "'gn'", "'bn'"),
        (
            dict(name="resnet34", width_multiplier=0.25, norm="gn"),
            "name",
            "'resnet18'",
            "'resnet34'",
        ),
        (
            dict(name="resnet18", width_multiplier=0.25, norm="gn", in_channels=1),
            "in_channels",
            "3",
            "1",
        ),
    ]
    for kw, field, in_file, in_model in cases:
        with pytest.raises(BackboneMismatchError) as info:
            build_resnet(pretrained_weights=path, **kw)  # type: ignore[arg-type]
        msg = str(info.value)
        assert msg.startswith(f"{path}: arch.{field} = {in_file} in the file but {in_model}"), msg
    # the ImageNet stem of a (BatchNorm) detector trunk against a classifier's 3x3 small stem
    path = save_backbone_checkpoint(
        build_resnet("resnet18", width_multiplier=0.25, norm="bn"), tmp_path / "r18bn.pt"
    )
    with pytest.raises(
        BackboneMismatchError,
        match=r"r18bn\.pt: arch\.stem = 'imagenet' in the file but 'small' in",
    ):
        build_classifier(
            "resnet18", width_multiplier=0.25, small_input=True, pretrained_weights=path
        )


def test_a_mis_shaped_tensor_is_named_with_both_shapes(tmp_path: Path) -> None:
    net = build_resnet("resnet18", width_multiplier=0.25, norm="gn")
    path = save_backbone_checkpoint(net, tmp_path / "bb.pt")
    state = load_checkpoint(path)
    state["backbone"]["layer2.0.conv1.weight"] = torch.zeros(32, 16, 1, 1)
    del state["backbone"]["bn1.bias"]
    save_checkpoint(state, path)
    with pytest.raises(BackboneMismatchError) as info:
        load_backbone_checkpoint(build_resnet("resnet18", width_multiplier=0.25, norm="gn"), path)
    msg = str(info.value)
    assert "missing keys: bn1.bias" in msg
    assert re.search(
        r"layer2\.0\.conv1\.weight: file \(32, 16, 1, 1\) vs model \(32, 16, 3, 3\)", msg
    )


def test_a_run_checkpoint_is_not_taken_for_a_backbone(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint({"kind": "ssmd-model", "model": {}}, path)
    with pytest.raises(ValueError, match=r"best\.pt: field 'kind' = 'ssmd-model'.*not a backbone"):
        build_resnet("resnet18", width_multiplier=0.25, pretrained_weights=path)


def test_the_3d_detector_has_no_backbone_weights_key_yet() -> None:
    # issue 22: the 3D trunk has no backbone checkpoints; the key is refused, not ignored
    section = {**DETECTION3D_DEFAULTS["model"], "pretrained_weights": "bb.pt"}
    with pytest.raises(ConfigError, match="pretrained_weights"):
        build_model(section, 1)
