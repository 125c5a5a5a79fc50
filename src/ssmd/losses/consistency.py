"""Adaptive consistency cost of SSMD (Sec. 3.1, Eq. (4)-(5), Algorithm 1 lines 11-12).

For every anchor ``i`` of every regularised pyramid level, with the student's and the
(aligned) teacher's class distributions ``p_s, p_t`` (softmax over ``K + 1``, index 0 =
background) and box deltas ``d_s, d_t`` (Eq. (3)):

``l_i = KL(p_t || p_s) + sum_{k in x,y,w,h} (d_s^k - d_t^k)^2``          (Eq. (5))
``W_i = ((1 - p_s[0])^2 + (1 - p_t[0])^2) / 2``                          (Eq. (4))
``loss = sum_i W_i l_i / sum_i W_i``   (over all anchors, levels and images of the batch)

Choices, all documented at the parameter they belong to:

* **KL direction**: ``KL(p_t || p_s) = sum_c p_t (log p_t - log p_s)``, the teacher's
  distribution being the target. The paper writes ``KL(p_s^c, p_t^c)`` with the student
  first, which is the argument order of ``F.kl_div(log p_s, p_t)`` — and that computes
  ``KL(p_t || p_s)``; CSD's reference code (from which SSMD's consistency derives) uses
  exactly this call with the detached other branch as the target.
* **W is detached**: otherwise the network could lower the cost by predicting background
  everywhere (``W -> 0``) instead of becoming consistent.
* **Teacher outputs are detached** by default (no gradient reaches the teacher, whose
  weights move only by Eq. (2)); the adversarial step of Eq. (9) turns this off to
  differentiate through the teacher towards its input.
* **Normalisation**: divided by ``sum_i W_i``, a W-weighted mean: the soft version of CSD's
  mean over the anchors its background filter keeps. Its magnitude does not grow with the
  image size (number of anchors) or with the number of objects, so ``lambda`` keeps one
  meaning across resolutions and training stages; with ``acc=False`` (``W = 1``) it is the
  plain mean over anchors, i.e. CSD's unweighted consistency (Table 3).
* **Levels**: every level has weight 1 (Sec. 3.1); ``levels=n`` regularises the ``n``
  finest levels (``P3``, ``P3..P5``, ...) for Table 9 — the fine levels hold the small
  objects (nuclei, small lesions) and most anchors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ssmd.structures.dense import flatten_levels

if TYPE_CHECKING:
    from ssmd.structures.dense import DenseOutputs

__all__ = [
    "COMPONENTS",
    "adaptive_consistency_loss",
    "adaptive_weight",
    "consistency_terms",
    "kl_teacher_student",
]

COMPONENTS = "cxywh"
"""Consistency terms of Table 7: ``c`` class KL, ``x y w h`` box-delta MSEs."""

_DELTA_INDEX = {
    4: {"x": 0, "y": 1, "w": 2, "h": 3},
    6: {"x": 0, "y": 1, "z": 2, "w": 3, "h": 4, "d": 5},
}


def adaptive_weight(p_s_bg: Tensor, p_t_bg: Tensor) -> Tensor:
    """Eq. (4): ``((1 - p_s[0])^2 + (1 - p_t[0])^2) / 2``, element-wise.

    Args:
        p_s_bg: student background probabilities, any shape.
        p_t_bg: teacher background probabilities, same shape.
    """
    return ((1.0 - p_s_bg) ** 2 + (1.0 - p_t_bg) ** 2) / 2.0


def kl_teacher_student(student_logits: Tensor, teacher_logits: Tensor, dim: int = -1) -> Tensor:
    """``KL(p_t || p_s) = sum_c p_t (log p_t - log p_s)`` over ``dim``, from logits (stable)."""
    log_ps = student_logits.log_softmax(dim)
    log_pt = teacher_logits.log_softmax(dim)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim)


def _check_components(components: str, num_deltas: int) -> None:
    letters = "c" + "".join(_DELTA_INDEX.get(num_deltas, {}))
    if num_deltas not in _DELTA_INDEX:
        raise ValueError(f"box deltas must have 4 (2D) or 6 (3D) channels, got {num_deltas}")
    if not components or len(set(components)) != len(components) or set(components) - set(letters):
        raise ValueError(
            f"consistency components must be distinct letters of {letters!r}, got {components!r}"
        )


def consistency_terms(
    student: DenseOutputs,
    teacher: DenseOutputs,
    components: str = COMPONENTS,
    levels: int | None = None,
    detach_teacher: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-anchor ingredients of Eq. (4)-(5) for the ``levels`` finest pyramid levels.

    Args:
        student: student predictions (softmax ``K + 1`` logits).
        teacher: teacher predictions already aligned with the student's anchors (e.g.
            ``teacher_on_flipped.hflip()``), same shapes.
        components: subset of ``"cxywh"`` (Table 7).
        levels: number of finest levels (``None``: all).
        detach_teacher: cut the graph to the teacher's outputs.

    Returns:
        ``(divergence, fg_student, p_s_bg, p_t_bg)``, each ``Tensor[B, N]`` over the
        selected anchors in flat order: ``KL + sum of MSEs`` per anchor, the student's
        summed foreground probability ``1 - p_s[0]``, and both background probabilities.

    Raises:
        ValueError: mismatched outputs, bad ``components`` or ``levels``.
    """
    n_levels = student.num_levels
    if teacher.num_levels != n_levels:
        raise ValueError(
            f"student has {n_levels} pyramid levels but the teacher has {teacher.num_levels}"
        )
    for name, a, b in (
        ("cls_logits", student.cls_logits, teacher.cls_logits),
        ("box_deltas", student.box_deltas, teacher.box_deltas),
    ):
        for lvl, (s, t) in enumerate(zip(a, b, strict=True)):
            if s.shape != t.shape:
                raise ValueError(
                    f"{name}[{lvl}]: student {tuple(s.shape)} vs teacher {tuple(t.shape)}"
                )
    if student.cls_logits[0].shape[2] < 2:
        raise ValueError(
            "the adaptive consistency cost needs softmax outputs with a background class "
            f"(K + 1 >= 2 logits), got {student.cls_logits[0].shape[2]}"
        )
    num_deltas = int(student.box_deltas[0].shape[2])
    _check_components(components, num_deltas)
    n_sel = n_levels if levels is None else int(levels)
    if not 1 <= n_sel <= n_levels:
        raise ValueError(f"levels must be in 1..{n_levels} (or None for all), got {levels}")

    s_logits = flatten_levels(student.cls_logits[:n_sel])  # (B, N, K+1)
    t_logits = flatten_levels(teacher.cls_logits[:n_sel])  # (B, N, K+1)
    s_deltas = flatten_levels(student.box_deltas[:n_sel])  # (B, N, 4)
    t_deltas = flatten_levels(teacher.box_deltas[:n_sel])  # (B, N, 4)
    if detach_teacher:
        t_logits, t_deltas = t_logits.detach(), t_deltas.detach()

    divergence = s_logits.new_zeros(s_logits.shape[:2])  # (B, N)
    if "c" in components:
        divergence = divergence + kl_teacher_student(s_logits, t_logits)  # (B, N)
    idx = [_DELTA_INDEX[num_deltas][k] for k in components if k != "c"]
    if idx:
        sel = torch.tensor(idx, device=s_deltas.device)
        diff = s_deltas.index_select(-1, sel) - t_deltas.index_select(-1, sel)  # (B, N, |idx|)
        divergence = divergence + (diff**2).sum(-1)  # Eq. (5), (B, N)
    p_s_bg = s_logits.softmax(-1)[..., 0]  # (B, N)
    p_t_bg = t_logits.softmax(-1)[..., 0]  # (B, N)
    return divergence, 1.0 - p_s_bg, p_s_bg, p_t_bg


