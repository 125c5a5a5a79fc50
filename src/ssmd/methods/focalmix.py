"""FocalMix in 2D and 3D (Wang et al., CVPR 2020; the SSMD paper's re-implementation, Sec. 4.3).

The same code serves images and volumes (``spatial_dims`` of the detector): in 3D the ``K``
augmentations are the 8 flips of the three axes (:data:`AUGMENTATIONS_3D`, FocalMix's own
setting: ``K = 8`` flips of CT patches, Table 3b), object MixUp resizes patches trilinearly,
and every ``(B, N, 4)`` below is ``(B, N, 6)``.

One training step on ``B`` labeled and ``B`` unlabeled images (both padded to one size):

1. **Anchor-level target prediction** (FocalMix Eq. (3)-(4)): the current network predicts the
   unlabeled images under ``K`` flips (identity, horizontal, vertical, both — ``K = 4`` was
   FocalMix's best, Table 3b of the slides); each prediction is mapped back to the original
   geometry on the dense maps (``x -> W_l - 1 - x`` with ``dx -> -dx``; ``y -> H_l - 1 - y``
   with ``dy -> -dy``; exact for inputs padded to a multiple of the largest stride), the ``K``
   softmax distributions are averaged per anchor and sharpened with ``T = 0.7``; the
   foreground part ``q[1:]`` is the soft class target. Labeled anchors get one-hot targets
   from the matcher.
2. **Object-level MixUp**: every annotated box of the labeled images and every box the
   network predicts on an unlabeled image with a score ``>= object_threshold`` (0.8) is an
   object patch; each patch is blended in place with another patch of the batch resized to
   its box, ``patch <- lambda' patch + (1 - lambda') other`` (``lambda'`` as below). A lesion
   mixed with a lesion is still a lesion, so targets are unchanged: the step sees new object
   appearances (FocalMix's "extra object instances").
3. **Image-level MixUp** (Eq. (10)-(13)): the ``2B`` images are shuffled into pairs; each
   image and its anchor targets are mixed with its partner's with one
   ``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(0.2, 0.2)``; an anchor ignored by the
   matcher in either image is ignored.
4. **Loss**: one forward of the ``2B`` mixed images; the soft-target focal loss (Eq. (9),
   :mod:`ssmd.losses.focalmix`) plus smooth-L1 box terms; the first ``B`` (mixed from labeled
   images) give ``loss_cls + loss_box``, the last ``B`` the unsupervised ``loss_unsup``;
   ``loss = supervised + lambda_u * loss_unsup`` with the ramp of
   :mod:`ssmd.methods.schedules` (targets from an untrained network are noise at first).

Choices where the sources are silent:

* **Targets come from the student itself** (MixMatch's "current model"; FocalMix has no
  teacher), without gradient and in ``eval()`` mode, so that they do not depend on the rest
  of the batch.
* **Box-regression targets of unlabeled anchors**: the ``K``-averaged, flip-aligned predicted
  deltas, weighted by the anchor's soft foreground target ``sum_c q[c]`` (``unlabeled_box =
  "soft"``): confidently predicted objects pull their boxes towards the augmentation
  average, background anchors contribute nothing. ``"none"`` trains unlabeled anchors on
  classes only.
* **Box terms after MixUp**: deltas of two different objects have no meaningful average, so
  the box loss of a mixed image is the mix of the two images' box losses
  (``lambda' L(t_a) + (1 - lambda') L(t_b)``), each weighted by its foreground weight.

Options that are not FocalMix (issue 18; the paper's settings stay the defaults):

* ``labeled_loss = "focal"``: the labeled part (the first ``B`` mixed images) is scored with
  the supervised baseline's focal weighting instead of the SFL's ``a0 = 0.05, a1 = 0.95``:
  the soft-target loss with ``a0 = 1 - alpha, a1 = alpha, gamma`` of the detector's own focal
  loss (``model.focal_alpha`` 0.25, ``model.focal_gamma`` 2). On hard targets (an un-mixed
  labeled image) this *is* the detector's loss — ``SFL`` with these weights equals the
  sigmoid focal loss term by term, and for a softmax detector with ``K = 1`` (``p = p[1]``,
  ``1 - p = p[0]``) the softmax focal loss; both normalise by the number of foreground
  anchors. The SFL's weights put ``0.95 / 0.05 = 19`` times more weight on positives than on
  negatives, the baseline ``0.25 / 0.75 = 1/3``: 57 times less. Unlabeled (and their mixed)
  anchors keep the SFL. For a softmax detector with ``K > 1`` the per-class binary form
  differs from the softmax focal loss (sensible generalisation to soft targets; not used on
  DSB).
* ``teacher = "ema"``: the ``K``-augmentation targets (and the confident unlabeled objects of
  object MixUp) come from an EMA copy of the student, ``teacher <- ema_decay * teacher +
  (1 - ema_decay) * student`` after every optimiser step (:class:`~ssmd.models.ema.ModelEma`,
  float buffers averaged, no warm-up; the teacher starts as a copy of the student, always in
  ``eval()`` mode, never has gradients, is saved in the method's ``state_dict`` and is
  ``inference_model("teacher")``). The student still predicts the mixed batch and is the
  default network for evaluation.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmd.losses.focalmix import (
    mixup,
    mixup_lambda,
    one_hot_targets,
    sharpen,
    soft_focal_detection_loss,
)
from ssmd.methods.base import METHODS, Method
from ssmd.methods.schedules import RAMPS, consistency_weight
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet
from ssmd.models.ema import ModelEma, create_teacher
from ssmd.structures.sample import Batch

__all__ = [
    "AUGMENTATIONS",
    "AUGMENTATIONS_3D",
    "FLIP_AXES",
    "FocalMix",
    "mix_images_and_targets",
    "object_mixup",
    "undo_flip",
]

AUGMENTATIONS: tuple[str, ...] = ("none", "hflip", "vflip", "hvflip")
"""The ``K`` augmentations of target prediction in 2D, in the order they are used."""

AUGMENTATIONS_3D: tuple[str, ...] = (
    *AUGMENTATIONS,
    "dflip",
    "hdflip",
    "vdflip",
    "hvdflip",
)
"""The ``K <= 8`` augmentations in 3D: the 2D ones, then the same with a flip along ``z``
(depth, ``d``), so ``K = 2 / 4 / 8`` are FocalMix's ``x`` / ``x, y`` / ``x, y, z`` flip sets."""

