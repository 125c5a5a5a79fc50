"""Batch-level perturbations of SSMD's two branches (Algorithm 1 lines 1-2, Eq. (8)-(9)).

The image operations are :mod:`ssmd.data.transforms.functional`'s ``rotate``, ``hflip`` and
``cutout`` (one box convention, ``xyxy`` absolute pixels); this module only composes them
into the student's and the teacher's views and adds the instance-level adversarial
perturbation, which needs the teacher network.

**Views** (:func:`make_consistency_views`), per image:

* student: ``cutout(Rot_theta(x))``;
* teacher: ``cutout'(Flip(Rot_theta(x)))`` with the *same* angle ``theta`` and independent
  cutout squares, plus ``r_adv`` later (Eq. (9)). Algorithm 1 writes
  ``cutout(Rot(Flip(x)))``, but ``Rot_theta(Flip(x)) = Flip(Rot_-theta(x))`` differs from the
  student's view by a ``2 theta`` rotation, so no anchor would have a counterpart; the text
  of Sec. 3.1 ("we first apply horizontal flip and cutout to the augmented input of the
  student branch") gives the order used here, after which ``DenseOutputs.hflip()`` maps the
  teacher's predictions exactly onto the student's anchors.
* cutout squares of side ``round(s * W / 448)`` (``s = 70`` and ``n = 5`` at the paper's
  448 px, Table 8), so they hide the same fraction of the image at every input size.

**Cutout and the targets** (our choice; the paper is silent). A square of 70 px at 448 px
hides whole nuclei. Two things follow, each switchable:

* ``min_visible``: a labeled box whose visible fraction in the student's view falls below
  it is dropped from the supervised targets (its anchors become background, which is what
  the student now sees). ``0`` keeps every box, the literal reading.
* :func:`erased_anchor_mask`: the anchors whose cell is mostly erased in *either* view are
  left out of the consistency cost: there the two views show different content by
  construction (one sees a nucleus, the other a grey square), and matching them would teach
  the student to hallucinate objects in blank squares or to erase visible ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmd.data.transforms.functional import (
    cutout_squares,
    drop_degenerate,
    fill_squares,
    hflip,
    rotate,
    squares_mask,
    visible_fraction,
)
from ssmd.models.detectors.retinanet import DenseOutputs

__all__ = [
    "ConsistencyViews",
    "erased_anchor_mask",
    "instance_adversarial_perturbation",
    "make_consistency_views",
    "per_image_unit",
    "random_angles",
    "scaled_cutout_size",
]


@dataclass
class ConsistencyViews:
    """The two branches' inputs of one batch (Algorithm 1 lines 1-2, before ``Adv``).

    Attributes:
        student: ``Tensor[B, C, H, W]``, ``cutout(Rot(x))``.
        teacher: ``Tensor[B, C, H, W]``, ``cutout'(Flip(Rot(x)))`` (no flip if disabled).
        boxes: per image ``Tensor[N_i, 4]`` ``xyxy`` in the student's (rotated) view, boxes
            that became smaller than 1 px dropped; ``None`` when no boxes were given.
        labels: the labels of ``boxes``.
        angles: rotation angle of each image in degrees (counter-clockwise).
        flipped: whether the teacher's view is mirrored (its outputs need ``hflip()``).
        erased: ``Tensor[B, H, W]`` bool, pixels erased by cutout in the student's view or
            in the teacher's (mapped back to the student's geometry); ``None`` without cutout.
        dropped: number of labeled boxes removed because they were mostly erased.
    """

    student: Tensor
    teacher: Tensor
    boxes: list[Tensor] | None
    labels: list[Tensor] | None
    angles: list[float]
    flipped: bool
    erased: Tensor | None = None
    dropped: int = 0


def random_angles(
    n: int, max_degrees: float, generator: torch.Generator | None = None
) -> list[float]:
    """``n`` angles uniform in ``[-max_degrees, max_degrees]`` (all 0 if ``max_degrees == 0``)."""
    if max_degrees <= 0:
        return [0.0] * n
    u = torch.rand(n, generator=generator)  # (n,)
    return [float(a) for a in (2.0 * u - 1.0) * max_degrees]


def scaled_cutout_size(size: int, width: int, reference: int = 448) -> int:
    """Cutout side for an input of ``width``: ``round(size * width / reference)``, at least 1."""
    return max(1, round(size * width / reference))


def make_consistency_views(
    images: Tensor,
    boxes: Sequence[Tensor] | None = None,
    labels: Sequence[Tensor] | None = None,
    *,
    rotate_degrees: float = 10.0,
    flip: bool = True,
    cutout_n: int = 5,
    cutout_size: int = 70,
    cutout_reference: int = 448,
    min_visible: float = 0.0,
    generator: torch.Generator | None = None,
) -> ConsistencyViews:
    """Build the student's and the teacher's views of a batch (module docstring).

    Args:
        images: ``Tensor[B, C, H, W]``, normalised (rotation and cutout fill with 0, the
            dataset mean).
        boxes: optional per-image ``Tensor[N_i, 4]`` ``xyxy`` to rotate with the images.
        labels: their labels (required with ``boxes``).
        rotate_degrees: maximum absolute angle (one angle per image, shared by both views);
            0 disables the rotation.
        flip: mirror the teacher's view.
        cutout_n: squares per image and view (0 disables cutout).
        cutout_size: square side at ``cutout_reference`` px width (scaled to ``W``).
        cutout_reference: the width ``cutout_size`` refers to (the paper's 448).
        min_visible: drop the given boxes whose visible fraction in the student's view is
            below this (module docstring; 0 keeps all).
        generator: RNG for angles and squares (default: torch's global one).

    Returns:
        :class:`ConsistencyViews`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if (boxes is None) != (labels is None):
        raise ValueError("boxes and labels must be given together")
    b, _, h, w = images.shape
    angles = random_angles(b, rotate_degrees, generator)
    box_list = list(boxes) if boxes is not None else [images.new_zeros((0, 4))] * b
    out_boxes: list[Tensor] | None = list(boxes) if boxes is not None else None
    out_labels: list[Tensor] | None = list(labels) if labels is not None else None
    rotated = images
    if any(a != 0.0 for a in angles):
        rotated, new_boxes = rotate(images, box_list, angles)  # (B, C, H, W)
        if out_boxes is not None and out_labels is not None:
            kept = [
                drop_degenerate(bx, lb, (h, w))
                for bx, lb in zip(new_boxes, out_labels, strict=True)
            ]
            out_boxes = [k[0] for k in kept]
            out_labels = [k[1] for k in kept]
    teacher = hflip(rotated, box_list)[0] if flip else rotated  # (B, C, H, W)
    student = rotated
    erased: Tensor | None = None
    dropped = 0
    if cutout_n > 0:
        side = min(scaled_cutout_size(cutout_size, w, cutout_reference), h, w)
        sq_s = cutout_squares(b, cutout_n, side, h, w, generator)  # (B, n, 4)
        sq_t = cutout_squares(b, cutout_n, side, h, w, generator)  # independent squares
        student = fill_squares(student, sq_s)  # new tensor
        teacher = fill_squares(teacher, sq_t)
        erased_s = squares_mask(sq_s, h, w)  # (B, H, W)
        erased_t = squares_mask(sq_t, h, w)
        if flip:
            erased_t = erased_t.flip(-1)  # into the student's geometry
        erased = (erased_s | erased_t).to(images.device)
        if out_boxes is not None and out_labels is not None and min_visible > 0:
            for i, (bx, lb) in enumerate(zip(out_boxes, out_labels, strict=True)):
                keep = visible_fraction(bx.cpu(), erased_s[i]) >= min_visible  # (N_i,)
                dropped += int((~keep).sum())
                keep = keep.to(bx.device)
                out_boxes[i], out_labels[i] = bx[keep], lb[keep]
    return ConsistencyViews(
        student, teacher, out_boxes, out_labels, angles, flip, erased=erased, dropped=dropped
    )


def erased_anchor_mask(
    erased: Tensor, outputs: DenseOutputs, levels: int | None = None, threshold: float = 0.5
) -> Tensor:
    """Anchors whose feature-map cell is mostly erased: ``Tensor[B, N]`` bool.

    Args:
        erased: ``Tensor[B, H, W]`` bool (:attr:`ConsistencyViews.erased`).
        outputs: dense predictions on that view (gives each level's grid and anchor count).
        levels: the finest ``levels`` levels, as the consistency cost (``None``: all).
        threshold: a cell counts as erased when more than this fraction of its pixels is.

    Returns:
        Rows in the order of :func:`~ssmd.models.detectors.retinanet.flatten_levels`, so the
        mask lines up with the per-anchor terms of the consistency cost.
    """
    n = outputs.num_levels if levels is None else int(levels)
    frac = erased[:, None].to(torch.float32)  # (B, 1, H, W)
    rows = []
    for lvl in outputs.cls_logits[:n]:  # (B, A, K+1, H_l, W_l)
        b, a = int(lvl.shape[0]), int(lvl.shape[1])
        cells = (
            F.adaptive_avg_pool2d(frac, (int(lvl.shape[-2]), int(lvl.shape[-1]))) > threshold
        )  # (B, 1, H_l, W_l)
        per_anchor = cells.permute(0, 2, 3, 1).expand(-1, -1, -1, a)  # (B, H_l, W_l, A)
        rows.append(per_anchor.reshape(b, -1))  # (B, H_l W_l A)
    return torch.cat(rows, dim=1)  # (B, N)


def per_image_unit(t: Tensor) -> Tensor:
    """``t / ||t||_2`` per image (dim 0); images with ``||t|| = 0`` stay 0."""
    norms = t.flatten(1).norm(dim=1)  # (B,)
    scale = torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(t.dtype).tiny), 0.0)
    return t * scale.view(-1, *([1] * (t.ndim - 1)))  # (B, C, H, W)


