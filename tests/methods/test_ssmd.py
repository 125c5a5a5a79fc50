"""SSMD method: teacher/student gradients, EMA through after_step, equivalence with the
supervised step when every component is off, rotated boxes, options and validation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor, nn

from ssmd.data.transforms.functional import rotate_boxes
from ssmd.methods import perturb
from ssmd.methods.base import METHODS, build_method
from ssmd.methods.ssmd import SSMD
from ssmd.methods.supervised import Supervised
from ssmd.models import build_retinanet
from ssmd.models.layers.noisy_residual import NoisyResidualBlock, strip_feature_perturbations
from ssmd.structures.sample import Batch, Sample, collate

OFF: dict[str, object] = {
    "flip": False,
    "rotate": 0.0,
    "cutout": False,
    "iap": False,
    "feature_noise": "none",
}


def _tiny(**kw: object) -> nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
        **kw,  # type: ignore[arg-type]
    )


def _batch(labeled: bool, n: int = 2, size: int = 128, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        if labeled:
            boxes = torch.tensor([[20.0, 24.0, 52.0, 60.0], [70.0, 64.0, 100.0, 90.0]])
            labels = torch.tensor([1, 1])
        else:
            boxes, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        image = torch.randn(3, size, size, generator=g)
        samples.append(Sample(image, boxes, labels, image_id=i, is_labeled=labeled))
    return collate(samples)


def test_registered_with_yaml_friendly_defaults() -> None:
    assert METHODS.get("ssmd") is SSMD
    assert SSMD.uses_unlabeled
    yaml.safe_dump(SSMD.defaults)  # the engine writes the resolved config as YAML
    method = build_method("ssmd", _tiny(), {"alpha": 0.9, "feature_noise": "dropblock"})
    assert isinstance(method, SSMD) and method.ema.decay == 0.9
    with pytest.raises(ValueError, match=r"method\.beta"):
        build_method("ssmd", _tiny(), {"beta": 1})
    combo = build_method("ssmd", _tiny(), {"feature_noise": "nrb+dropout"})
    assert len(combo.noise_layers) == 4  # type: ignore[attr-defined]
    # the teacher is a copy with the same (combined) layers, so Eq. (2) pairs every key
    assert set(combo.teacher.state_dict()) == set(combo.model.state_dict())  # type: ignore[attr-defined]


def test_teacher_is_frozen_outside_the_optimizer_and_in_eval() -> None:
    method = SSMD(_tiny())
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert teacher_ids and not teacher_ids & {id(p) for p in method.trainable_parameters()}
    assert all(not p.requires_grad for p in method.teacher.parameters())
    method.train()
    assert method.model.training and not method.teacher.training
    assert method.inference_model("teacher") is method.teacher
    assert method.inference_model() is method.model
    with pytest.raises(ValueError, match="teacher"):
        method.inference_model("ema")
    nrbs = [m for m in method.teacher.modules() if isinstance(m, NoisyResidualBlock)]
    assert len(nrbs) == 4 and not any(m.training for m in nrbs)  # identity in the teacher
    noisy = SSMD(_tiny(), teacher_noise=True).train()
    t_nrbs = [m for m in noisy.teacher.modules() if isinstance(m, NoisyResidualBlock)]
    assert all(m.training for m in t_nrbs)
    assert not any(m.training for m in noisy.teacher.modules() if isinstance(m, nn.BatchNorm2d))


def test_unsupervised_loss_is_nonzero_reaches_student_and_not_teacher() -> None:
    method = SSMD(_tiny(), tau=0.0).train()  # tau = 0: the adversarial step is active
    loss = method.unlabeled_consistency(_batch(False).images)
    assert loss.item() > 1e-4
    loss.backward()
    student = method.model
    for name in (
        "head.cls_logits.weight",
        "backbone.conv1.weight",
        "backbone.layer2.feature_noise.conv.weight",
    ):
        grad = student.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in method.teacher.parameters())


def test_training_step_and_teacher_moves_only_by_ema() -> None:
    method = SSMD(_tiny(), alpha=0.99).train()
    losses = method.training_step(_batch(True), _batch(False, seed=1), step=10, max_iters=100)
    assert {"loss", "loss_cls", "loss_box", "loss_cons", "cons_weight"} <= set(losses)
    lam = losses["cons_weight"].item()
    assert lam == pytest.approx(float(torch.tensor(-5 * (1 - 0.4) ** 2).exp()), rel=1e-6)
    expected = losses["loss_cls"] + losses["loss_box"] + lam * losses["loss_cons"]
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["loss_cons_unlabeled"].item() > 0
    assert losses["loss_cons"].item() == pytest.approx(
        (losses["loss_cons_labeled"] + losses["loss_cons_unlabeled"]).item(), rel=1e-6
    )

    teacher_before = copy.deepcopy(method.teacher.state_dict())
    losses["loss"].backward()
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    optimizer.step()
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # the optimiser never touches the teacher
    name = "head.cls_logits.weight"
    t_old = teacher_before[name].clone()
    s_new = method.model.get_parameter(name).detach().clone()
    assert not torch.equal(t_old, s_new)
    method.after_step(0)
    got = method.teacher.get_parameter(name)
    assert torch.allclose(got, 0.99 * t_old + 0.01 * s_new, atol=1e-7)
    bn = "backbone.bn1.running_mean"  # float buffers are averaged too ("ema" policy)
    s_bn = method.model.get_buffer(bn)
    assert torch.allclose(method.teacher.get_buffer(bn), 0.99 * teacher_before[bn] + 0.01 * s_bn)


def test_all_switches_off_equals_supervised_step() -> None:
    model = _tiny()
    reference = Supervised(copy.deepcopy(model)).train()
    method = SSMD(model, consistency_weight=0.0, **OFF).train()  # type: ignore[arg-type]
    labeled, unlabeled = _batch(True), _batch(False, seed=1)
    want = reference.training_step(labeled, None, 5, 100)
    got = method.training_step(labeled, unlabeled, 5, 100)
    assert torch.equal(got["loss"], want["loss"])
    assert torch.equal(got["loss_cls"], want["loss_cls"])
    assert torch.equal(got["loss_box"], want["loss_box"])
    assert got["cons_weight"].item() == 0.0


def test_supervised_loss_uses_rotated_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    method = SSMD(_tiny(), **{**OFF, "rotate": 10.0}).train()  # type: ignore[arg-type]
    monkeypatch.setattr(perturb, "random_angles", lambda n, m, g=None: [8.0] * n)
    seen: list[list[dict[str, Tensor]]] = []
    original = method.model.loss

    def spy(outputs: object, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        seen.append(targets)
        return original(outputs, targets)  # type: ignore[operator, no-any-return]

    monkeypatch.setattr(method.model, "loss", spy)
    labeled = _batch(True)
    method.training_step(labeled, None, 0, 10)
    want = rotate_boxes(labeled.boxes[0], 8.0, (128, 128))
    assert torch.allclose(seen[0][0]["boxes"], want)
    assert not torch.allclose(seen[0][0]["boxes"], labeled.boxes[0])


def test_checkpoint_keys_load_into_a_plain_detector() -> None:
    method = SSMD(_tiny())
    state = method.state_dict()
    teacher = {k[len("teacher.") :]: v for k, v in state.items() if k.startswith("teacher.")}
    student = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    assert teacher.keys() == student.keys()
    _tiny().load_state_dict(strip_feature_perturbations(teacher))
    _tiny().load_state_dict(strip_feature_perturbations(student))


def test_validation_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="softmax"):
        SSMD(_tiny(activation="sigmoid"))
    cases: list[tuple[str, object]] = [
        ("feature_noise", "gaussian"),
        ("teacher_init", "random"),
        ("components", "cq"),
        ("levels", 6),
        ("ramp", "linear"),
        ("xi", 0.0),
        ("tau", 1.5),
        ("alpha", 2.0),
        ("ema_buffers", "mean"),
    ]
    for key, value in cases:
        with pytest.raises(ValueError, match=rf"method\.{key}"):
            SSMD(_tiny(), **{key: value})  # type: ignore[arg-type]
    method = SSMD(_tiny(), feature_noise="none")
    with pytest.raises(ValueError, match="multiple of the largest stride"):
        method.make_views(torch.randn(1, 3, 64, 192))


@pytest.mark.parametrize(("tau", "expected"), [(1.0, [2]), (0.0, [2, 2])])
def test_adversarial_pass_only_for_images_with_confident_anchors(
    tau: float, expected: list[int]
) -> None:
    """tau = 1: no anchor passes, r_adv = 0 exactly, so the extra teacher pass is skipped."""
    method = SSMD(_tiny(), tau=tau, rotate=0.0, cutout=False).train()
    sizes: list[int] = []
    method.teacher.register_forward_pre_hook(lambda _, args: sizes.append(int(args[0].shape[0])))
    images = _batch(False).images
    views = method.make_views(images)
    student = method.model(views.student)
    plain = SSMD(_tiny(), iap=False, rotate=0.0, cutout=False)
    plain.teacher.load_state_dict(method.teacher.state_dict())
    out = method.teacher_predictions(views, student)
    assert sizes == expected
    same = plain.teacher_predictions(views, student)
    close = torch.allclose(out.box_deltas[0], same.box_deltas[0])
    assert close == (tau == 1.0)  # perturbed teacher input only when the pass ran
    assert method.confident_images(student).tolist() == [tau < 1.0] * 2


def test_consistency_leaves_out_the_erased_anchors_only() -> None:
    torch.manual_seed(0)
    method = SSMD(_tiny(), **{**OFF, "cutout": True, "cutout_n": 2, "cutout_size": 140})
    images = _batch(False).images
    views = method.make_views(images)
    assert views.erased is not None and bool(views.erased.any())
    student = method.model(views.student)
    keep = method.anchor_mask(views, student)
    assert keep is not None
    erased = perturb.erased_anchor_mask(views.erased, student)
    assert torch.equal(keep, ~erased)  # True = anchor counts in the cost
    assert 0 < int(keep.sum()) < keep.numel()
    literal = SSMD(_tiny(), **{**OFF, "cutout": True, "cutout_mask": False})
    assert literal.anchor_mask(literal.make_views(images), student) is None
    # the cost only sees the kept anchors: changing the teacher on erased anchors changes nothing
    teacher = method.teacher_predictions(views, student)
    base = method.consistency(student, teacher, keep)
    bumped_logits = [t.clone() for t in teacher.cls_logits]
    level0 = erased[:, : bumped_logits[0][0].numel() // bumped_logits[0].shape[2]]
    rows = bumped_logits[0].permute(0, 3, 4, 1, 2).reshape(1 * images.shape[0], -1, 2)
    rows[level0.reshape(images.shape[0], -1)] += torch.tensor([5.0, -5.0])
    a, k, h, w = bumped_logits[0].shape[1:]
    bumped_logits[0] = rows.view(-1, h, w, a, k).permute(0, 3, 4, 1, 2).contiguous()
    bumped = type(teacher)(bumped_logits, teacher.box_deltas, teacher.image_size)
    assert torch.allclose(method.consistency(student, bumped, keep), base)
    assert not torch.allclose(method.consistency(student, bumped, None), base)


def test_ssmd_rotation_replaces_the_pipeline_rotation() -> None:
    assert SSMD(_tiny()).augment_overrides() == {"rotate": 0.0}
    assert SSMD(_tiny(), rotate=0.0).augment_overrides() == {}
    assert Supervised(_tiny()).augment_overrides() == {}


def test_teacher_weights_load_a_trained_detector_and_alpha_1_keeps_it(tmp_path: Path) -> None:
    from ssmd.engine.checkpoint import save_checkpoint

    trained = _tiny()
    torch.manual_seed(1)
    for p in trained.parameters():
        p.data.normal_()
    path = tmp_path / "best.pt"
    save_checkpoint({"kind": "ssmd-model", "model": trained.state_dict()}, path)
    method = SSMD(_tiny(), alpha=1.0, teacher_weights=str(path))  # NRB keys are not in the file
    reference = trained.state_dict()
    for k, v in method.teacher.state_dict().items():
        if ".feature_noise." not in f".{k}":
            assert torch.equal(v, reference[k]), k
    before = copy.deepcopy(method.teacher.state_dict())
    for p in method.model.parameters():
        p.data.add_(1.0)
    method.after_step(1)
    assert all(torch.equal(v, before[k]) for k, v in method.teacher.state_dict().items())
    # an SSMD run's best.pt (with NRB keys) also starts a teacher without feature noise
    save_checkpoint({"kind": "ssmd-model", "model": method.model.state_dict()}, path)
    plain = SSMD(_tiny(), feature_noise="none", teacher_weights=str(path))
    assert torch.equal(
        plain.teacher.state_dict()["backbone.conv1.weight"],
        method.model.state_dict()["backbone.conv1.weight"],
    )
    other = build_retinanet("resnet18", width_multiplier=0.5, fpn_channels=16, head_convs=1)
    save_checkpoint({"kind": "ssmd-model", "model": other.state_dict()}, path)
    with pytest.raises(ValueError, match="teacher_weights"):
        SSMD(_tiny(), teacher_weights=str(path))
    save_checkpoint({"kind": "ssmd-train", "method": {}}, path)
    with pytest.raises(ValueError, match=r"best\.pt"):
        SSMD(_tiny(), teacher_weights=str(path))


def test_iap_fires_on_confident_scores_and_not_below_tau() -> None:
    """Eq. (9)'s indicator acts on a detector whose foreground probability is ~0.99, not ~0.8."""
    labeled, unlabeled = _batch(True), _batch(False, seed=1)
    confident = SSMD(_tiny(prior_prob=0.99), cutout=False).train()
    got = confident.training_step(labeled, unlabeled, step=10, max_iters=100)
    assert got["fg_max"].item() == pytest.approx(0.99, abs=0.005)
    assert got["iap_images"].item() == 1.0
    assert got["iap_images_labeled"].item() == 1.0 and got["iap_images_unlabeled"].item() == 1.0
    assert got["iap_anchors"].item() == 1.0  # every anchor is above 0.95
    assert got["iap_tau"].item() == pytest.approx(0.95)

    timid = SSMD(_tiny(prior_prob=0.8), cutout=False).train()
    low = timid.training_step(labeled, unlabeled, step=10, max_iters=100)
    assert low["fg_max"].item() == pytest.approx(0.8, abs=0.03)
    assert low["iap_images"].item() == 0.0 and low["iap_anchors"].item() == 0.0
    assert low["iap_images_unlabeled"].item() == 0.0
    # the diagnostics are logged, never back-propagated
    expected = low["loss_cls"] + low["loss_box"] + low["cons_weight"] * low["loss_cons"]
    assert low["loss"].item() == pytest.approx(expected.item(), rel=1e-6)

    # relative threshold: tau times the batch's best score, so the same detector fires
    relative = SSMD(_tiny(prior_prob=0.8), cutout=False, tau_mode="relative").train()
    rel = relative.training_step(labeled, unlabeled, step=10, max_iters=100)
    assert rel["iap_tau"].item() == pytest.approx(0.95 * rel["fg_max"].item(), rel=0.01)
    assert rel["iap_images"].item() == 1.0
    assert 0.0 < rel["iap_anchors"].item() <= 1.0

    off = SSMD(_tiny(prior_prob=0.99), cutout=False, iap=False).train()
    assert off.training_step(labeled, unlabeled, 10, 100)["iap_images"].item() == 0.0


