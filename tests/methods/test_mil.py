"""The MIL method on Faster R-CNN: the weak loss reaches the detector, schedules, batching."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ssmd.config import ConfigError
from ssmd.methods import build_method
from ssmd.methods.mil import MIL
from ssmd.models.detectors.faster_rcnn import build_faster_rcnn
from ssmd.models.detectors.retinanet import build_retinanet
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
    )


def _batch(labels: list[int | None], boxes: bool = True, size: int = 96) -> Batch:
    g = torch.Generator().manual_seed(1)
    samples = []
    for i, lab in enumerate(labels):
        n = 1 if boxes and lab else 0
        samples.append(
            Sample(
                torch.randn(3, size, size, generator=g),
                torch.tensor([[20.0, 24.0, 52.0, 60.0]] * n).view(n, 4),
                torch.full((n,), int(lab or 1), dtype=torch.int64),
                image_id=i,
                path=f"img{i}.png",
                image_label=lab,
            )
        )
    return collate(samples)


def test_weak_loss_reaches_the_detector_and_is_logged() -> None:
    model = _model()
    method = build_method("mil", model, {"alpha_schedule": "static"})
    method.train()
    losses = method.training_step(_batch([1, 2]), _batch([2, 0, 1], boxes=False), 0, 10)
    assert losses["loss_mil"].item() > 0
    assert losses["mil_images"].item() == 3.0 and losses["mil_weak_step"].item() == 1.0
    assert losses["mil_alpha"].item() == pytest.approx(0.5)
    strong = sum(losses[k] for k in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"))
    assert losses["loss"].item() == pytest.approx(
        strong.item() + 0.5 * losses["loss_mil"].item(), rel=1e-5
    )
    # the weak images' loss alone has gradients on the RoI head and the backbone
    assert isinstance(method, MIL)
    l_ws, _ = method.weak_loss(_batch([2, 0], boxes=False))
    head = model.roi_heads.box_predictor.cls_score.weight
    grads = torch.autograd.grad(l_ws, [head, model.backbone.conv1.weight])
    assert all(float(gr.abs().sum()) > 0 for gr in grads)


def test_alternating_uses_one_stream_per_step_and_gradual_alpha_ramps() -> None:
    method = build_method("mil", _model(), {"batching": "alternating", "ramp_fraction": 0.5})
    method.train()
    even = method.training_step(_batch([1]), _batch([2], boxes=False), 0, 100)
    odd = method.training_step(_batch([1]), _batch([2], boxes=False), 1, 100)
    assert even["mil_weak_step"].item() == 0.0 and "loss_rpn_cls" in even
    assert even["loss_mil"].item() == 0.0
    assert odd["mil_weak_step"].item() == 1.0 and "loss_rpn_cls" not in odd
    assert odd["loss"].item() == pytest.approx(odd["mil_alpha"].item() * odd["loss_mil"].item())
    assert isinstance(method, MIL)
    # gradual: alpha * exp(-5 (1 - t)^2), t = step / (0.5 * 100)
    assert method.alpha_at(0, 100) == pytest.approx(0.5 * math.exp(-5))
    assert method.alpha_at(25, 100) == pytest.approx(0.5 * math.exp(-5 * 0.25))
    assert method.alpha_at(50, 100) == pytest.approx(0.5)
    assert method.alpha_at(99, 100) == pytest.approx(0.5)


def test_weak_normal_false_skips_normal_images() -> None:
    method = build_method("mil", _model(), {"weak_normal": False})
    method.train()
    assert isinstance(method, MIL)
    _, stats = method.weak_loss(_batch([0, 0], boxes=False))
    assert stats["images"] == 0.0
    _, stats = method.weak_loss(_batch([0, 2], boxes=False))
    assert stats["images"] == 1.0


def test_bad_settings_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=re.escape("method.moi_benign = 'largest'")):
        build_method("mil", _model(), {"moi_benign": "largest"})
    with pytest.raises(ValueError, match=re.escape("method.batching = 'mixed'")):
        build_method("mil", _model(), {"batching": "mixed"})
    with pytest.raises(ValueError, match=re.escape("method.alpha_schedule")):
        build_method("mil", _model(), {"alpha_schedule": "cosine"})
    method = build_method("mil", _model())
    method.train()
    with pytest.raises(ValueError, match=re.escape("img1.png has none")):
        method.training_step(_batch([1]), _batch([2, None], boxes=False), 0, 10)
    # RetinaNet has no region scores: refused, naming what is missing
    retina = build_retinanet("resnet18", width_multiplier=0.25, fpn_channels=16, num_classes=2)
    with pytest.raises(ConfigError, match="region_scores"):
        build_method("mil", retina)


def test_start_fraction_delays_mil_and_top_proposals_limits_the_candidates() -> None:
    from ssmd.methods.mil import mil_weight

    assert mil_weight(49, 100, 0.5, "gradual", 0.2, 0.5) == 0.0
    assert mil_weight(50, 100, 0.5, "gradual", 0.2, 0.5) == pytest.approx(0.5 * math.exp(-5))
    assert mil_weight(60, 100, 0.5, "gradual", 0.2, 0.5) == pytest.approx(0.5 * math.exp(-1.25))
    assert mil_weight(70, 100, 0.5, "gradual", 0.2, 0.5) == pytest.approx(0.5)
    assert mil_weight(10, 100, 0.5, "static", 0.2, 0.0) == 0.5
    method = build_method("mil", _model(), {"start_fraction": 0.5, "moi_top_proposals": 3})
    method.train()
    before = method.training_step(_batch([1]), _batch([2], boxes=False), 10, 100)
    assert before["mil_weak_step"].item() == 0.0 and before["mil_images"].item() == 0.0
    after = method.training_step(_batch([1]), _batch([2], boxes=False), 60, 100)
    assert after["mil_weak_step"].item() == 1.0 and after["loss_mil"].item() > 0
    assert isinstance(method, MIL)
    seen: list[int] = []
    original = method.model.roi_outputs

    def spy(out: object, boxes: list[torch.Tensor]) -> object:
        seen.extend(len(b) for b in boxes)
        return original(out, boxes)

    method.model.roi_outputs = spy  # type: ignore[method-assign]
    method.weak_loss(_batch([2, 1], boxes=False))
    assert seen == [3, 3]
    with pytest.raises(ValueError, match="start_fraction"):
        build_method("mil", _model(), {"start_fraction": 1.0})