def instance_adversarial_perturbation(
    teacher_fn: Callable[[Tensor], DenseOutputs],
    images: Tensor,
    student: DenseOutputs,
    loss_fn: Callable[[DenseOutputs, DenseOutputs], Tensor],
    xi: float = 5e-7,
    epsilon: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Instance-level adversarial perturbation ``r_adv`` of the teacher's input (Eq. (8)-(9)).

    ``r`` is a Gaussian draw with unit L2 norm per image; the teacher sees ``X + xi r``
    (Eq. (8)); ``g = d loss / d r`` with the loss counting only the anchors where the
    student is confident (``loss_fn`` applies the indicator of Eq. (9)); ``r_adv =
    epsilon g / ||g||`` per image. An image whose ``g`` is 0 (no anchor passed the
    threshold) gets ``r_adv = 0``: no direction is better than another there.

    Costs one extra teacher forward with activations kept and one backward to the input
    (no weight gradients). ``xi`` only sets the point where ``g`` is taken; since ``g`` is
    renormalised, in float32 ``xi = 5e-7`` (below the resolution of pixel values around 1)
    makes ``g`` the input gradient at ``X`` itself, ``xi`` times smaller. ``epsilon = 2`` is
    an L2 norm over the whole image (``3 x 448 x 448``: an RMS of about ``0.0026`` per value
    of the normalised image), concentrated where the loss is most sensitive.

    Args:
        teacher_fn: teacher forward whose outputs are aligned to the student's anchors
            (e.g. ``lambda x: teacher(x).hflip()``); its parameters need not require grad.
        images: teacher's view ``Tensor[B, C, H, W]`` before the perturbation.
        student: student predictions on its view (detached here).
        loss_fn: ``loss_fn(student, teacher_aligned)``, the consistency cost restricted to
            confident anchors and *not* detaching the teacher.
        xi: Eq. (8) scale of the random start, ``0 < xi <= 1``.
        epsilon: L2 norm of ``r_adv`` per image.
        generator: RNG of the random start.

    Returns:
        ``r_adv``, ``Tensor[B, C, H, W]`` without gradient; add it to the teacher's input.
    """
    if not 0.0 < xi <= 1.0:
        raise ValueError(f"xi must be in (0, 1], got {xi}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    base = images.detach()
    r0 = torch.randn(base.shape, generator=generator, dtype=base.dtype, device="cpu")
    r = per_image_unit(r0.to(base.device)).requires_grad_(True)  # (B, C, H, W)
    fixed = student.detach()
    with torch.enable_grad():
        loss = loss_fn(fixed, teacher_fn(base + xi * r))  # Eq. (8)
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, r, allow_unused=True)
    if grad is None:
        return torch.zeros_like(base)
    return epsilon * per_image_unit(grad.detach())  # Eq. (9), (B, C, H, W)
