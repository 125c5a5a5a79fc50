"""Mean-teacher EMA (SSMD Eq. (2)): update by hand, buffer policy, warm-up, teacher creation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssmd.models.ema import ModelEma, create_teacher


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _perturbed(net: nn.Module) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()
    net(torch.randn(8, 3))  # moves BN running stats and num_batches_tracked


def test_update_is_alpha_teacher_plus_one_minus_alpha_student() -> None:
    student = _net()
    teacher = create_teacher(student)
    _perturbed(student)
    t_before = teacher[0].weight.clone()
    s_now = student[0].weight.detach().clone()
    used = ModelEma(0.99).update(teacher, student)
    assert used == 0.99
    assert torch.allclose(teacher[0].weight, 0.99 * t_before + 0.01 * s_now, atol=1e-7)
    # one element by hand
    expected = 0.99 * float(t_before[1, 2]) + 0.01 * float(s_now[1, 2])
    assert float(teacher[0].weight[1, 2]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("policy", ["ema", "copy"])
def test_buffer_policy(policy: str) -> None:
    student = _net()
    teacher = create_teacher(student)
    _perturbed(student)
    mean_before = teacher[1].running_mean.clone()
    ModelEma(0.9, buffers=policy).update(teacher, student)  # type: ignore[arg-type]
    s_mean = student[1].running_mean
    if policy == "ema":
        assert torch.allclose(teacher[1].running_mean, 0.9 * mean_before + 0.1 * s_mean)
    else:
        assert torch.equal(teacher[1].running_mean, s_mean)
    # integer buffers are always copied
    assert int(teacher[1].num_batches_tracked) == int(student[1].num_batches_tracked) == 1


def test_warmup_follows_student_first() -> None:
    ema = ModelEma(0.99, warmup=True)
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(1) == pytest.approx(0.5)
    assert ema.decay_at(10_000) == 0.99
    assert ModelEma(0.99).decay_at(0) == 0.99
    student = _net()
    teacher = create_teacher(student)
    _perturbed(student)
    ema.update(teacher, student, step=0)
    assert torch.equal(teacher[0].weight, student[0].weight.detach())


def test_teacher_is_frozen_eval_copy() -> None:
    student = _net()
    teacher = create_teacher(student)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for a, b in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_independent_teacher_keeps_scale_and_constants() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16))
    teacher = create_teacher(student, "independent", generator=torch.Generator().manual_seed(3))
    w_s, w_t = student[0].weight.detach(), teacher[0].weight
    assert not torch.allclose(w_s, w_t)
    assert float(w_t.std()) == pytest.approx(float(w_s.std()), rel=0.1)
    assert torch.equal(teacher[1].weight, student[1].weight.detach())  # constant 1 stays
    assert torch.equal(teacher[1].bias, student[1].bias.detach())  # constant 0 stays
    assert all(not p.requires_grad for p in teacher.parameters())


def test_validation() -> None:
    with pytest.raises(ValueError, match="decay"):
        ModelEma(1.5)
    with pytest.raises(ValueError, match="buffer"):
        ModelEma(0.9, buffers="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init"):
        create_teacher(_net(), "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="structure"):
        ModelEma().update(_net(), nn.Sequential(nn.Linear(3, 4)))
