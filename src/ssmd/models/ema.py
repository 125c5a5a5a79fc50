"""Exponential moving average (EMA) of a network's weights: the mean teacher of SSMD Eq. (2).

``theta_t^n = alpha * theta_t^(n-1) + (1 - alpha) * theta_s^n`` (Tarvainen & Valpola's mean
teacher, SSMD paper Eq. (2), ``alpha = 0.99`` in Sec. 4.5.5).

Unlike ``timm.utils.ModelEmaV2``, the averaged network is not owned by the EMA object: the
method registers it as its own ``teacher`` attribute, so checkpoints hold ``teacher.*`` keys
that load into a plain detector, and :class:`ModelEma` only carries the update rule (decay,
warm-up and buffer policy). Everything runs under ``@torch.no_grad()``.

**Buffer policy** (BatchNorm ``running_mean`` / ``running_var``): ``"ema"`` (default)
averages floating-point buffers with the same ``alpha`` as the weights, so the statistics
match the averaged weights (timm's ``ModelEmaV2``, Unbiased Teacher); ``"copy"`` takes the
student's buffers as they are. Integer buffers (``num_batches_tracked``) are always copied.
The teacher is meant to run in ``eval()`` mode, normalising with these buffers, so its
forward passes never change them.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

__all__ = ["BufferPolicy", "ModelEma", "TeacherInit", "create_teacher"]

BufferPolicy = Literal["ema", "copy"]
TeacherInit = Literal["copy", "independent"]


def _redraw_(module: nn.Module, generator: torch.Generator | None) -> None:
    """Re-draw every parameter tensor from ``N(mean, std)`` of its current values.

    Used for an independently initialised teacher without knowing the factory that built
    the network: each tensor keeps the scale its initialiser gave it (kaiming convs keep
    their standard deviation) while constant tensors (BatchNorm weights of 1, zero biases,
    the RetinaNet prior-probability bias) stay exactly as they are.
    """
    with torch.no_grad():
        for p in module.parameters():
            if not p.is_floating_point() or p.numel() < 2:
                continue
            std = float(p.std())
            if std == 0.0:
                continue
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device="cpu")
            p.copy_((noise * std + float(p.mean())).to(p.device))


def create_teacher(
    student: nn.Module, init: TeacherInit = "copy", generator: torch.Generator | None = None
) -> nn.Module:
    """A teacher network for Eq. (2): a deep copy of ``student`` that is never optimised.

    Args:
        student: the network being trained (with any feature-perturbation layers already
            inserted, so the teacher has the same structure and state-dict keys).
        init: ``"copy"`` (default): the teacher starts equal to the student, as in the
            mean-teacher reference implementation. ``"independent"``: the paper's reading
            ("both theta_0^t and theta_0^s are independently initialized", Sec. 3.1): every
            parameter tensor is re-drawn from a normal distribution with the mean and
            standard deviation of the student's tensor (see :func:`_redraw_`).
        generator: RNG of the independent draw (default: torch's global one).

    Returns:
        The teacher, in ``eval()`` mode, with ``requires_grad=False`` on every parameter.
    """
    if init not in ("copy", "independent"):
        raise ValueError(f"teacher init must be 'copy' or 'independent', got {init!r}")
    teacher = copy.deepcopy(student)
    if init == "independent":
        _redraw_(teacher, generator)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


class ModelEma:
    """The EMA update rule of Eq. (2), with an explicit buffer policy and optional warm-up.

    Args:
        decay: ``alpha`` of Eq. (2), in ``[0, 1]``.
        buffers: ``"ema"`` or ``"copy"`` for floating-point buffers (module docstring).
        warmup: if true, step ``n`` (0-based) uses ``min(alpha, 1 - 1 / (n + 1))`` — the
            mean-teacher warm-up, so the teacher follows the student closely at first
            (step 0 copies it). Off by default: the SSMD paper uses a constant ``alpha``.
    """

    def __init__(self, decay: float = 0.99, buffers: BufferPolicy = "ema", warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay (alpha) must be in [0, 1], got {decay}")
        if buffers not in ("ema", "copy"):
            raise ValueError(f"EMA buffer policy must be 'ema' or 'copy', got {buffers!r}")
        self.decay = float(decay)
        self.buffers: BufferPolicy = buffers
        self.warmup = bool(warmup)

    def decay_at(self, step: int | None = None) -> float:
        """``alpha`` used after optimiser step ``step`` (0-based; ``None``: no warm-up)."""
        if not self.warmup or step is None:
            return self.decay
        return min(self.decay, 1.0 - 1.0 / (step + 1))

    @torch.no_grad()
    def update(self, teacher: nn.Module, student: nn.Module, step: int | None = None) -> float:
        """``teacher <- alpha * teacher + (1 - alpha) * student`` in place (Eq. (2)).

        Args:
            teacher: the averaged network (same structure as ``student``).
            student: the trained network.
            step: the optimiser step just taken (for the warm-up).

        Returns:
            The ``alpha`` that was used.

        Raises:
            ValueError: the two networks have different parameter or buffer names.
        """
        decay = self.decay_at(step)
        t_params = dict(teacher.named_parameters())
        s_params = dict(student.named_parameters())
        t_bufs = dict(teacher.named_buffers())
        s_bufs = dict(student.named_buffers())
        if t_params.keys() != s_params.keys() or t_bufs.keys() != s_bufs.keys():
            diff = sorted((t_params.keys() ^ s_params.keys()) | (t_bufs.keys() ^ s_bufs.keys()))
            raise ValueError(
                "teacher and student differ in structure; keys in only one of them: "
                + ", ".join(diff[:8])
            )
        for name, t in t_params.items():
            t.mul_(decay).add_(s_params[name].detach(), alpha=1.0 - decay)
        for name, tb in t_bufs.items():
            sb = s_bufs[name]
            if self.buffers == "ema" and tb.is_floating_point():
                tb.mul_(decay).add_(sb, alpha=1.0 - decay)
            else:
                tb.copy_(sb)
        return decay