FLIP_AXES: dict[str, tuple[int, ...]] = {
    "none": (),
    "hflip": (0,),
    "vflip": (1,),
    "hvflip": (0, 1),
    "dflip": (2,),
    "hdflip": (0, 2),
    "vdflip": (1, 2),
    "hvdflip": (0, 1, 2),
}
"""Box axes (``0 = x``, ``1 = y``, ``2 = z``) each augmentation flips; box axis ``k`` is tensor
dimension ``-1 - k``."""

LABELED_LOSSES: tuple[str, ...] = ("sfl", "focal")
"""``labeled_loss`` options (module docstring)."""

TEACHERS: tuple[str, ...] = ("student", "ema")
"""``teacher`` options: the network that predicts the unlabeled targets (module docstring)."""


def _flip_images(images: Tensor, aug: str) -> Tensor:
    dims = [-1 - k for k in FLIP_AXES[aug]]
    return images.flip(dims) if dims else images


def undo_flip(outputs: DenseOutputs, aug: str) -> DenseOutputs:
    """Map predictions made on a flipped image (volume) back onto the original's anchors.

    For every flipped box axis ``k`` (:data:`FLIP_AXES`): positions ``i -> S_l - 1 - i`` along
    tensor dimension ``-1 - k`` of every level and the centre offset ``d_k`` negated (sizes and
    the other offsets unchanged) -- ``hflip`` is :meth:`DenseOutputs.hflip`. Exact when the
    input size is a multiple of the largest stride along every flipped axis and the anchor set
    is symmetric under flips, as ours is (cell centres ``(i + 0.5) * stride``).

    Raises:
        ValueError: an unknown augmentation, or a ``z`` flip of 2D outputs.
    """
    if aug not in FLIP_AXES:
        raise ValueError(f"unknown augmentation {aug!r}; expected one of {AUGMENTATIONS_3D}")
    axes = FLIP_AXES[aug]
    if not axes:
        return outputs
    ref = outputs.box_deltas[0]
    d = ref.shape[2] // 2  # spatial dims of the deltas (B, A, 2D, *S)
    if max(axes) >= d:
        raise ValueError(f"augmentation {aug!r} flips z, but the outputs are {d}D")
    sign = torch.ones(2 * d, dtype=ref.dtype, device=ref.device)  # (2D,)
    for k in axes:
        sign[k] = -1.0  # the centre offset along the flipped axis
    view = (1, 1, -1) + (1,) * (ref.ndim - 3)  # broadcast over (B, A, 2D, *S)
    dims = [-1 - k for k in axes]
    return DenseOutputs(
        [t.flip(dims) for t in outputs.cls_logits],
        [t.flip(dims) * sign.view(view) for t in outputs.box_deltas],  # (B, A, 2D, *S)
        outputs.image_size,
    )


