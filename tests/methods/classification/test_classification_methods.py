"""Each unsupervised loss is non-zero, reaches the student and never the teacher."""

from __future__ import annotations

import pytest
import torch

from ssmd.methods.classification import (
    CLASSIFICATION_METHODS,
    ClassBatch,
    build_classification_method,
)
from ssmd.methods.classification.stsc import STSCClassification
from ssmd.models.classifiers import build_classifier

N_DATA = 32


def _model() -> torch.nn.Module:
    return build_classifier(
        "resnet18", num_classes=3, in_channels=1, width_multiplier=0.125, small_input=True
    )


def _batch(indices: list[int], labeled: bool, seed: int = 0) -> ClassBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(indices), 1, 12, 12, generator=g)
    labels = torch.eye(3)[torch.tensor(indices) % 3] if labeled else None
    return ClassBatch(
        images=x,
        images_teacher=x + 0.3 * torch.randn(x.shape, generator=g),  # another perturbation
        labels=labels,
        indices=torch.tensor(indices),
    )


def _method(name: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {"rampup": 0.0, **kw} if name != "supervised" else {}
    return build_classification_method(name, _model(), params, num_samples=N_DATA)


def test_registry_lists_the_four_methods() -> None:
    assert CLASSIFICATION_METHODS.names() == ["mean_teacher", "srcmt", "stsc", "supervised"]
    with pytest.raises(ValueError, match=r"method\.bogus"):
        build_classification_method("srcmt", _model(), {"bogus": 1})


def test_supervised_uses_labels_only() -> None:
    m = _method("supervised")
    out = m.training_step(_batch([0, 1, 2, 3], True), None, 0, 10)
    out["loss"].backward()
    assert set(out) == {"loss", "loss_sup"}
    assert float(out["loss"].detach()) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.model.parameters())


@pytest.mark.parametrize("name", ["mean_teacher", "srcmt", "stsc"])
def test_unsupervised_loss_reaches_student_not_teacher(name: str) -> None:
    m = _method(name, tc_start=0.0) if name == "stsc" else _method(name)
    m.train()
    assert not m.teacher.training  # the teacher stays in eval mode
    labeled = ClassBatch(
        torch.zeros(0, 1, 12, 12),
        torch.zeros(0, 1, 12, 12),
        torch.zeros(0, 3),
        torch.zeros(0, dtype=torch.long),
    )
    out = m.training_step(labeled, _batch(list(range(8)), False), 0, 10)
    assert float(out["loss_sup"]) == 0.0  # no labeled image: the loss is purely unsupervised
    assert float(out["loss_c"]) > 0
    out["loss"].backward()
    student = [p.grad for p in m.model.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in student)
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


@pytest.mark.parametrize("name", ["srcmt", "stsc"])
def test_relation_term_alone_reaches_student(name: str) -> None:
    m = _method(name)
    b = _batch(list(range(8)), False)
    _, fs = m.model(b.images)
    with torch.no_grad():
        _, ft = m.teacher(b.images_teacher)
    weight, loss_sc = m.extra_losses(b, fs, ft, 0, 10)["loss_sc"]
    assert weight == 1.0 and float(loss_sc.detach()) > 0
    loss_sc.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.model.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())


def _stsc() -> STSCClassification:
    m = _method("stsc", tc_start=0.0, tau=0.5)
    assert isinstance(m, STSCClassification)
    m.train()
    return m


def test_stsc_temporal_term_needs_memory_then_is_positive_and_reaches_student() -> None:
    m = _stsc()
    b = _batch(list(range(8)), False)
    _, f0 = m.model(b.images)
    # first sight: nothing remembered, L_tc = 0, the memory is filled
    _, loss0 = m.extra_losses(b, f0, f0.detach(), 0, 10)["loss_tc"]
    assert float(loss0.detach()) == 0.0
    assert bool(m.seen[:8].all()) and not bool(m.seen[8:].any())
    assert torch.allclose(m.memory[:8], f0.detach())
    # the student changes: the remembered relations differ from the current ones
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, f1 = m.model(b.images)
    gamma, loss1 = m.extra_losses(b, f1, f1.detach(), 1, 10)["loss_tc"]
    assert gamma == 1.0
    assert float(loss1.detach()) > 0
    assert m.diagnostics()["tc_substructures"] >= 1
    loss1.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.model.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())


def test_stsc_memory_relates_samples_by_index_not_batch_position() -> None:
    """Same images in another order and an unchanged student: L_tc is exactly 0."""
    m = _stsc()
    m.eval()  # BatchNorm with running statistics: features independent of the batch
    order = list(range(8))
    b = _batch(order, False)
    with torch.no_grad():
        _, f0 = m.model(b.images)
    m.extra_losses(b, f0, f0, 0, 10)
    perm = [5, 2, 7, 0, 3, 1, 6, 4]
    b2 = ClassBatch(b.images[perm], b.images_teacher[perm], None, b.indices[perm])
    _, f1 = m.model(b2.images)
    _, loss = m.extra_losses(b2, f1, f1.detach(), 1, 10)["loss_tc"]
    assert m.diagnostics()["tc_substructures"] >= 1
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    # a batch mixing remembered and new images: only the remembered ones enter R_{t-1}
    b3 = _batch([0, 1, 2, 20, 21], False)
    _, f3 = m.model(b3.images)
    m.extra_losses(b3, f3, f3.detach(), 2, 10)
    assert m.diagnostics()["tc_seen"] == 3


def test_stsc_temporal_term_off_before_tc_start() -> None:
    m = _method("stsc", tc_start=0.5)
    b = _batch(list(range(8)), False)
    _, f = m.model(b.images)
    m.extra_losses(b, f, f.detach(), 0, 10)
    _, f = m.model(b.images + 1.0)
    _, loss = m.extra_losses(b, f, f.detach(), 4, 10)["loss_tc"]
    assert float(loss.detach()) == 0.0
    assert bool(m.seen[:8].all())  # the memory is filled nevertheless


def test_stsc_memory_is_checkpointed() -> None:
    m = _stsc()
    b = _batch(list(range(8)), False)
    _, f = m.model(b.images)
    m.extra_losses(b, f, f.detach(), 0, 10)
    state = m.state_dict()
    fresh = _stsc()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.memory, m.memory) and torch.equal(fresh.seen, m.seen)


def test_teacher_follows_student_by_ema_only() -> None:
    m = _method("mean_teacher", ema_decay=0.5)
    before = [p.clone() for p in m.teacher.parameters()]
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(1.0)
    m.after_step(10)
    for b, t, s in zip(before, m.teacher.parameters(), m.model.parameters(), strict=True):
        assert torch.allclose(t, 0.5 * b + 0.5 * s)


def test_consistency_weight_ramps_up() -> None:
    m = build_classification_method("mean_teacher", _model(), {"rampup": 0.5, "consistency": 2.0})
    assert m.weight(0, 100) == pytest.approx(2.0 * torch.exp(torch.tensor(-5.0)).item())
    assert m.weight(50, 100) == 2.0
