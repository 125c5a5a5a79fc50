"""Pseudo-labeling, STAC-style (Sohn et al. 2020), the SSMD paper's baseline (Sec. 4.3): stage 2.

Stage 1 (a supervised run on the labeled part), the prediction of the unlabeled part and the
filter ``score >= threshold`` (0.9, one-hot labels) are :mod:`ssmd.tasks.pseudo_label`'s job;
``ssmd train ... method.name=pseudo_label`` runs both stages. This method is stage 2: a
detector trained **from scratch** on the labeled images and the pseudo-labeled unlabeled
images, whose boxes the engine has replaced by the pseudo labels (it never sees their
ground truth; only the engine's two-stage entry point builds this method's data).

One step: one forward over the labeled batch (the engine's usual flip / rotation
augmentation) and the pseudo-labeled batch after **strong augmentation**, then the detector
loss (Eq. (1)) of the labeled images plus ``unlabeled_weight`` times that of the
pseudo-labeled ones (STAC applies it to the pseudo-labeled
images; ``strong_on_labeled`` extends it to the labeled ones). The sources do not spell the
strong augmentation out for this detector; ours, on top of the engine's flip and rotation:

* vertical flip with probability ``vflip`` (boxes flipped with the image);
* intensity jitter per image: ``x <- (x - m) c + m + d s`` with ``m, s`` the image's mean and
  standard deviation, contrast ``c ~ U(1 - contrast, 1 + contrast)`` and brightness
  ``d ~ U(-brightness, brightness)`` (scale-free, so it means the same for any
  normalisation);
* cutout: ``cutout_n`` squares of side ``cutout_size`` at ``cutout_reference`` px, scaled with
  the width (as SSMD's cutout; boxes unchanged, STAC's box-level cutout being a variant).

Unlabeled images without any pseudo box are dropped from the batch (``keep_empty=False``):
with nuclei everywhere, an image where the stage-1 model found nothing confident would
otherwise teach "all background".
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmd.data.transforms.functional import cutout, vflip_boxes
from ssmd.methods.base import METHODS, Method
from ssmd.methods.perturb import scaled_cutout_size
from ssmd.models.detectors.base import Detector
from ssmd.structures.sample import Batch

__all__ = ["PseudoLabel", "strong_augment"]


def strong_augment(
    images: Tensor,
    boxes: list[Tensor],
    *,
    vflip: float = 0.5,
    brightness: float = 0.2,
    contrast: float = 0.2,
    cutout_n: int = 5,
    cutout_size: int = 70,
    cutout_reference: int = 448,
) -> tuple[Tensor, list[Tensor]]:
    """Strong augmentation of a batch (module docstring); torch's global RNG.

    Args:
        images: ``Tensor[B, C, H, W]``, normalised; not modified.
        boxes: per image ``Tensor[N_i, 4]`` ``xyxy`` pixels.

    Returns:
        ``(images, boxes)`` augmented.
    """
    out = images.clone()
    b, _, h, w = out.shape
    new_boxes = list(boxes)
    flips = (torch.rand(b) < vflip).tolist()
    for i, flip in enumerate(flips):
        if flip:
            out[i] = out[i].flip(-2)
            new_boxes[i] = vflip_boxes(boxes[i], h)
    if brightness > 0 or contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        std = out.std(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        c = 1.0 + (2.0 * torch.rand(b, 1, 1, 1) - 1.0) * contrast
        d = (2.0 * torch.rand(b, 1, 1, 1) - 1.0) * brightness
        out = (out - mean) * c.to(out) + mean + d.to(out) * std
    if cutout_n > 0:
        side = min(scaled_cutout_size(cutout_size, w, cutout_reference), h, w)
        out = cutout(out, cutout_n, side)
    return out, new_boxes


def _pad_to(images: Tensor, h: int, w: int) -> Tensor:
    return F.pad(images, (0, w - int(images.shape[-1]), 0, h - int(images.shape[-2])))


def _targets(boxes: list[Tensor], labels: list[Tensor]) -> list[dict[str, Tensor]]:
    return [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)]


@METHODS.register("pseudo_label")
class PseudoLabel(Method):
    """Stage 2 of pseudo-labeling (module docstring).

    Args:
        model: the detector, freshly initialised.
        threshold: score a stage-1 detection needs to become a pseudo box (read by the
            engine before stage 2; 0.9 as in STAC and the SSMD paper).
        stage1_dir: a finished supervised run to use as stage 1 instead of training one
            (read by the engine; its config must match, see
            :func:`ssmd.tasks.pseudo_label.stage1_mismatch`).
        unlabeled_weight: weight of the pseudo-labeled loss.
        keep_empty: keep unlabeled images that received no pseudo box.
        strong_on_labeled: strong augmentation on the labeled batch too.
        vflip: probability of the vertical flip.
        brightness: brightness jitter, in image standard deviations.
        contrast: contrast jitter (relative).
        cutout_n: cutout squares per image (0: none).
        cutout_size: square side at ``cutout_reference`` px width.
        cutout_reference: the width ``cutout_size`` refers to.
    """

    uses_unlabeled: ClassVar[bool] = True
    recipe: ClassVar[str | None] = "pseudo_label"  # stage 1, pseudo boxes, this stage 2
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections")
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.9,
        "stage1_dir": None,
        "unlabeled_weight": 1.0,
        "keep_empty": False,
        "strong_on_labeled": False,
        "vflip": 0.5,
        "brightness": 0.2,
        "contrast": 0.2,
        "cutout_n": 5,
        "cutout_size": 70,
        "cutout_reference": 448,
    }

    def __init__(
        self,
        model: torch.nn.Module,
        threshold: float = 0.9,
        stage1_dir: str | None = None,
        unlabeled_weight: float = 1.0,
        keep_empty: bool = False,
        strong_on_labeled: bool = False,
        vflip: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
        cutout_n: int = 5,
        cutout_size: int = 70,
        cutout_reference: int = 448,
    ) -> None:
        super().__init__(model)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"method.threshold = {threshold!r}: expected a score in [0, 1]")
        if float(unlabeled_weight) < 0:
            raise ValueError(f"method.unlabeled_weight = {unlabeled_weight!r}: expected >= 0")
        if not 0.0 <= float(vflip) <= 1.0:
            raise ValueError(f"method.vflip = {vflip!r}: expected a probability")
        if int(cutout_n) < 0 or int(cutout_size) < 1 or int(cutout_reference) < 1:
            raise ValueError(
                f"method.cutout_n/cutout_size/cutout_reference = "
                f"{(cutout_n, cutout_size, cutout_reference)!r}: expected n >= 0, sizes >= 1"
            )
        self.threshold = float(threshold)
        self.unlabeled_weight = float(unlabeled_weight)
        self.keep_empty = bool(keep_empty)
        self.strong_on_labeled = bool(strong_on_labeled)
        self.aug: dict[str, Any] = {
            "vflip": float(vflip),
            "brightness": float(brightness),
            "contrast": float(contrast),
            "cutout_n": int(cutout_n),
            "cutout_size": int(cutout_size),
            "cutout_reference": int(cutout_reference),
        }

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Detector loss on the labeled batch + ``unlabeled_weight`` x on the pseudo-labeled one.

        Returns:
            ``loss_cls``, ``loss_box`` (labeled), ``loss_pseudo`` (un-weighted),
            ``pseudo_images`` (images of the batch with pseudo boxes) and ``loss``.
        """
        zero = labeled.images.new_zeros(())
        images_l, boxes_l = labeled.images, list(labeled.boxes)
        if self.strong_on_labeled:
            images_l, boxes_l = strong_augment(images_l, boxes_l, **self.aug)
        kept: list[int] = []
        if unlabeled is not None:
            kept = [i for i, b in enumerate(unlabeled.boxes) if self.keep_empty or len(b) > 0]
        parts = [(images_l, boxes_l, list(labeled.labels))]
        if unlabeled is not None and kept:
            images_u, boxes_u = strong_augment(
                unlabeled.images[kept], [unlabeled.boxes[i] for i in kept], **self.aug
            )
            parts.append((images_u, boxes_u, [unlabeled.labels[i] for i in kept]))
        # one forward over labeled + pseudo-labeled images (padded to one size), two losses
        h = max(int(p[0].shape[-2]) for p in parts)
        w = max(int(p[0].shape[-1]) for p in parts)
        images = torch.cat([_pad_to(p[0], h, w) for p in parts])  # (B_l + B_u, C, H, W)
        detector = cast(Detector, self.model)  # any detector: losses on rows of its outputs
        out = detector(images)
        b_l = int(images_l.shape[0])
        losses = detector.loss(out.rows(0, b_l), _targets(parts[0][1], parts[0][2]))
        supervised = sum(losses.values(), start=zero)
        pseudo = zero
        if len(parts) > 1:
            u = detector.loss(out.rows(b_l, len(images)), _targets(parts[1][1], parts[1][2]))
            pseudo = sum(u.values(), start=zero)
        losses["loss_pseudo"] = pseudo
        losses["pseudo_images"] = torch.tensor(float(len(kept)), device=zero.device)
        losses["loss"] = supervised + self.unlabeled_weight * pseudo
        return losses
