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
* ``teacher_cutout=False`` (not in the paper, which cuts out both branches): the teacher's
  view has no squares, a *clean* target; the squares then perturb the student only.

**Fill value** (``fill``, :func:`background_fill`). The views are built from *normalised*
images, where ``0`` is the dataset mean — mid-grey, about as bright as a nucleus on a dark
fluorescence image. Filling the rotated-in corners and the cutout squares with ``0`` (what
this module did before) paints grey objects-to-be into the student's and the teacher's
inputs, while the supervised baseline rotates *before* normalising and fills with black
(raw 0). Default ``"median"``: the per-image, per-channel median of the normalised image.
Nuclei and lesions cover a minority of the pixels, so the median is a background pixel for
dark-field fluorescence (close to raw 0 there, i.e. ``-mean / std``) *and* for bright-field or
H&E images, where raw 0 would be darker than any stained nucleus; it needs neither the
dataset statistics nor the modality. ``"dataset_mean"`` keeps the old ``0``; a number is
used as is (e.g. ``-2.0`` = raw 0 for ``data.mean = 0.5, data.std = 0.25``).

**Cutout and the targets** (our choice; the paper is silent). A square of 70 px at 448 px
hides whole nuclei. Two things follow, each switchable:

* ``min_visible``: a labeled box whose visible fraction in the student's view falls below
  it is dropped from the supervised targets (its anchors become background, which is what
  the student now sees). ``0`` keeps every box, the literal reading.
* :func:`erased_anchor_mask`: the anchors whose cell is mostly erased in *either* view are
  left out of the consistency cost: there the two views show different content by
  construction (one sees a nucleus, the other a grey square), and matching them would teach
  the student to hallucinate objects in blank squares or to erase visible ones.
* :func:`erased_box_mask` (box level, ``SSMD(cutout_mask="box")``): also the anchors whose
  *box* a square hides beyond a fraction, though their cell is visible: an anchor at the
  visible half of a partly erased nucleus predicts the half box in one view and the whole
  box in the other, so the ``w, h`` terms of Eq. (5) compare two different objects.
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
    hflip,
    rotate,
    squares_mask,
    visible_fraction,
)
from ssmd.models.detectors.retinanet import DenseOutputs