def object_mixup(
    images: Tensor, boxes: list[Tensor], eta: float = 0.2, max_objects: int = 64
) -> Tensor:
    """Object-level MixUp: blend each object patch with another object of the batch.

    Args:
        images: ``Tensor[B, C, H, W]`` (``Tensor[B, C, D, H, W]`` in 3D); not modified.
        boxes: per image ``Tensor[N_i, 2D]`` ``xyxy`` pixels / voxels (annotated or
            confidently predicted).
        eta: Beta parameter of ``lambda``.
        max_objects: at most this many patches (drawn at random) are mixed per call, to bound
            the cost on images with hundreds of nuclei.

    Returns:
        The batch with patch ``i`` replaced by ``lambda'_i patch_i + (1 - lambda'_i)
        resize(patch_j)``, ``j != i`` drawn at random (bilinear, trilinear in 3D); fewer than 2
        objects: unchanged.
    """
    d = images.dim() - 2
    size_xyz = [int(images.shape[-1 - k]) for k in range(d)]  # W, H[, D]
    pool: list[tuple[int, tuple[slice, ...], list[int]]] = []  # image, tensor slices, sizes
    for i, b in enumerate(boxes):
        for row in b.round().long().reshape(-1, 2 * d).tolist():
            lo = [max(0, row[k]) for k in range(d)]
            hi = [min(size_xyz[k], row[d + k]) for k in range(d)]
            if all(hi[k] - lo[k] >= 2 for k in range(d)):
                slices = tuple(slice(lo[k], hi[k]) for k in reversed(range(d)))  # ([z,] y, x)
                pool.append((i, slices, [hi[k] - lo[k] for k in reversed(range(d))]))
    if len(pool) < 2:
        return images
    mode = "bilinear" if d == 2 else "trilinear"
    out = images.clone()
    chosen = torch.randperm(len(pool))[:max_objects].tolist()
    partners = torch.randint(0, len(pool) - 1, (len(chosen),)).tolist()
    lams = mixup_lambda(len(chosen), eta).tolist()
    for k, j, lam in zip(chosen, partners, lams, strict=True):
        j = j if j < k else j + 1  # any other object
        i, region, size = pool[k]
        ij, other_region, _ = pool[j]
        other = images[(slice(ij, ij + 1), slice(None), *other_region)]  # (1, C, *size_j)
        other = F.interpolate(other, size=tuple(size), mode=mode, align_corners=False)
        where = (i, slice(None), *region)
        out[where] = lam * images[where] + (1.0 - lam) * other[0]
    return out


def mix_images_and_targets(
    images: Tensor,
    targets: Tensor,
    valid: Tensor,
    box_targets: Tensor,
    box_weights: Tensor,
    perm: Tensor,
    lam: Tensor,
) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """Image-level MixUp (Eq. (12)-(13)): image ``i`` with image ``perm[i]``, weight ``lam[i]``.

    Images and anchor class targets are mixed with the same pairing and weights; an anchor
    is valid only if valid in both images; the box loss becomes two weighted terms (module
    docstring).

    Args:
        images: ``Tensor[n, C, H, W]``.
        targets: ``Tensor[n, N, K]`` soft class targets.
        valid: ``Tensor[n, N]`` bool.
        box_targets: ``Tensor[n, N, 4]``.
        box_weights: ``Tensor[n, N]``.
        perm: ``Tensor[n]`` int64, the partners.
        lam: ``Tensor[n]``, ``lambda'`` of each mixed image.

    Returns:
        ``(images, targets, valid, box_terms)`` for :func:`soft_focal_detection_loss`.
    """
    lw = lam.view(-1, 1).to(box_weights.dtype)  # (n, 1)
    return (
        mixup(images, images[perm], lam),
        mixup(targets, targets[perm], lam),
        valid & valid[perm],
        [(box_targets, lw * box_weights), (box_targets[perm], (1.0 - lw) * box_weights[perm])],
    )