def test_iap_perturbs_the_teacher_view_when_it_fires() -> None:
    method = SSMD(_tiny(prior_prob=0.99), cutout=False, rotate=0.0).train()
    images = _batch(False).images
    views = method.make_views(images)
    student = method.model(views.student)
    stats: dict[str, list[float]] = {}
    perturbed = method.teacher_predictions(views, student, stats)
    assert stats["iap_images"] == [2.0, 2.0]
    with torch.no_grad():
        clean = method.teacher(views.teacher).hflip()
    assert not torch.allclose(perturbed.box_deltas[0], clean.box_deltas[0])


def test_cutout_diagnostics_are_logged() -> None:
    torch.manual_seed(0)
    method = SSMD(_tiny(), **{**OFF, "cutout": True, "cutout_n": 2, "cutout_size": 140}).train()
    got = method.training_step(_batch(True), _batch(False, seed=1), 10, 100)
    assert 0.0 < got["cutout_masked_anchors"].item() < 1.0
    assert 0.0 < got["cutout_masked_w"].item() < 1.0
    literal = SSMD(_tiny(), **{**OFF, "cutout": True, "cutout_mask": False}).train()
    none = literal.training_step(_batch(True), _batch(False, seed=1), 10, 100)
    assert none["cutout_masked_anchors"].item() == 0.0