__all__ = [
    "FILL_MODES",
    "ConsistencyViews",
    "background_fill",
    "erased_anchor_mask",
    "erased_box_mask",
    "erased_fraction",
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
        fill: ``Tensor[B, C, 1, 1]``, the value of the rotated-in corners and the squares
            (:func:`background_fill`).
    """

    student: Tensor
    teacher: Tensor
    boxes: list[Tensor] | None
    labels: list[Tensor] | None
    angles: list[float]
    flipped: bool
    erased: Tensor | None = None
    dropped: int = 0
    fill: Tensor | None = None


FILL_MODES = ("median", "dataset_mean")
"""Named ``fill`` values of :func:`background_fill` (a number is also accepted)."""


def background_fill(images: Tensor, fill: str | float = "median") -> Tensor:
    """The value that stands for "background" in normalised images (module docstring).

    Args:
        images: ``Tensor[B, C, H, W]``, normalised.
        fill: ``"median"`` (per image and channel, over ``H x W``), ``"dataset_mean"``
            (``0``, the dataset mean in normalised units) or a number (normalised units).

    Returns:
        ``Tensor[B, C, 1, 1]`` on the images' device and dtype.

    Raises:
        ValueError: an unknown ``fill``.
    """
    b, c = int(images.shape[0]), int(images.shape[1])
    if isinstance(fill, str):
        if fill == "median":
            return images.detach().flatten(2).median(dim=2).values.view(b, c, 1, 1)
        if fill == "dataset_mean":
            return images.new_zeros((b, c, 1, 1))
        raise ValueError(f"fill = {fill!r}: expected one of {FILL_MODES} or a number")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        raise ValueError(f"fill = {fill!r}: expected one of {FILL_MODES} or a number")
    return images.new_full((b, c, 1, 1), float(fill))


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
    fill: str | float = "median",
    teacher_cutout: bool = True,
    generator: torch.Generator | None = None,
) -> ConsistencyViews:
    """Build the student's and the teacher's views of a batch (module docstring).

    Args:
        images: ``Tensor[B, C, H, W]``, normalised.
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
        fill: value of the rotated-in corners and of the squares (:func:`background_fill`:
            ``"median"``, ``"dataset_mean"`` = 0, or a number), computed on ``images``.
        teacher_cutout: cut squares out of the teacher's view too (the paper); ``False``: a
            clean teacher view (only the student's squares are erased).
        generator: RNG for angles and squares (default: torch's global one).

    Returns:
        :class:`ConsistencyViews`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if (boxes is None) != (labels is None):
        raise ValueError("boxes and labels must be given together")
    b, _, h, w = images.shape
    value = background_fill(images, fill)  # (B, C, 1, 1)
    shift = bool(value.any())
    angles = random_angles(b, rotate_degrees, generator)
    box_list = list(boxes) if boxes is not None else [images.new_zeros((0, 4))] * b
    out_boxes: list[Tensor] | None = list(boxes) if boxes is not None else None
    out_labels: list[Tensor] | None = list(labels) if labels is not None else None
    rotated = images
    if any(a != 0.0 for a in angles):
        # rotation is linear and blends the fill per pixel, so rotating x - v with fill 0
        # and adding v back fills the corners with v (per image and channel)
        rotated, new_boxes = rotate(images - value if shift else images, box_list, angles)
        if shift:
            rotated = rotated + value  # (B, C, H, W)
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
        erased_s = squares_mask(sq_s, h, w)  # (B, H, W)
        student = torch.where(erased_s[:, None].to(images.device), value, student)  # new tensor
        erased = erased_s
        if teacher_cutout:
            sq_t = cutout_squares(b, cutout_n, side, h, w, generator)  # independent squares
            erased_t = squares_mask(sq_t, h, w)
            teacher = torch.where(erased_t[:, None].to(images.device), value, teacher)
            if flip:
                erased_t = erased_t.flip(-1)  # into the student's geometry
            erased = erased_s | erased_t
        erased = erased.to(images.device)
        if out_boxes is not None and out_labels is not None and min_visible > 0:
            for i, (bx, lb) in enumerate(zip(out_boxes, out_labels, strict=True)):
                keep = visible_fraction(bx.cpu(), erased_s[i]) >= min_visible  # (N_i,)
                dropped += int((~keep).sum())
                keep = keep.to(bx.device)
                out_boxes[i], out_labels[i] = bx[keep], lb[keep]
    return ConsistencyViews(
        student,
        teacher,
        out_boxes,
        out_labels,
        angles,
        flip,
        erased=erased,
        dropped=dropped,
        fill=value,
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


def erased_fraction(erased: Tensor, boxes: Tensor) -> Tensor:
    """Erased fraction of each box: ``Tensor[B, N]`` in ``[0, 1]``.

    The batched complement of :func:`~ssmd.data.transforms.functional.visible_fraction`,
    with its conventions: each box is rounded outwards to whole pixels and clipped to the
    image; a box with no pixel inside counts as not erased.

    Args:
        erased: ``Tensor[B, H, W]`` bool.
        boxes: ``Tensor[B, N, 4]`` ``xyxy`` absolute pixels (non-finite values count as
            the whole image's edge after clipping).
    """
    b, h, w = (int(v) for v in erased.shape)
    # integral image with a zero first row/column: S[y, x] = erased[:y, :x].sum()
    integral = erased.new_zeros((b, h + 1, w + 1), dtype=torch.float64)
    integral[:, 1:, 1:] = erased.to(torch.float64).cumsum(1).cumsum(2)
    flat = integral.flatten(1)  # (B, (H + 1)(W + 1))
    bx = torch.nan_to_num(boxes.detach().to(torch.float64), nan=0.0)
    x1 = bx[..., 0].floor().clamp(0, w).long()  # (B, N)
    y1 = bx[..., 1].floor().clamp(0, h).long()
    x2 = bx[..., 2].ceil().clamp(0, w).long()
    y2 = bx[..., 3].ceil().clamp(0, h).long()

    def at(y: Tensor, x: Tensor) -> Tensor:
        return flat.gather(1, y * (w + 1) + x)  # (B, N)

    covered = at(y2, x2) - at(y1, x2) - at(y2, x1) + at(y1, x1)  # (B, N)
    area = ((x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)).to(torch.float64)  # (B, N)
    frac = torch.where(area > 0, covered / area.clamp_min(1.0), torch.zeros_like(area))
    return frac.to(boxes.dtype if boxes.is_floating_point() else torch.float32)


def erased_box_mask(erased: Tensor, boxes: Sequence[Tensor], threshold: float = 0.25) -> Tensor:
    """Anchors whose box is hidden by cutout beyond ``threshold``: ``Tensor[B, N]`` bool.

    An anchor counts as erased when, for *any* of the given box sets (e.g. the anchor
    itself, the box the student predicts from it and the box the teacher predicts from
    it, all in the student's geometry), more than ``threshold`` of the box is erased.

    Args:
        erased: ``Tensor[B, H, W]`` bool (:attr:`ConsistencyViews.erased`).
        boxes: box sets, each ``Tensor[B, N, 4]`` or ``Tensor[N, 4]`` (shared by the batch),
            ``xyxy`` absolute pixels, rows in the anchor order of the consistency cost.
        threshold: erased fraction above which the anchor is left out.
    """
    if not boxes:
        raise ValueError("erased_box_mask needs at least one box set")
    b = int(erased.shape[0])
    hits = [
        erased_fraction(erased, bx.expand(b, -1, -1) if bx.ndim == 2 else bx) > threshold
        for bx in boxes
    ]  # each (B, N)
    return torch.stack(hits).any(dim=0)


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