def adaptive_consistency_loss(
    student: DenseOutputs,
    teacher: DenseOutputs,
    components: str = COMPONENTS,
    levels: int | None = None,
    acc: bool = True,
    fg_threshold: float | None = None,
    detach_teacher: bool = True,
    anchor_mask: Tensor | None = None,
) -> Tensor:
    """The adaptive consistency cost of Eq. (4)-(5), a W-weighted mean over anchors.

    Args:
        student: student predictions on its view (softmax ``K + 1`` logits).
        teacher: teacher predictions mapped onto the student's anchors (flip undone).
        components: subset of ``"cxywh"`` (Table 7).
        levels: regularise the ``levels`` finest pyramid levels (Table 9); ``None``: all.
        acc: ``True``: Eq. (4) weights; ``False``: ``W = 1`` (CSD's cost, Table 3).
        fg_threshold: if given, only anchors whose student summed foreground probability
            exceeds it count (the indicator ``1[sum p_s^c > tau]`` of Eq. (9)).
        detach_teacher: no gradient to the teacher's outputs (default; module docstring).
        anchor_mask: optional ``Tensor[B, N]`` bool, ``False`` for anchors left out (e.g.
            erased by cutout in one of the views, :func:`ssmd.methods.perturb.erased_anchor_mask`).

    Returns:
        Scalar ``sum_i W_i l_i / sum_i W_i`` over the batch; ``0`` (with a zero gradient)
        when no anchor passes ``fg_threshold``.
    """
    divergence, fg_s, p_s_bg, p_t_bg = consistency_terms(
        student, teacher, components, levels, detach_teacher
    )
    # (B, N): Eq. (4), detached; W = 1 without ACC
    weight = adaptive_weight(p_s_bg, p_t_bg).detach() if acc else torch.ones_like(divergence)
    if fg_threshold is not None:
        weight = weight * (fg_s.detach() > fg_threshold).to(weight.dtype)  # (B, N)
    if anchor_mask is not None:
        if anchor_mask.shape != weight.shape:
            raise ValueError(
                f"anchor_mask has shape {tuple(anchor_mask.shape)}, the selected anchors "
                f"{tuple(weight.shape)}"
            )
        weight = weight * anchor_mask.to(weight.dtype)  # (B, N)
    total = weight.sum()
    return (weight * divergence).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)