def _pad_to(images: Tensor, size: list[int]) -> Tensor:
    """Zero-pad the spatial axes of ``images`` (``(B, C, *S)``) at their ends to ``size``."""
    amounts: list[int] = []
    for k in reversed(range(len(size))):  # F.pad takes the last axis first
        amounts += [0, size[k] - int(images.shape[2 + k])]
    return F.pad(images, amounts)


@METHODS.register("focalmix")
class FocalMix(Method):
    """FocalMix (Wang et al. 2020) on the shared RetinaNet (module docstring).

    Args:
        model: the detector (inputs padded to a multiple of the largest stride).
        alpha0: SFL weight of negative targets (0.05).
        alpha1: SFL weight of positive targets (0.95).
        gamma: SFL exponent (2).
        temperature: sharpening ``T`` (0.7).
        num_augmentations: ``K`` in 1..4 (flips of :data:`AUGMENTATIONS`), 1..8 for a 3D
            detector (:data:`AUGMENTATIONS_3D`).
        eta: MixUp ``Beta(eta, eta)`` (0.2).
        image_mixup: image-level MixUp on/off.
        object_mixup: object-level MixUp on/off.
        object_threshold: score of a predicted unlabeled object used for object MixUp.
        max_objects: cap on mixed object patches per step.
        unlabeled_box: ``"soft"`` or ``"none"`` (module docstring).
        unlabeled_weight: ``lambda_u`` maximum.
        ramp: ``"eq10"`` or ``"none"`` (:mod:`ssmd.methods.schedules`).
        labeled_loss: ``"sfl"`` (FocalMix) or ``"focal"`` (the detector's focal weighting on
            the labeled part; module docstring).
        teacher: ``"student"`` (FocalMix) or ``"ema"`` (targets from an EMA teacher).
        ema_decay: EMA rate of the ``"ema"`` teacher.
    """

    uses_unlabeled: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections", "dense_maps")
    defaults: ClassVar[dict[str, Any]] = {
        "alpha0": 0.05,
        "alpha1": 0.95,
        "gamma": 2.0,
        "temperature": 0.7,
        "num_augmentations": 4,
        "eta": 0.2,
        "image_mixup": True,
        "object_mixup": True,
        "object_threshold": 0.8,
        "max_objects": 64,
        "unlabeled_box": "soft",
        "unlabeled_weight": 1.0,
        "ramp": "eq10",
        "labeled_loss": "sfl",
        "teacher": "student",
        "ema_decay": 0.99,
    }

    def __init__(
        self,
        model: nn.Module,
        alpha0: float = 0.05,
        alpha1: float = 0.95,
        gamma: float = 2.0,
        temperature: float = 0.7,
        num_augmentations: int = 4,
        eta: float = 0.2,
        image_mixup: bool = True,
        object_mixup: bool = True,
        object_threshold: float = 0.8,
        max_objects: int = 64,
        unlabeled_box: str = "soft",
        unlabeled_weight: float = 1.0,
        ramp: str = "eq10",
        labeled_loss: str = "sfl",
        teacher: str = "student",
        ema_decay: float = 0.99,
    ) -> None:
        super().__init__(model)
        augs = AUGMENTATIONS_3D if int(getattr(model, "spatial_dims", 2)) == 3 else AUGMENTATIONS
        if not 1 <= int(num_augmentations) <= len(augs):
            raise ValueError(
                f"method.num_augmentations = {num_augmentations!r}: expected 1..{len(augs)} "
                f"for a {getattr(model, 'spatial_dims', 2)}D detector"
            )
        if float(temperature) <= 0 or float(eta) <= 0:
            raise ValueError(
                f"method.temperature = {temperature!r}, method.eta = {eta!r}: both must be > 0"
            )
        if unlabeled_box not in ("soft", "none"):
            raise ValueError(f"method.unlabeled_box = {unlabeled_box!r}: expected soft or none")
        if ramp not in RAMPS:
            raise ValueError(f"method.ramp = {ramp!r}: expected one of {RAMPS}")
        if float(unlabeled_weight) < 0:
            raise ValueError(f"method.unlabeled_weight = {unlabeled_weight!r}: expected >= 0")
        if labeled_loss not in LABELED_LOSSES:
            raise ValueError(
                f"method.labeled_loss = {labeled_loss!r}: expected one of {LABELED_LOSSES}"
            )
        if labeled_loss == "focal" and getattr(model, "cls_loss", "focal") != "focal":
            raise ValueError(
                f"method.labeled_loss = 'focal' copies the detector's focal loss, but "
                f"model.cls_loss = {getattr(model, 'cls_loss', None)!r} (set model.cls_loss=focal)"
            )
        if teacher not in TEACHERS:
            raise ValueError(f"method.teacher = {teacher!r}: expected one of {TEACHERS}")
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"method.ema_decay = {ema_decay!r}: expected a number in [0, 1]")
        self.alpha0, self.alpha1, self.gamma = float(alpha0), float(alpha1), float(gamma)
        self.temperature = float(temperature)
        self.augmentations = augs[: int(num_augmentations)]
        self.eta = float(eta)
        self.image_mixup = bool(image_mixup)
        self.object_mixup = bool(object_mixup)
        self.object_threshold = float(object_threshold)
        self.max_objects = int(max_objects)
        self.unlabeled_box = unlabeled_box
        self.unlabeled_weight = float(unlabeled_weight)
        self.ramp = ramp
        self.labeled_loss = labeled_loss
        self.teacher_kind = teacher
        self.ema_decay = float(ema_decay)
        self.teacher: nn.Module | None = None
        self.ema: ModelEma | None = None
        if teacher == "ema":
            self.teacher = create_teacher(model, init="copy")  # eval(), requires_grad False
            self.ema = ModelEma(self.ema_decay, buffers="ema", warmup=False)

    def train(self, mode: bool = True) -> FocalMix:
        """Set the student's mode; an EMA teacher always stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def inference_model(self, which: str = "student") -> nn.Module:
        """``"student"`` (default), or ``"teacher"`` when ``teacher = "ema"``."""
        if which == "teacher" and self.teacher is not None:
            return self.teacher
        return super().inference_model(which)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA of the student into the teacher (the only way the teacher moves)."""
        if self.teacher is not None and self.ema is not None:
            self.ema.update(self.teacher, self.model, step)

    def labeled_weights(self) -> tuple[float, float, float]:
        """``(alpha0, alpha1, gamma)`` of the labeled part's soft-target focal loss.

        ``"sfl"``: FocalMix's own; ``"focal"``: ``(1 - alpha, alpha, gamma)`` of the
        detector's focal loss (``alpha < 0``, no weighting: ``(1, 1, gamma)``).
        """
        if self.labeled_loss == "sfl":
            return self.alpha0, self.alpha1, self.gamma
        alpha = float(getattr(self.model, "focal_alpha", 0.25))
        gamma = float(getattr(self.model, "focal_gamma", 2.0))
        if alpha < 0:
            return 1.0, 1.0, gamma
        return 1.0 - alpha, alpha, gamma

    @property
    def _detector(self) -> RetinaNet:
        return cast(RetinaNet, self.model)

    @torch.no_grad()
    def predict_targets(self, images: Tensor) -> tuple[Tensor, Tensor, DenseOutputs]:
        """Sharpened soft class targets and averaged deltas of unlabeled ``images`` (step 1).

        The predictions come from the student (``teacher = "student"``) or the EMA teacher.

        Returns:
            ``(targets Tensor[B, N, K], deltas Tensor[B, N, 4], outputs)``; ``outputs`` are
            the un-augmented predictions (for object MixUp and as the anchor template).
        """
        net = self.model if self.teacher is None else self.teacher
        was_training = net.training
        net.eval()
        try:
            probs, deltas = None, None
            first: DenseOutputs | None = None
            for aug in self.augmentations:
                out = undo_flip(net(_flip_images(images, aug)), aug)
                if first is None:
                    first = out
                p = out.flat_cls_logits().softmax(-1)  # (B, N, K+1)
                d = out.flat_box_deltas()  # (B, N, 4)
                probs = p if probs is None else probs + p
                deltas = d if deltas is None else deltas + d
        finally:
            net.train(was_training)
        assert probs is not None and deltas is not None and first is not None  # K >= 1
        k = float(len(self.augmentations))
        q = sharpen(probs / k, self.temperature)  # (B, N, K+1), Eq. (3)-(4)
        return q[..., 1:], deltas / k, first

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Steps 1-4 of the module docstring.

        Returns:
            ``loss_cls``, ``loss_box`` (labeled part, SFL or the detector's focal weighting),
            ``loss_unsup`` (unlabeled part,
            un-weighted), ``unsup_weight`` and ``loss``.
        """
        if getattr(self.model, "activation", "softmax") != "softmax":
            raise ValueError("FocalMix's target sharpening needs softmax outputs (K + 1 classes)")
        lam_u = consistency_weight(step, max_iters, self.ramp, self.unlabeled_weight)
        x_l = labeled.images
        b_l = len(labeled)
        x_u = x_l[:0] if unlabeled is None or len(unlabeled) == 0 else unlabeled.images
        size = [max(int(a), int(b)) for a, b in zip(x_l.shape[2:], x_u.shape[2:], strict=True)]
        x_l, x_u = _pad_to(x_l, size), _pad_to(x_u, size)  # (B, C, *S) each

        template: DenseOutputs
        if len(x_u):
            y_u, d_u, template = self.predict_targets(x_u)  # (B, N, K), (B, N, 4)
            fg_u = y_u.sum(-1) if self.unlabeled_box == "soft" else torch.zeros_like(y_u[..., 0])
        else:
            with torch.no_grad():
                template = self.model(x_l[:1])
        labels_l, boxes_t_l = self._detector.assign_targets(
            DenseOutputs(
                [t[:1].expand(b_l, *t.shape[1:]) for t in template.cls_logits],
                [t[:1].expand(b_l, *t.shape[1:]) for t in template.box_deltas],
                template.image_size,
            ),
            labeled.targets(),
        )  # (B, N), (B, N, 4)
        k = int(template.cls_logits[0].shape[2]) - 1
        y_l, valid_l = one_hot_targets(labels_l, k)  # (B, N, K), (B, N)
        fg_l = (labels_l > 0).to(y_l.dtype)

        if len(x_u):
            images = torch.cat([x_l, x_u])  # (2B, C, H, W)
            targets = torch.cat([y_l, y_u])  # (2B, N, K)
            valid_u = torch.ones(y_u.shape[:2], dtype=torch.bool, device=y_u.device)  # (B, N)
            valid = torch.cat([valid_l, valid_u])  # (2B, N)
            box_t = torch.cat([boxes_t_l, d_u])  # (2B, N, 4)
            box_w = torch.cat([fg_l, fg_u])  # (2B, N)
        else:
            images, targets, valid, box_t, box_w = x_l, y_l, valid_l, boxes_t_l, fg_l

        if self.object_mixup:
            objects = [b.to(images.dtype) for b in labeled.boxes]
            if len(x_u):
                dets = self._detector.postprocess(template)
                objects += [d["boxes"][d["scores"] >= self.object_threshold] for d in dets]
            images = object_mixup(images, objects, self.eta, self.max_objects)

        n = int(images.shape[0])
        if self.image_mixup:
            perm = torch.randperm(n)
            lam = mixup_lambda(n, self.eta).to(images.device)  # (2B,)
            images, targets, valid, box_terms = mix_images_and_targets(
                images, targets, valid, box_t, box_w, perm, lam
            )
        else:
            box_terms = [(box_t, box_w)]

        out = self.model(images)
        cls_flat, deltas_flat = out.flat_cls_logits(), out.flat_box_deltas()  # (2B, N, .)

        def part(sl: slice, weights: tuple[float, float, float]) -> dict[str, Tensor]:
            alpha0, alpha1, gamma = weights
            return soft_focal_detection_loss(
                cls_flat[sl],
                deltas_flat[sl],
                targets[sl],
                valid[sl],
                [(t[sl], wt[sl]) for t, wt in box_terms],
                activation="softmax",
                alpha0=alpha0,
                alpha1=alpha1,
                gamma=gamma,
                beta=float(getattr(self.model, "smooth_l1_beta", 1.0 / 9.0)),
            )

        losses = part(slice(0, b_l), self.labeled_weights())
        zero = cls_flat.new_zeros(())
        unsup = zero
        if n > b_l:
            u = part(slice(b_l, n), (self.alpha0, self.alpha1, self.gamma))
            unsup = u["loss_cls"] + u["loss_box"]
        losses["loss_unsup"] = unsup
        losses["unsup_weight"] = torch.tensor(lam_u, dtype=zero.dtype, device=zero.device)
        losses["loss"] = losses["loss_cls"] + losses["loss_box"] + lam_u * unsup
        return losses
