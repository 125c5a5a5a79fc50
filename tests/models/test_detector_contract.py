"""The detector contract: capabilities, and methods refusing a detector that lacks what they need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ssmd.config import ConfigError
from ssmd.methods import METHODS, build_method
from ssmd.models import build_retinanet
from ssmd.models.detectors.base import (
    CAPABILITIES,
    DENSE_MAPS,
    Detector,
    check_capabilities,
    detector_capabilities,
)


class ProposalDetector(nn.Module):
    """A detector with losses and detections but no dense per-anchor maps."""

    provides_dense_maps = False

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images: Tensor) -> Tensor:
        return images.mean() * self.w

    def loss(self, outputs: Any, targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {"loss_x": outputs}

    def postprocess(
        self, outputs: Any, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        return []

    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        return []


def _retinanet() -> nn.Module:
    return build_retinanet("resnet18", width_multiplier=0.125, fpn_channels=16, head_convs=1)


def test_capabilities_of_retinanet_and_of_a_proposal_detector() -> None:
    retina = _retinanet()
    assert isinstance(retina, Detector)
    assert detector_capabilities(retina) == frozenset(CAPABILITIES) - {"region_scores"}
    assert detector_capabilities(ProposalDetector()) == {"losses", "detections"}
    from ssmd.models.detectors.faster_rcnn import build_faster_rcnn

    frcnn = build_faster_rcnn("resnet18", width_multiplier=0.25, fpn_channels=16)
    assert detector_capabilities(frcnn) == {"losses", "detections", "region_scores"}
    assert detector_capabilities(nn.Linear(2, 2)) == frozenset()


@pytest.mark.parametrize("name", ["ssmd", "csd", "focalmix"])
def test_consistency_methods_refuse_a_detector_without_dense_maps(name: str) -> None:
    # CSD also runs on region scores (two-stage CSD); the proposal detector has neither
    assert DENSE_MAPS in METHODS.get(name).requires or name == "csd"
    model = ProposalDetector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        build_method(name, model)
    msg = str(err.value)
    assert f"method.name={name!r}" in msg and "ProposalDetector" in msg and "dense_maps" in msg
    assert "pseudo_label" in msg and "supervised" in msg  # the methods that do run on it
    # refused before the method touched the model (SSMD inserts noise layers)
    assert list(model.state_dict()) == list(before)


def test_supervised_and_pseudo_label_need_only_losses_and_detections() -> None:
    for name in ("supervised", "pseudo_label"):
        assert set(METHODS.get(name).requires) == {"losses", "detections"}
        assert build_method(name, ProposalDetector()).model is not None
    with pytest.raises(ConfigError, match=r"'supervised' needs a detector with losses, detections"):
        build_method("supervised", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown capabilities"):
        check_capabilities("x", ["teleport"], ProposalDetector())


def test_dense_outputs_rows_are_the_images_of_the_batch() -> None:
    model = _retinanet()
    x = torch.randn(3, 3, 128, 128)
    out = model(x)
    part = out.rows(1, 3)
    assert part.batch_size == 2 and part.image_size == out.image_size
    for a, b in zip(part.cls_logits, out.cls_logits, strict=True):
        assert torch.equal(a, b[1:3])
    for a, b in zip(part.box_deltas, out.box_deltas, strict=True):
        assert torch.equal(a, b[1:3])
