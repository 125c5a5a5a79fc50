"""Online pseudo-label teacher: view maps and box transforms on hand cases, the F1 threshold
against a hand case, pseudo labels from the teacher's weak view reaching the student only,
the teacher moving by EMA only, burn-in, init_weights, and an exact resume."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

from ssmd.config import load_config
from ssmd.engine.checkpoint import save_checkpoint
from ssmd.engine.loader import BatchStream
from ssmd.engine.trainer import Trainer
from ssmd.methods.base import METHODS, build_method
from ssmd.methods.online_teacher import OnlineTeacher, f1_optimal_threshold
from ssmd.methods.strong_aug import (
    AxisAlignedMap,
    intensity_jitter,
    scale_jitter,
    strong_view,
    weak_view,
)
from ssmd.models import build_retinanet
from ssmd.structures.sample import Batch, Sample, collate
from ssmd.tasks.detection import run_training

# strong view without its random parts, so a test can compute the targets by hand
PLAIN: dict[str, Any] = {"jitter_p": 0.0, "cutout_n": 0, "scale_min": 1.0, "scale_max": 1.0}


def _tiny(**kw: Any) -> nn.Module:
    args: dict[str, Any] = {
        "width_multiplier": 0.25,
        "fpn_channels": 16,
        "head_convs": 1,
        "anchor_sizes": (8, 16, 32, 64, 128),
    }
    return build_retinanet("resnet18", **{**args, **kw})


def _batch(n: int = 2, size: int = 128, seed: int = 0, labeled: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[20.0, 24.0, 52.0, 60.0], [70.0, 64.0, 100.0, 90.0]])
    return collate(
        [
            Sample(
                torch.randn(3, size, size, generator=g),
                boxes,
                torch.tensor([1, 1]),
                image_id=i,
                is_labeled=labeled,
            )
            for i in range(n)
        ]
    )


# ------------------------------------------------------------------------- views, boxes
def test_axis_aligned_map_flip_scale_compose_and_inverse() -> None:
    box = [torch.tensor([[10.0, 4.0, 20.0, 12.0]])]
    flip = AxisAlignedMap(torch.tensor([[-1.0, 64.0, 1.0, 0.0]], dtype=torch.float64))
    assert flip.apply(box)[0].tolist() == [[44.0, 4.0, 54.0, 12.0]]  # x' = 64 - x, corners swap
    scale = AxisAlignedMap(torch.tensor([[1.5, 0.0, 0.5, 0.0]], dtype=torch.float64))
    both = flip.then(scale)  # scale after flip
    assert both.apply(box)[0].tolist() == [[66.0, 2.0, 81.0, 6.0]]
    assert both.inverse().apply(both.apply(box))[0].tolist() == [[10.0, 4.0, 20.0, 12.0]]
    assert AxisAlignedMap.identity(1).apply(box)[0].tolist() == box[0].tolist()
    with pytest.raises(ValueError, match="2 box tensors"):
        flip.apply(box * 2)


def test_weak_view_flips_each_image_inside_its_own_region() -> None:
    a = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)
    b = torch.zeros(1, 2, 4, 6)
    b[..., :, :4] = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    images = torch.cat([a, b])  # image 1 is 4 x 4, padded right to 6
    view = weak_view(images, [(4, 6), (4, 4)], flips=torch.tensor([True, True]))
    assert torch.equal(view.images[0], a[0].flip(-1))
    assert torch.equal(view.images[1, :, :, :4], b[0, :, :, :4].flip(-1))
    assert torch.equal(view.images[1, :, :, 4:], torch.zeros(2, 4, 2))  # padding stays
    boxes = [torch.tensor([[1.0, 0.0, 2.0, 1.0]])] * 2
    assert [t.tolist() for t in view.transform.apply(boxes)] == [
        [[4.0, 0.0, 5.0, 1.0]],  # W = 6
        [[2.0, 0.0, 3.0, 1.0]],  # its own W = 4
    ]
    kept = weak_view(images, flips=torch.tensor([False, False]))
    assert torch.equal(kept.images, images)
    assert kept.transform.apply(boxes)[0].tolist() == [[1.0, 0.0, 2.0, 1.0]]
    assert torch.equal(images[0], a[0])  # input not modified


def test_scale_jitter_moves_boxes_with_the_image() -> None:
    images = torch.zeros(1, 1, 10, 20)
    images[0, 0, 2:6, 4:10] = 1.0  # an object at xyxy (4, 2, 10, 6)
    out, transform = scale_jitter(images, 2.0, size_divisor=1)
    assert out.shape == (1, 1, 20, 40)
    box = transform.apply([torch.tensor([[4.0, 2.0, 10.0, 6.0]])])[0]
    assert box.tolist() == [[8.0, 4.0, 20.0, 12.0]]
    inside = out[0, 0, 5:11, 9:19]  # well inside the mapped box: still the object
    assert bool((inside > 0.99).all()) and float(out[0, 0, :2].abs().max()) < 1e-6
    # per-axis factors of the rounded size are exact: 10 x 20 at 0.75 -> 8 x 15 (round half even)
    small, t = scale_jitter(images, 0.75, size_divisor=1)
    assert small.shape[-2:] == (8, 15)
    mapped = t.apply([torch.tensor([[4.0, 2.0, 10.0, 6.0]])])[0]
    assert mapped[0].tolist() == pytest.approx([3.0, 1.6, 7.5, 4.8])  # x * 15/20, y * 8/10
    padded, _ = scale_jitter(images, 0.75, size_divisor=16)
    assert padded.shape[-2:] == (16, 16)


def test_intensity_jitter_is_identity_off_and_keeps_grey_images_grey() -> None:
    torch.manual_seed(0)
    images = torch.randn(3, 3, 8, 8)
    assert torch.equal(intensity_jitter(images, p=0.0), images)
    grey = torch.randn(2, 1, 8, 8).expand(2, 3, 8, 8)
    out = intensity_jitter(grey, brightness=0.4, contrast=0.4, saturation=0.4, p=1.0)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])
    assert not torch.allclose(out, grey)  # brightness / contrast did change it
    # hand case, saturation only: x - grey is multiplied by t = 1 + 0.4 (2u - 1)
    colour = torch.randn(1, 3, 4, 4)
    torch.manual_seed(1)
    jittered = intensity_jitter(colour, brightness=0.0, contrast=0.0, saturation=0.4, p=1.0)
    torch.manual_seed(1)
    torch.rand(1)  # the on/off draw
    torch.rand(1, 1, 1, 1), torch.rand(1, 1, 1, 1)  # brightness, contrast draws
    t = 1.0 + (2.0 * torch.rand(1, 1, 1, 1) - 1.0) * 0.4
    g = colour.mean(dim=1, keepdim=True)
    assert torch.allclose(jittered, g + (colour - g) * t, atol=1e-6)


def test_strong_view_records_its_scale_and_keeps_box_order() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    view = strong_view(
        images, [(64, 64), (64, 48)], scale_range=(1.5, 1.5), size_divisor=128, cutout_n=3
    )
    assert view.images.shape == (2, 3, 128, 128)  # 96 x 96, padded to 128
    assert view.image_sizes == [(96, 96), (96, 72)]
    boxes = view.transform.apply([torch.tensor([[2.0, 4.0, 10.0, 12.0]]), torch.zeros(0, 4)])
    assert boxes[0].tolist() == [[3.0, 6.0, 15.0, 18.0]] and boxes[1].shape == (0, 4)
    with pytest.raises(ValueError, match="2D batch"):
        strong_view(images[0])


# ------------------------------------------------------------------------- threshold
def _det(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> dict:
    return {
        "boxes": torch.tensor(boxes).view(-1, 4),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels or [1] * len(scores)),
    }


def test_f1_threshold_hand_case() -> None:
    a, b, c = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5.0, 5.0, 15.0, 15.0]
    far = [50.0, 50.0, 60.0, 60.0]
    dets = [
        # image 1: 0.9 hits A, 0.8 misses, 0.7 hits B, 0.6 duplicates A (A taken: a miss)
        _det([a, far, b, [0.0, 0.0, 10.0, 9.0]], [0.9, 0.8, 0.7, 0.6]),
        _det([c], [0.75]),  # image 2: hits C
    ]
    gt = [torch.tensor([a, b]), torch.tensor([c])]
    # pooled by score: hit, miss, hit, hit, miss; G = 3; F1_k = 2 TP_k / (k + 3):
    # k=1: 2/4, k=2: 2/5, k=3: 4/6, k=4: 6/7, k=5: 6/8 -> best k = 4, threshold 0.7
    choice = f1_optimal_threshold(dets, gt)
    assert choice.threshold == pytest.approx(0.7)
    assert choice.f1 == pytest.approx(6 / 7)
    assert (choice.precision, choice.recall) == pytest.approx((0.75, 1.0))
    assert (choice.detections, choice.ground_truth) == (4, 3)
    # at IoU 0.5, the box (0, 0, 10, 9) would also match A, but A is taken by the 0.9 box
    strict = f1_optimal_threshold(dets, gt, iou_threshold=0.95)  # (0,0,10,9) vs A: 0.9
    assert strict.threshold == pytest.approx(0.7)


def test_f1_threshold_ties_classes_and_nothing_to_match() -> None:
    a, b = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
    far = [50.0, 50.0, 60.0, 60.0]
    # a tie at 0.5 between a hit and a miss: the cut cannot separate them
    tied = f1_optimal_threshold([_det([a, far, b], [0.9, 0.5, 0.5])], [torch.tensor([a, b])])
    # k=1: 2/3; k=3 (both 0.5s): 4/5 -> 0.5; the cut k=2 (F1 2/4) is not allowed anyway
    assert tied.threshold == pytest.approx(0.5) and tied.f1 == pytest.approx(0.8)
    # classes: a detection of class 2 does not match a class-1 box
    wrong = f1_optimal_threshold([_det([a], [0.9], [2])], [torch.tensor([a])], [torch.tensor([1])])
    assert wrong.threshold == math.inf and wrong.f1 == 0.0
    right = f1_optimal_threshold([_det([a], [0.9], [1])], [torch.tensor([a])], [torch.tensor([1])])
    assert right.threshold == pytest.approx(0.9) and right.f1 == pytest.approx(1.0)
    empty = f1_optimal_threshold([_det([], [])], [torch.tensor([a])])
    assert empty.threshold == math.inf and empty.detections == 0


# ------------------------------------------------------------------------- the method
class _FixedDetector(nn.Module):
    """A detector-shaped toy: ``postprocess`` returns fixed detections (in the input's pixels,
    cycled over the batch), ``forward`` records its input, ``loss`` records its targets."""

    cls_loss = "focal"

    def __init__(self, detections: list[dict[str, Tensor]]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.detections = detections
        self.inputs: list[Tensor] = []
        self.targets: list[list[dict[str, Tensor]]] = []

    def forward(self, images: Tensor) -> Tensor:
        self.inputs.append(images.detach().clone())
        return images * self.w

    def loss(self, outputs: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        self.targets.append(targets)
        n = sum(len(t["boxes"]) for t in targets)
        return {"loss_cls": self.w * outputs.mean() + n, "loss_box": 0.5 * self.w**2}

    def postprocess(
        self, outputs: Tensor, image_sizes: list[tuple[int, int]] | None = None
    ) -> list[dict[str, Tensor]]:
        dets = [self.detections[i % len(self.detections)] for i in range(len(outputs))]
        return [{k: v.clone() for k, v in d.items()} for d in dets]

    def predict(
        self, images: Tensor, image_sizes: list[tuple[int, int]] | None = None
    ) -> list[dict[str, Tensor]]:
        return self.postprocess(self(images), image_sizes)


def _toy_batch() -> Batch:
    samples = [
        Sample(torch.rand(1, 32, 64), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1]), 0),
        Sample(torch.rand(1, 32, 48), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1]), 1),
    ]
    return collate([s.replace(is_labeled=False) for s in samples])


def test_registered_defaults_and_validation() -> None:
    assert METHODS.get("online_teacher") is OnlineTeacher and OnlineTeacher.uses_unlabeled
    yaml.safe_dump(OnlineTeacher.defaults)
    method = build_method("online_teacher", _tiny(), {"ema_decay": 0.9, "threshold": 0.7})
    assert isinstance(method, OnlineTeacher) and method.ema.decay == 0.9
    assert float(method.pseudo_threshold) == pytest.approx(0.7)
    for bad in ({"threshold": "high"}, {"threshold": 1.5}, {"unsup_terms": "loss_cls"}):
        with pytest.raises(ValueError, match=r"method\.(threshold|unsup_terms)"):
            OnlineTeacher(_tiny(), **bad)
    with pytest.raises(ValueError, match=r"method\.require_focal.*'ce'"):
        OnlineTeacher(_tiny(cls_loss="ce"))
    OnlineTeacher(_tiny(cls_loss="ce"), require_focal=False)
    with pytest.raises(ValueError, match=r"split\.val"):
        OnlineTeacher(_tiny()).set_validation_samples([], [])


def test_pseudo_labels_come_from_the_teacher_weak_view_and_reach_the_student_only() -> None:
    detections = [
        {  # in the teacher's (flipped) view: only the 0.9 box passes threshold 0.5
            "boxes": torch.tensor([[10.0, 4.0, 20.0, 12.0], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([1, 1]),
        }
    ] * 2
    method = OnlineTeacher(
        _FixedDetector(detections),
        burn_in_iters=0,
        threshold=0.5,
        weak_flip=1.0,
        require_focal=True,
        size_divisor=1,
        **{**PLAIN, "scale_min": 1.5, "scale_max": 1.5},
    ).train()
    unlabeled = _toy_batch()
    labeled = _toy_batch()
    student, teacher = method.model, method.teacher
    assert isinstance(student, _FixedDetector) and isinstance(teacher, _FixedDetector)
    losses = method.training_step(labeled, unlabeled, step=0, max_iters=10)

    # the teacher saw the weak view: each image flipped inside its own width (64, 48)
    assert len(teacher.inputs) == 1 and not teacher.targets  # it predicts, it is never trained
    seen = teacher.inputs[0]
    assert torch.equal(seen[0], unlabeled.images[0].flip(-1))
    assert torch.equal(seen[1, :, :, :48], unlabeled.images[1, :, :, :48].flip(-1))
    # the student's unsupervised targets: unflipped (x' = W_i - x), then scaled by 1.5
    sup_targets, unsup_targets = student.targets
    assert sup_targets[0]["boxes"].tolist() == [[0.0, 0.0, 1.0, 1.0]]  # labeled: ground truth
    assert unsup_targets[0]["boxes"].tolist() == [[66.0, 6.0, 81.0, 18.0]]  # 64 - (20, 10)
    assert unsup_targets[1]["boxes"].tolist() == [[42.0, 6.0, 57.0, 18.0]]  # 48 - (20, 10)
    # (the unlabeled batch's own boxes, its hidden ground truth, are never a target)
    assert student.inputs[1].shape[-2:] == (48, 96)  # the strong view, 1.5 x
    assert losses["pseudo_boxes_per_image"].item() == 1.0
    assert losses["pseudo_image_fraction"].item() == 1.0
    assert losses["pseudo_threshold"].item() == pytest.approx(0.5)
    # loss = supervised + unsup_weight * unsupervised, diagnostics not included
    sup = losses["loss_cls"] + losses["loss_box"]
    assert losses["loss"].item() == pytest.approx((sup + losses["loss_unsup"]).item())
    assert losses["loss_unsup"].item() == pytest.approx(
        (losses["unsup_loss_cls"] + losses["unsup_loss_box"]).item()
    )
    only_cls = OnlineTeacher(
        _FixedDetector(detections), burn_in_iters=0, threshold=0.5, unsup_terms=["loss_cls"]
    )
    out = only_cls.training_step(labeled, unlabeled, step=0, max_iters=10)
    assert out["loss_unsup"].item() == pytest.approx(out["unsup_loss_cls"].item())
    wrong = OnlineTeacher(
        _FixedDetector(detections), burn_in_iters=0, threshold=0.5, unsup_terms=["x"]
    )
    with pytest.raises(ValueError, match=r"method\.unsup_terms.*loss_box"):
        wrong.training_step(labeled, unlabeled, step=0, max_iters=10)


def test_images_without_pseudo_boxes_are_left_out_unless_keep_empty() -> None:
    none = [
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
    ]
    for keep_empty, calls in ((False, 1), (True, 2)):
        method = OnlineTeacher(
            _FixedDetector(none * 2), burn_in_iters=0, threshold=0.5, keep_empty=keep_empty, **PLAIN
        ).train()
        losses = method.training_step(_toy_batch(), _toy_batch(), step=0, max_iters=10)
        student = method.model
        assert isinstance(student, _FixedDetector) and len(student.targets) == calls
        assert losses["pseudo_image_fraction"].item() == 0.0
        if not keep_empty:
            assert losses["loss_unsup"].item() == 0.0
        else:  # background only: the image is still trained on, with no box
            assert len(student.targets[1][0]["boxes"]) == 0


def test_runs_on_any_detector_with_losses_and_detections() -> None:
    toy = build_method("online_teacher", _FixedDetector([]), {"threshold": 0.5})
    assert isinstance(toy, OnlineTeacher) and OnlineTeacher.requires == ("losses", "detections")
    frcnn = pytest.importorskip("ssmd.models.detectors.faster_rcnn")
    model = frcnn.build_faster_rcnn(
        backbone="resnet18",
        width_multiplier=0.25,
        fpn_channels=32,
        anchor_sizes=(8, 16, 32, 64, 128),
        representation_size=64,
        box_batch_size_per_image=64,
        rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=200,
    )
    method = build_method("online_teacher", model, {"burn_in_iters": 0, "threshold": 0.3})
    method.train()
    losses = method.training_step(_batch(), _batch(seed=1, labeled=False), step=0, max_iters=4)
    assert losses["pseudo_boxes_per_image"].item() > 0  # an untrained RoI head: p ~ 0.5
    assert {"unsup_loss_rpn_cls", "unsup_loss_cls"} <= set(losses)
    assert losses["loss_unsup"].item() > 0
    losses["loss_unsup"].backward()
    grad = method.model.get_parameter("backbone.conv1.weight").grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in method.teacher.parameters())


def test_unsupervised_loss_is_nonzero_reaches_student_and_not_teacher() -> None:
    # prior_prob 0.5: the teacher is confident everywhere, so it gives pseudo boxes
    method = OnlineTeacher(_tiny(prior_prob=0.5), burn_in_iters=0, threshold=0.3).train()
    method.finish_burn_in()
    loss, stats = method.unsupervised_loss(_batch(labeled=False))
    assert stats["pseudo_boxes_per_image"].item() > 0
    assert loss.item() > 1e-3
    loss.backward()
    for name in ("head.cls_logits.weight", "head.box_deltas.weight", "backbone.conv1.weight"):
        grad = method.model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.trainable_parameters()}
    method.train()
    assert method.model.training and not method.teacher.training
    assert method.inference_model("teacher") is method.teacher
    with pytest.raises(ValueError, match="teacher"):
        method.inference_model("ema")


def test_burn_in_is_supervised_then_teacher_copies_student_and_moves_only_by_ema() -> None:
    method = OnlineTeacher(_tiny(prior_prob=0.5), burn_in_iters=1, threshold=0.3, ema_decay=0.9)
    method.train()
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-4)
    name = "head.cls_logits.weight"
    initial = method.teacher.get_parameter(name).detach().clone()

    burn = method.training_step(_batch(), _batch(seed=1, labeled=False), step=0, max_iters=4)
    assert "pseudo_boxes_per_image" not in burn and burn["loss_unsup"].item() == 0.0
    assert burn["loss"].item() == pytest.approx((burn["loss_cls"] + burn["loss_box"]).item())
    optimizer.zero_grad()
    burn["loss"].backward()
    optimizer.step()
    method.after_step(0)
    assert torch.equal(method.teacher.get_parameter(name), initial)  # no EMA in burn-in
    assert not bool(method.burned_in)

    losses = method.training_step(_batch(), _batch(seed=1, labeled=False), step=1, max_iters=4)
    assert bool(method.burned_in) and losses["pseudo_boxes_per_image"].item() > 0
    copied = method.teacher.get_parameter(name).detach().clone()
    assert torch.equal(copied, method.model.get_parameter(name))  # teacher <- student
    assert not torch.equal(copied, initial)
    teacher_before = copy.deepcopy(method.teacher.state_dict())
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # the optimiser never moves the teacher
    student = method.model.get_parameter(name).detach().clone()
    assert not torch.equal(student, copied)
    method.after_step(1)
    assert torch.allclose(method.teacher.get_parameter(name), 0.9 * copied + 0.1 * student)
    bn = "backbone.bn1.running_mean"
    s_bn = method.model.get_buffer(bn)
    assert torch.allclose(method.teacher.get_buffer(bn), 0.9 * teacher_before[bn] + 0.1 * s_bn)


class _Validation:
    """One labeled validation image whose teacher detections are the fixed ones below."""

    def __init__(self) -> None:
        a, b = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
        gt = torch.tensor([a, b])
        self.samples = [Sample(torch.zeros(1, 32, 32), gt, torch.tensor([1, 1]), 0)]
        # a hit at 0.9, a miss at 0.6, a hit at 0.4; G = 2: F1 2/3, 2/4, 4/5 -> threshold 0.4
        self.detections = [_det([a, [0.0, 20.0, 5.0, 30.0], b], [0.9, 0.6, 0.4])]


def test_auto_threshold_is_chosen_on_validation_images_once_and_restored() -> None:
    val = _Validation()
    method = OnlineTeacher(_FixedDetector(val.detections), burn_in_iters=0, **PLAIN)
    method.set_validation_samples(val.samples, [0], transform=None, batch_size=4)
    method.finish_burn_in()
    assert float(method.pseudo_threshold) == pytest.approx(0.4)
    assert float(method.threshold_f1) == pytest.approx(0.8)
    state = method.state_dict()
    assert {"burned_in", "pseudo_threshold", "threshold_f1"} <= set(state)
    restored = OnlineTeacher(_FixedDetector(val.detections), burn_in_iters=0, **PLAIN)
    restored.load_state_dict(state)
    assert bool(restored.burned_in) and float(restored.pseudo_threshold) == pytest.approx(0.4)
    # the choice is not repeated: without validation samples it would raise
    out = restored.training_step(_toy_batch(), _toy_batch(), step=3, max_iters=10)
    assert out["pseudo_threshold"].item() == pytest.approx(0.4)
    assert out["threshold_f1"].item() == pytest.approx(0.8)
    fresh = OnlineTeacher(_FixedDetector(val.detections), burn_in_iters=0, **PLAIN)
    with pytest.raises(RuntimeError, match="validation images"):
        fresh.training_step(_toy_batch(), _toy_batch(), step=0, max_iters=10)


def test_init_weights_start_student_and_teacher_from_a_checkpoint(tmp_path: Path) -> None:
    source = _tiny()
    with torch.no_grad():
        source.get_parameter("head.cls_logits.bias").fill_(0.25)
    save_checkpoint({"kind": "ssmd-model", "model": source.state_dict()}, tmp_path / "best.pt")
    method = OnlineTeacher(
        _tiny(), burn_in_iters=0, threshold=0.5, init_weights=str(tmp_path / "best.pt")
    )
    bias = method.model.get_parameter("head.cls_logits.bias")
    assert torch.all(bias == 0.25)
    method.finish_burn_in()
    assert torch.all(method.teacher.get_parameter("head.cls_logits.bias") == 0.25)
    with pytest.raises(ValueError, match=r"method\.init_weights.*not found"):
        OnlineTeacher(_tiny(), init_weights=str(tmp_path / "missing.pt"))
    save_checkpoint({"kind": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"method\.init_weights.*kind"):
        OnlineTeacher(_tiny(), init_weights=str(tmp_path / "other.pt"))
    save_checkpoint(
        {"kind": "ssmd-model", "model": _tiny(fpn_channels=8).state_dict()}, tmp_path / "x.pt"
    )
    with pytest.raises(ValueError, match=r"method\.init_weights.*does not match"):
        OnlineTeacher(_tiny(), init_weights=str(tmp_path / "x.pt"))


# ------------------------------------------------------------------------- resume
def _samples(n: int) -> list[Sample]:
    g = torch.Generator().manual_seed(3)
    return [
        Sample(
            torch.randn(3, 128, 128, generator=g),
            torch.tensor([[20.0, 24.0, 52.0, 60.0], [70.0, 64.0, 100.0, 90.0]]),
            torch.tensor([1, 1]),
            image_id=i,
        )
        for i in range(n)
    ]


def _trainer(samples: list[Sample]) -> Trainer:
    torch.manual_seed(0)
    method = OnlineTeacher(
        _tiny(prior_prob=0.5), burn_in_iters=1, threshold="auto", ema_decay=0.9, cutout_size=20
    )
    method.set_validation_samples(samples, [4, 5])
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    labeled = BatchStream(samples, [0, 1], batch_size=1, seed=1, is_labeled=True)
    unlabeled = BatchStream(samples, [2, 3], batch_size=2, seed=2, is_labeled=False)
    return Trainer(method, opt, sched, labeled, unlabeled, max_iters=4)


def test_resume_after_burn_in_gives_the_same_next_steps(tmp_path: Path) -> None:
    samples = _samples(6)
    full = _trainer(samples)
    losses = []
    for _ in range(4):
        full.run_step()
        full.step += 1
        losses.append(full.last_losses)
    assert losses[0]["loss_unsup"] == 0.0 and losses[3]["pseudo_boxes_per_image"] > 0
    first = _trainer(samples)
    for _ in range(2):
        first.run_step()
        first.step += 1
    first.save(tmp_path / "mid.pt")
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    resumed = _trainer(samples)
    resumed.resume(tmp_path / "mid.pt")
    method = resumed.method
    method.set_validation_samples([], [])  # never asked again: the threshold is stored
    assert isinstance(method, OnlineTeacher) and bool(method.burned_in)
    for i in (2, 3):
        resumed.run_step()
        resumed.step += 1
        assert resumed.last_losses == pytest.approx(losses[i], rel=0, abs=1e-6)
    full_teacher = full.method.state_dict()
    for k, v in method.state_dict().items():
        assert torch.allclose(v.double(), full_teacher[k].double(), atol=1e-6), k


# ------------------------------------------------------------------------- engine
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
    "train.max_iters=3",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "train.progress=false",
]


def test_run_training_hands_validation_images_and_logs_pseudo_boxes(tmp_path: Path) -> None:
    out = tmp_path / "ot"
    config = load_config(
        None,
        [
            f"output_dir={out}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *TINY,
            "method.name=online_teacher",
            "method.burn_in_iters=1",
            "method.cutout_size=20",
            "method.cutout_reference=128",
        ],
    )
    summary = run_training(config, log=lambda _: None)
    assert summary["method"] == "online_teacher" and (out / "best.pt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert "train/pseudo_boxes_per_image" not in train_rows[0]  # step 1: burn-in
    last = train_rows[-1]
    assert {"train/pseudo_boxes_per_image", "train/pseudo_image_fraction"} <= set(last)
    assert "train/pseudo_threshold" in last and "train/threshold_f1" in last
    from ssmd.engine.checkpoint import load_checkpoint

    state = load_checkpoint(out / "last.pt")["method"]
    assert bool(state["burned_in"]) and not math.isnan(float(state["pseudo_threshold"]))
