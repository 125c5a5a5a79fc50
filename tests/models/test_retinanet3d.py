"""The 3D RetinaNet: the 2D detector's parts with spatial_dims=3, registered as retinanet3d."""

from __future__ import annotations

import pytest
import torch

from ssmd.models.backbones.resnet3d import ResNet3dFeatures
from ssmd.models.detectors.retinanet import RetinaNet
from ssmd.models.factory import MODELS, create_model, model_from_config
from ssmd.models.heads.retinanet_head import RetinaNetHead
from ssmd.models.necks.fpn import FPN
from ssmd.structures.dense import DenseOutputs

TINY = {"widths": (4, 8, 8, 8), "fpn_channels": 8}


def test_trunk_strides_and_channels() -> None:
    trunk = ResNet3dFeatures(widths=(4, 8, 16, 32), num_outputs=3)
    outs = trunk(torch.zeros(1, 1, 32, 48, 64))
    assert trunk.strides == [4, 8, 16] and trunk.out_channels == [8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [
        (1, 8, 8, 12, 16),
        (1, 16, 4, 6, 8),
        (1, 32, 2, 3, 4),
    ]


def test_fpn_and_head_in_3d() -> None:
    fpn = FPN([8, 16], out_channels=4, extra_levels=1, spatial_dims=3)
    levels = fpn([torch.zeros(2, 8, 4, 6, 8), torch.zeros(2, 16, 2, 3, 4)])
    assert [tuple(p.shape) for p in levels] == [(2, 4, 4, 6, 8), (2, 4, 2, 3, 4), (2, 4, 1, 2, 2)]
    head = RetinaNetHead(4, num_anchors=3, num_classes=2, activation="sigmoid", spatial_dims=3)
    cls, box = head(levels)
    assert tuple(cls[0].shape) == (2, 3, 2, 4, 6, 8) and tuple(box[0].shape) == (2, 3, 6, 4, 6, 8)
    with pytest.raises(ValueError, match="spatial_dims"):
        FPN([8], spatial_dims=4)


def test_registered_and_built_from_config() -> None:
    assert "retinanet3d" in MODELS.names()
    model = model_from_config({"name": "retinanet3d", **TINY}, num_classes=1)
    assert isinstance(model, RetinaNet) and model.spatial_dims == 3
    with pytest.raises(ValueError, match="widths"):
        model_from_config({"name": "retinanet3d", "widths": [4]}, num_classes=1)


def test_forward_loss_and_predict_3d() -> None:
    model = create_model("retinanet3d", **TINY)
    images = torch.randn(2, 1, 32, 32, 32)
    out = model(images)
    assert isinstance(out, DenseOutputs)
    assert [tuple(t.shape) for t in out.box_deltas] == [
        (2, 3, 6, 8, 8, 8),
        (2, 3, 6, 4, 4, 4),
        (2, 3, 6, 2, 2, 2),
    ]
    anchors = model.anchors(out)
    assert anchors.shape == ((512 + 64 + 8) * 3, 6)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 8.0, 12.0, 14.0, 16.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    labels, _ = model.assign_targets(out, targets)
    assert int((labels[0] == 1).sum()) >= 1 and int((labels[1] == 1).sum()) == 0
    losses = model.loss(out, targets)
    total = losses["loss_cls"] + losses["loss_box"]
    total.backward()
    assert torch.isfinite(total.detach()) and float(losses["loss_box"].detach()) > 0
    assert model.backbone.stem[0].weight.grad is not None
    model.eval()
    model.score_thresh = 0.0
    dets = model.predict(images[:1])
    assert dets[0]["boxes"].shape[1] == 6 and dets[0]["boxes"].shape[0] <= model.detections_per_img
    boxes = dets[0]["boxes"]
    assert bool((boxes[:, 3:] <= 32).all() and (boxes[:, :3] >= 0).all())


def test_rejects_2d_input() -> None:
    model = create_model("retinanet3d", **TINY)
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))
