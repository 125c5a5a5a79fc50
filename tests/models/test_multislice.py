"""3DCE multi-slice backbone: group order, shared trunk, neutral fusion init, both detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from ssmd.config import ConfigError
from ssmd.models.backbones.multislice import SliceGroupBackbone
from ssmd.models.factory import model_from_config


class FirstChannel(nn.Module):
    """A trunk returning one 'level': the group's first channel, and its sum at stride 2."""

    out_channels = (1, 1)
    strides = (1, 2)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x[:, :1], x[:, :, ::2, ::2].sum(dim=1, keepdim=True)]


def test_groups_are_consecutive_slices_and_mean_fusion_by_hand() -> None:
    x = torch.arange(9, dtype=torch.float32).view(1, 9, 1, 1).expand(1, 9, 2, 2).contiguous()
    for fusion in ("mean", "conv"):  # conv starts as the mean of the groups
        out = SliceGroupBackbone(FirstChannel(), groups=3, fusion=fusion)(x)
        # groups (0,1,2), (3,4,5), (6,7,8): first channels 0, 3, 6 -> mean 3
        assert torch.allclose(out[0], torch.full((1, 1, 2, 2), 3.0))
        # sums 3, 12, 21 -> mean 12
        assert torch.allclose(out[1], torch.full((1, 1, 1, 1), 12.0))


def test_shared_trunk_identical_groups_equal_one_group() -> None:
    torch.manual_seed(0)
    det = model_from_config(
        {"name": "retinanet_3dce", "width_multiplier": 0.25, "fpn_channels": 16, "head_convs": 1},
        num_classes=1,
    )
    wrapper = det.backbone.eval()
    assert isinstance(wrapper, SliceGroupBackbone) and wrapper.in_channels == 9
    one = torch.rand(1, 3, 64, 64)
    fused = wrapper(one.repeat(1, 3, 1, 1))
    alone = wrapper.body(one)
    for f, a in zip(fused, alone, strict=True):
        assert torch.allclose(f, a, atol=1e-4, rtol=1e-4)
    # a trained fusion is not the mean any more: the groups then weigh differently
    with torch.no_grad():
        wrapper.fuse[0].weight.add_(0.1)
    assert not torch.allclose(wrapper(one.repeat(1, 3, 1, 1))[0], alone[0], atol=1e-4)


def test_wrong_channel_count_names_the_shape() -> None:
    wrapper = SliceGroupBackbone(FirstChannel(), groups=3)
    with pytest.raises(ValueError, match=r"\(B, 9, H, W\).*num_neighbors to 4"):
        wrapper(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="fusion"):
        SliceGroupBackbone(FirstChannel(), fusion="max")


def test_faster_rcnn_3dce_trains_and_predicts_on_nine_slices() -> None:
    torch.manual_seed(0)
    det = model_from_config(
        {
            "name": "faster_rcnn_3dce",
            "width_multiplier": 0.25,
            "fpn_channels": 16,
            "representation_size": 32,
            "anchor_sizes": [8, 16, 32, 64, 128],
            "slice_groups": 3,
        },
        num_classes=1,
    )
    images = torch.rand(2, 9, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    det.train()
    losses = det.loss(det(images), targets)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert det.backbone.fuse[0].weight.grad is not None
    assert det.backbone.body.conv1.weight.grad.abs().sum() > 0  # the shared trunk learns
    det.eval()
    preds = det.predict(images[:1])
    assert set(preds[0]) == {"boxes", "scores", "labels"}


def test_multislice_builder_reads_no_in_channels() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        model_from_config({"name": "faster_rcnn_3dce", "in_channels": 9}, num_classes=1)


def test_pretrained_trunk_weights_load_into_the_shared_trunk(tmp_path: Path) -> None:
    from ssmd.models.backbones.resnet import build_resnet
    from ssmd.models.backbones.weights import BackboneMismatchError, save_backbone_checkpoint

    trunk = build_resnet("resnet18", width_multiplier=0.25, norm="gn")
    with torch.no_grad():
        trunk.conv1.weight.add_(1.0)
    path = save_backbone_checkpoint(trunk, tmp_path / "trunk.pt")
    section = {"name": "retinanet_3dce", "width_multiplier": 0.25, "backbone_norm": "gn"}
    det = model_from_config({**section, "pretrained_weights": str(path)}, num_classes=1)
    assert torch.equal(det.backbone.body.conv1.weight, trunk.conv1.weight)
    fresh = SliceGroupBackbone(build_resnet("resnet18", width_multiplier=0.25, norm="gn"))
    assert torch.equal(det.backbone.fuse[0].weight, fresh.fuse[0].weight)  # mean init kept
    # a wrapper file of 2 groups does not load into a 3-group wrapper
    two = model_from_config({**section, "slice_groups": 2}, num_classes=1)
    wpath = save_backbone_checkpoint(two.backbone, tmp_path / "two.pt")
    with pytest.raises(BackboneMismatchError, match="slice_groups"):
        model_from_config({**section, "pretrained_weights": str(wpath)}, num_classes=1)
