"""MIL + online teacher: pseudo boxes gated by the image label, normal images as background."""

from __future__ import annotations

import pytest
import torch

from ssmd.methods import build_method
from ssmd.methods.mil_teacher import MILTeacher
from ssmd.models.detectors.faster_rcnn import build_faster_rcnn
from ssmd.structures.sample import Batch, Sample, collate


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_faster_rcnn(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        num_classes=2,
        anchor_sizes=(8, 16, 32, 64, 128),
        representation_size=32,
        box_batch_size_per_image=32,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=50,
        score_thresh=0.0,  # an untrained detector: every class gets detections
        detections_per_img=40,
    )


def _batch(labels: list[int | None], size: int = 96) -> Batch:
    g = torch.Generator().manual_seed(3)
    return collate(
        [
            Sample(
                torch.randn(3, size, size, generator=g),
                torch.zeros(0, 4),
                torch.zeros(0, dtype=torch.int64),
                image_id=i,
                path=f"weak{i}.png",
                image_label=lab,
            )
            for i, lab in enumerate(labels)
        ]
    )


def _method(**kw: object) -> MILTeacher:
    m = build_method("mil_teacher", _model(), {"burn_in_iters": 0, "threshold": 0.0, **kw})
    assert isinstance(m, MILTeacher)
    m.train()
    return m


def test_pseudo_boxes_keep_only_the_image_class_and_normal_images_are_background() -> None:
    method = _method()
    weak = _batch([0, 2, 1])
    _, boxes, labels = method.pseudo_labels(weak)
    assert len(boxes[0]) == 0  # normal: nothing
    assert len(labels[1]) > 0 and bool((labels[1] == 2).all())
    assert len(labels[2]) > 0 and bool((labels[2] == 1).all())
    assert method._gated_out > 0
    assert method.keep_empty_image(weak, 0) and not method.keep_empty_image(weak, 1)
    ungated = _method(gate_by_image_label=False)
    _, _, labels_all = ungated.pseudo_labels(weak)
    assert {1, 2} <= set(labels_all[1].tolist())  # without the gate both classes come through


def test_step_adds_mil_to_the_teacher_losses() -> None:
    method = _method(alpha_schedule="static")
    labeled = collate(
        [
            Sample(
                torch.randn(3, 96, 96),
                torch.tensor([[20.0, 24.0, 52.0, 60.0]]),
                torch.tensor([2]),
                image_id=9,
                image_label=2,
            )
        ]
    )
    losses = method.training_step(labeled, _batch([0, 2]), 0, 10)
    assert losses["loss_mil"].item() > 0 and losses["loss_unsup"].item() > 0
    assert losses["mil_images"].item() == 2.0
    with pytest.raises(ValueError, match=r"weak1\.png has none"):
        method.training_step(labeled, _batch([0, None]), 1, 10)