def test_box_level_cutout_mask_drops_anchors_whose_box_is_hidden() -> None:
    from ssmd.data.transforms.functional import visible_fraction
    from ssmd.models.detectors.retinanet import DenseOutputs

    images = torch.zeros(1, 3, 128, 128)
    cell = SSMD(_tiny(), **{**OFF, "cutout": True})
    box = SSMD(_tiny(), **{**OFF, "cutout": True, "cutout_mask": "box"})
    views = cell.make_views(images)
    erased = torch.zeros(1, 128, 128, dtype=torch.bool)
    erased[0, :, 40:] = True  # every pixel with x >= 40
    views.erased = erased
    with torch.no_grad():
        out = cell.model(images)
    zero = DenseOutputs(
        [torch.zeros_like(t) for t in out.cls_logits],
        [torch.zeros_like(t) for t in out.box_deltas],
        out.image_size,
    )  # deltas 0: every predicted box is its anchor
    keep_cell = cell.anchor_mask(views, zero)
    keep_box = box.anchor_mask(views, zero)
    assert keep_cell is not None and keep_box is not None
    anchors = cell.model.anchors(zero)  # (N, 4)
    hidden = 1.0 - visible_fraction(anchors, erased[0])  # independent per-box computation
    assert torch.equal(keep_box[0], keep_cell[0] & ~(hidden > 0.25))
    # the P3 cell at x in [32, 40) is visible, but its wide anchors reach into x >= 40
    a = 9
    rows = slice((4 * 16 + 4) * a, (4 * 16 + 4) * a + a)  # level 0, y = 4, x = 4
    assert bool(keep_cell[0, rows].all()) and not bool(keep_box[0, rows].all())
    assert bool(keep_box[0, rows].any())
    # a teacher predicting 4x larger boxes (dw = dh = log 4) hides every anchor of that cell
    big = DenseOutputs(
        zero.cls_logits,
        [
            torch.zeros_like(t).index_fill(2, torch.tensor([2, 3]), math.log(4.0))
            for t in out.box_deltas
        ],
        out.image_size,
    )
    keep_teacher = box.anchor_mask(views, zero, big)
    assert keep_teacher is not None and not bool(keep_teacher[0, rows].any())
    assert not bool((keep_teacher & ~keep_box).any())  # only ever drops more


def test_new_options_are_validated() -> None:
    cases: list[tuple[str, object]] = [
        ("tau_mode", "quantile"),
        ("cutout_mask", "pixels"),
        ("cutout_mask_fraction", 1.0),
        ("fill", "black"),
        ("fill", True),
    ]
    for key, value in cases:
        with pytest.raises(ValueError, match=rf"method\.{key}"):
            SSMD(_tiny(), **{key: value})  # type: ignore[arg-type]
    assert SSMD(_tiny(), fill=-2.0).fill == -2.0
    assert SSMD(_tiny(), cutout_mask=False).cutout_mask == "none"
    assert SSMD(_tiny()).cutout_mask == "cell" and SSMD.defaults["fill"] == "median"
