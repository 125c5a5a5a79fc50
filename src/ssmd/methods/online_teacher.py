"""An online pseudo-label teacher for any detector (in the line of Unbiased Teacher / Soft Teacher).

Not a method of the SSMD paper: an extension in the line of Unbiased Teacher (Liu et al.,
ICLR 2021) and Soft Teacher (Xu et al., ICCV 2021), the recipes semi-supervised detection
users reach for today. One step, after ``burn_in_iters`` supervised-only steps:

1. supervised loss: the detector's own loss (``model.loss``) on the labeled batch as the
   engine augmented it (flip / rotation, exactly as the supervised baseline);
2. pseudo boxes: the teacher (eval mode, no gradient) predicts a *weak* view of the
   unlabeled batch — each image flipped left-right with probability ``weak_flip``
   (:func:`~ssmd.methods.strong_aug.weak_view`) — and its post-processed detections
   (``model.postprocess``: decode, NMS) with ``score >= threshold`` become hard pseudo boxes
   with the detection's class (one-hot labels, as Unbiased Teacher);
3. the boxes are mapped back exactly to the base image and on into the *strong* view of the
   same image (intensity / colour jitter, scale jitter, cutout;
   :func:`~ssmd.methods.strong_aug.strong_view`), which the student sees; its loss is the
   detector's supervised loss on the pseudo boxes (``loss_unsup``, the terms in
   ``unsup_terms``), and ``loss = supervised + unsup_weight * loss_unsup``;
4. after the optimiser step the teacher moves by EMA only,
   ``teacher <- ema_decay * teacher + (1 - ema_decay) * student`` (Unbiased Teacher's Eq. (3),
   :class:`~ssmd.models.ema.ModelEma`, float buffers averaged too).

**Burn-in and initialisation.** At the first step after burn-in the teacher becomes a copy of
the student (Unbiased Teacher's "burn-in" stage); before that it is unused and the step is
the supervised one. ``init_weights`` (a run's ``best.pt`` or ``last.pt``, loaded with
``weights_only``) starts the student from a supervised checkpoint instead; with
``burn_in_iters=0`` the teacher is that checkpoint at step 0.

**Threshold.** A float, or ``"auto"``: at the end of burn-in the teacher predicts the
*labeled validation* images (which the engine hands over through
:meth:`OnlineTeacher.set_validation_samples`) and the threshold is the detection score that
maximises the F1 of its detections against their ground truth at IoU ``threshold_iou``
(:func:`f1_optimal_threshold`). It is chosen once, logged, and stored in the method's state
dict (``pseudo_threshold``), so a resumed run uses the same value.

**Focal loss.** Unbiased Teacher replaces cross-entropy by the focal loss against the class
imbalance of pseudo boxes; here the detector's own classification loss is used, and with
``require_focal`` (default) a detector that declares ``cls_loss`` must declare ``"focal"``
(RetinaNet's default). A detector without that attribute (the Faster R-CNN, whose RPN and RoI
losses are torchvision's cross-entropies) trains with its own losses.

**Choices where the sources are silent or do not fit** (stated here and in
``docs/experiments.md``):

* an unlabeled image with no pseudo box is left out of the unsupervised loss
  (``keep_empty=False``): with objects in nearly every image (nuclei), "the teacher found
  nothing" is more often a miss than a true background image, and training it as all
  background would teach the student to miss too (the pseudo-labeling baseline makes the
  same choice). ``keep_empty=True`` is Unbiased Teacher's reading (background only);
* all terms of ``model.loss`` by default; ``unsup_terms=["loss_cls"]`` is Unbiased Teacher's
  classification-only unsupervised loss (its box regression on pseudo boxes is dropped);
* pseudo boxes whose side falls below 1 px in the student's view (after down-scaling) are
  dropped;
* the scale jitter draws one factor per batch (the images of a batch keep one size).

Diagnostics returned with the losses (they land in ``metrics.jsonl`` as ``train/<key>`` and
are never part of ``loss``), after burn-in only: ``pseudo_boxes_per_image``,
``pseudo_image_fraction`` (unlabeled images with at least one pseudo box),
``pseudo_threshold`` and, with ``threshold="auto"``, ``threshold_f1``.

The method uses only ``model(images)``, ``model.loss(outputs, targets)`` and
``model.postprocess(outputs, image_sizes)``, so it runs on every detector of the project
(2D images).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ssmd.methods.base import METHODS, Method
from ssmd.methods.strong_aug import View, strong_view, weak_view
from ssmd.models.ema import ModelEma, create_teacher
from ssmd.models.layers.noisy_residual import strip_feature_perturbations
from ssmd.structures.boxes import box_iou, nondegenerate
from ssmd.structures.sample import Batch, Sample, collate

__all__ = ["OnlineTeacher", "ThresholdChoice", "f1_optimal_threshold"]

logger = logging.getLogger(__name__)


def _fail(key: str, value: object, need: str) -> ValueError:
    return ValueError(f"method.{key} = {value!r}: {need}")


# ------------------------------------------------------------------------ threshold from F1
@dataclass(frozen=True)
class ThresholdChoice:
    """The F1-optimal score threshold and what it gives on the images it was chosen on."""

    threshold: float
    f1: float
    precision: float
    recall: float
    detections: int
    ground_truth: int


def _greedy_hits(
    boxes: Tensor, scores: Tensor, labels: Tensor, gt: Tensor, gt_labels: Tensor, iou: float
) -> tuple[Tensor, Tensor]:
    """Scores sorted (descending) and, per detection, 1 if it matches a still free gt box.

    A detection matches the free ground-truth box of its class with the highest IoU, if that
    IoU is ``>= iou`` (COCO-style greedy matching by score). Greedy matching in score order
    makes the matches of the detections above any threshold a prefix of this list.
    """
    order = scores.argsort(descending=True, stable=True)
    hits = torch.zeros(len(order), dtype=torch.float64)
    if len(gt) and len(order):
        ious = box_iou(boxes[order].double(), gt.double())  # (N, G)
        ious = ious.masked_fill(labels[order][:, None] != gt_labels[None, :], -1.0)
        free = torch.ones(len(gt), dtype=torch.bool)
        for i in range(len(order)):
            row = ious[i].masked_fill(~free, -1.0)
            j = int(row.argmax())
            if float(row[j]) >= iou:
                free[j] = False
                hits[i] = 1.0
    return scores[order].double(), hits


def f1_optimal_threshold(
    detections: Sequence[dict[str, Tensor]],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor] | None = None,
    iou_threshold: float = 0.5,
) -> ThresholdChoice:
    """The score threshold that maximises F1 of ``score >= t`` detections, pooled over images.

    With the detections of all images sorted by score and ``TP_k`` the matches among the
    first ``k`` (:func:`_greedy_hits`, per image), ``F1_k = 2 TP_k / (k + G)`` (``G`` ground
    truth boxes); only cuts between different scores are candidates, and the threshold is
    the ``k``-th score of the best cut (the highest one among equal F1). Without any match
    (no detection, no ground truth, or nothing at IoU ``>= iou_threshold``) the threshold is
    ``inf`` (no pseudo box) with F1 0.

    Args:
        detections: per image ``{"boxes": Tensor[N, 4] xyxy, "scores": Tensor[N],
            "labels": Tensor[N]}``.
        gt_boxes: per image ``Tensor[G_i, 4]`` ``xyxy``, same pixels as the detections.
        gt_labels: per image ``Tensor[G_i]`` (default: one class).
        iou_threshold: IoU a detection needs with a ground-truth box to count.
    """
    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} detection sets for {len(gt_boxes)} images")
    labels_gt = (
        [torch.ones(len(g), dtype=torch.int64) for g in gt_boxes]
        if gt_labels is None
        else list(gt_labels)
    )
    scores_all, hits_all = [], []
    n_gt = 0
    for det, gt, glab in zip(detections, gt_boxes, labels_gt, strict=True):
        n_gt += len(gt)
        labels = det["labels"] if gt_labels is not None else torch.ones_like(det["labels"])
        s, h = _greedy_hits(det["boxes"], det["scores"], labels, gt, glab, iou_threshold)
        scores_all.append(s)
        hits_all.append(h)
    scores = torch.cat(scores_all) if scores_all else torch.zeros(0, dtype=torch.float64)
    hits = torch.cat(hits_all) if hits_all else torch.zeros(0, dtype=torch.float64)
    n_det = len(scores)
    none = ThresholdChoice(math.inf, 0.0, 0.0, 0.0, 0, n_gt)
    if n_det == 0 or n_gt == 0 or float(hits.sum()) == 0:
        return none
    order = scores.argsort(descending=True, stable=True)
    scores, hits = scores[order], hits[order]
    tp = hits.cumsum(0)  # (N,)
    k = torch.arange(1, n_det + 1, dtype=torch.float64)  # (N,)
    f1 = 2 * tp / (k + n_gt)  # (N,)
    cut = torch.ones(n_det, dtype=torch.bool)
    cut[:-1] = scores[:-1] > scores[1:]  # a threshold cannot split equal scores
    f1 = f1.masked_fill(~cut, -1.0)
    best = int(f1.argmax())  # first maximum: the highest threshold among equal F1
    tp_best = float(tp[best])
    return ThresholdChoice(
        threshold=float(scores[best]),
        f1=float(f1[best]),
        precision=tp_best / (best + 1),
        recall=tp_best / n_gt,
        detections=best + 1,
        ground_truth=n_gt,
    )


# ---------------------------------------------------------------------------- the method
@METHODS.register("online_teacher")
class OnlineTeacher(Method):
    """Online pseudo-label teacher with burn-in, EMA and weak/strong views (module docstring).

    Args:
        model: the student detector (anything with ``forward``, ``loss``, ``postprocess``).
        burn_in_iters: supervised-only steps before the teacher is copied from the student.
        init_weights: optional checkpoint (``best.pt``: its ``model``; ``last.pt``: its
            student) loaded into the student before training.
        ema_decay: EMA rate of the teacher (0.9996 in Unbiased Teacher; shorter CPU runs
            need a faster teacher).
        threshold: pseudo-box score threshold in ``[0, 1]``, or ``"auto"`` (F1 on the
            labeled validation images at the end of burn-in).
        threshold_iou: IoU of a true positive for ``"auto"``.
        unsup_weight: weight of the unsupervised loss (``lambda_u``).
        unsup_terms: keys of ``model.loss`` summed into ``loss_unsup`` (``None``: all).
        keep_empty: keep unlabeled images without pseudo boxes (as background only).
        require_focal: refuse a detector whose ``cls_loss`` is not ``"focal"``.
        weak_flip: flip probability of the teacher's view.
        brightness: brightness jitter of the strong view, in image standard deviations.
        contrast: contrast jitter (relative).
        saturation: saturation jitter (relative; identity on grey images).
        jitter_p: probability of the intensity jitter per image.
        scale_min: smallest scale factor of the strong view.
        scale_max: largest scale factor of the strong view.
        size_divisor: the scaled strong view is padded to a multiple of it (32, detectron2's
            ``size_divisibility``: any size runs, and 128, the data pipeline's padding, would
            cost up to 2.25x the pixels of a slightly up-scaled 256 px image).
        cutout_n: cutout squares per strong view image (0: none).
        cutout_size: square side at ``cutout_reference`` px width.
        cutout_reference: the width ``cutout_size`` refers to.
    """

    uses_unlabeled: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections")  # no dense maps: any detector
    burned_in: Tensor  # buffer: bool, burn-in finished (teacher copied)
    pseudo_threshold: Tensor  # buffer: float64, the score threshold (NaN: not chosen yet)
    threshold_f1: Tensor  # buffer: float64, F1 of the chosen threshold (NaN: not "auto")
    defaults: ClassVar[dict[str, Any]] = {
        "burn_in_iters": 500,
        "init_weights": None,
        "ema_decay": 0.999,
        "threshold": "auto",
        "threshold_iou": 0.5,
        "unsup_weight": 1.0,
        "unsup_terms": None,
        "keep_empty": False,
        "require_focal": True,
        "weak_flip": 0.5,
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.4,
        "jitter_p": 0.8,
        "scale_min": 0.8,
        "scale_max": 1.2,
        "size_divisor": 32,
        "cutout_n": 5,
        "cutout_size": 70,
        "cutout_reference": 448,
    }

    def __init__(
        self,
        model: nn.Module,
        burn_in_iters: int = 500,
        init_weights: str | None = None,
        ema_decay: float = 0.999,
        threshold: float | str = "auto",
        threshold_iou: float = 0.5,
        unsup_weight: float = 1.0,
        unsup_terms: Sequence[str] | None = None,
        keep_empty: bool = False,
        require_focal: bool = True,
        weak_flip: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        jitter_p: float = 0.8,
        scale_min: float = 0.8,
        scale_max: float = 1.2,
        size_divisor: int = 32,
        cutout_n: int = 5,
        cutout_size: int = 70,
        cutout_reference: int = 448,
    ) -> None:
        super().__init__(model)
        if require_focal and getattr(model, "cls_loss", "focal") != "focal":
            raise _fail(
                "require_focal",
                require_focal,
                f"the detector's cls_loss is {getattr(model, 'cls_loss', None)!r}; the online "
                "teacher trains with the focal loss (set model.cls_loss=focal, or "
                "method.require_focal=false to accept it)",
            )
        if isinstance(burn_in_iters, bool) or int(burn_in_iters) < 0:
            raise _fail("burn_in_iters", burn_in_iters, "expected an integer >= 0")
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise _fail("ema_decay", ema_decay, "expected a number in [0, 1]")
        auto = isinstance(threshold, str)
        if auto and threshold != "auto":
            raise _fail("threshold", threshold, "expected a score in [0, 1] or 'auto'")
        if not auto and not 0.0 <= float(threshold) <= 1.0:
            raise _fail("threshold", threshold, "expected a score in [0, 1] or 'auto'")
        if not 0.0 < float(threshold_iou) <= 1.0:
            raise _fail("threshold_iou", threshold_iou, "expected an IoU in (0, 1]")
        if float(unsup_weight) < 0:
            raise _fail("unsup_weight", unsup_weight, "expected >= 0")
        if unsup_terms is not None and (
            isinstance(unsup_terms, str)
            or not unsup_terms
            or not all(isinstance(t, str) for t in unsup_terms)
        ):
            raise _fail(
                "unsup_terms", unsup_terms, "expected null or a non-empty list of loss keys"
            )
        for key, p in (("weak_flip", weak_flip), ("jitter_p", jitter_p)):
            if not 0.0 <= float(p) <= 1.0:
                raise _fail(key, p, "expected a probability in [0, 1]")
        for key, amount in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= float(amount) <= 1.0:
                raise _fail(key, amount, "expected a jitter amplitude in [0, 1]")
        if not 0.0 < float(scale_min) <= float(scale_max):
            raise _fail("scale_min/scale_max", (scale_min, scale_max), "expected 0 < min <= max")
        if int(size_divisor) < 1:
            raise _fail("size_divisor", size_divisor, "expected an integer >= 1")
        if int(cutout_n) < 0 or int(cutout_size) < 1 or int(cutout_reference) < 1:
            raise _fail(
                "cutout_n/cutout_size/cutout_reference",
                (cutout_n, cutout_size, cutout_reference),
                "expected n >= 0, sizes >= 1",
            )

        self.burn_in_iters = int(burn_in_iters)
        self.auto_threshold = auto
        self.threshold_iou = float(threshold_iou)
        self.unsup_weight = float(unsup_weight)
        self.unsup_terms = None if unsup_terms is None else [str(t) for t in unsup_terms]
        self.keep_empty = bool(keep_empty)
        self.weak_flip = float(weak_flip)
        self.aug: dict[str, Any] = {
            "brightness": float(brightness),
            "contrast": float(contrast),
            "saturation": float(saturation),
            "jitter_p": float(jitter_p),
            "scale_range": (float(scale_min), float(scale_max)),
            "size_divisor": int(size_divisor),
            "cutout_n": int(cutout_n),
            "cutout_size": int(cutout_size),
            "cutout_reference": int(cutout_reference),
        }
        if init_weights is not None:
            self._load_init_weights(str(init_weights))
        self.teacher = create_teacher(model, init="copy")
        self.ema = ModelEma(float(ema_decay), buffers="ema", warmup=False)
        # state for an exact resume (in state_dict): burn-in done, threshold and its F1
        self.register_buffer("burned_in", torch.tensor(False))
        self.register_buffer(
            "pseudo_threshold",
            torch.tensor(math.nan if auto else float(threshold), dtype=torch.float64),
        )
        self.register_buffer("threshold_f1", torch.tensor(math.nan, dtype=torch.float64))
        self._validation: tuple[Any, list[int], Callable[[Sample], Sample] | None, int] | None = (
            None
        )

    # ------------------------------------------------------------------ set-up
    def _load_init_weights(self, path: str) -> None:
        """Student weights from a model (``best.pt``) or training (``last.pt``) checkpoint."""
        from ssmd.engine.checkpoint import CheckpointError, load_checkpoint  # lazy: no engine dep

        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            raise _fail("init_weights", path, str(exc)) from None
        kind = state.get("kind")
        if kind == "ssmd-model" and "model" in state:
            weights = state["model"]
        elif kind == "ssmd-train" and "method" in state:
            weights = {k[6:]: v for k, v in state["method"].items() if k.startswith("model.")}
        else:
            raise _fail("init_weights", path, f"field 'kind' = {kind!r}: not an ssmd checkpoint")
        try:
            self.model.load_state_dict(strip_feature_perturbations(weights))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise _fail(
                "init_weights", path, f"its detector does not match this run's model: {first}"
            ) from None

    def set_validation_samples(
        self,
        samples: Any,
        indices: Sequence[int],
        transform: Callable[[Sample], Sample] | None = None,
        batch_size: int = 4,
    ) -> None:
        """The labeled validation images ``samples[i]``, ``i in indices``, for ``threshold="auto"``.

        Called by :func:`ssmd.tasks.detection.run_training` with the prepared samples of the
        split's ``val`` part and the intensity normalisation (never the test part).

        Raises:
            ValueError: ``threshold="auto"`` and no validation image.
        """
        if self.auto_threshold and not bool(self.burned_in) and len(indices) == 0:
            raise _fail(
                "threshold",
                "auto",
                "needs labeled validation images, and the split has none (set split.val > 0 "
                "or a numeric method.threshold)",
            )
        self._validation = (samples, list(indices), transform, max(1, int(batch_size)))

    def train(self, mode: bool = True) -> OnlineTeacher:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def inference_model(self, which: str = "student") -> nn.Module:
        """``"student"`` (default) or ``"teacher"`` (the EMA network)."""
        if which == "student":
            return self.model
        if which == "teacher":
            return self.teacher
        raise ValueError(f"OnlineTeacher has networks 'student' and 'teacher', not {which!r}")

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA of the student into the teacher, once burn-in is over (the only way it moves)."""
        if bool(self.burned_in):
            self.ema.update(self.teacher, self.model, step)

    # ------------------------------------------------------------------ burn-in / threshold
    @torch.no_grad()
    def teacher_detections(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]]
    ) -> list[dict[str, Tensor]]:
        """The teacher's post-processed detections (eval mode, no gradient)."""
        self.teacher.eval()
        teacher = cast(Any, self.teacher)
        detections: list[dict[str, Tensor]] = teacher.postprocess(teacher(images), image_sizes)
        return detections

    @torch.no_grad()
    def choose_threshold(self) -> ThresholdChoice:
        """The F1-optimal threshold of the teacher on the labeled validation images."""
        if self._validation is None:
            raise RuntimeError(
                "method.threshold = 'auto' needs the labeled validation images: train through "
                "ssmd.tasks.detection.run_training, or call set_validation_samples() first"
            )
        samples, indices, transform, batch_size = self._validation
        if not indices:
            raise _fail("threshold", "auto", "needs labeled validation images; none were given")
        detections: list[dict[str, Tensor]] = []
        boxes: list[Tensor] = []
        labels: list[Tensor] = []
        for start in range(0, len(indices), batch_size):
            drawn = [samples[i] for i in indices[start : start + batch_size]]
            if transform is not None:
                drawn = [transform(s) for s in drawn]
            batch = collate(drawn)
            detections += self.teacher_detections(batch.images, batch.image_sizes)
            boxes += batch.boxes
            labels += batch.labels
        return f1_optimal_threshold(detections, boxes, labels, self.threshold_iou)

    @torch.no_grad()
    def finish_burn_in(self) -> None:
        """Teacher <- student; with ``threshold="auto"`` choose the threshold (once)."""
        self.teacher.load_state_dict(self.model.state_dict())
        self.teacher.eval()
        if self.auto_threshold and math.isnan(float(self.pseudo_threshold)):
            choice = self.choose_threshold()
            self.pseudo_threshold.fill_(choice.threshold)
            self.threshold_f1.fill_(choice.f1)
            message = (
                f"online_teacher: threshold {choice.threshold:.4f} maximises F1 = {choice.f1:.3f} "
                f"(precision {choice.precision:.3f}, recall {choice.recall:.3f}; "
                f"{choice.detections} detections, {choice.ground_truth} ground-truth boxes at "
                f"IoU >= {self.threshold_iou}) on the labeled validation images"
            )
            if choice.f1 == 0:
                logger.warning(
                    "%s: no detection matches, so no pseudo box will be used; burn in longer "
                    "(method.burn_in_iters) or set method.threshold",
                    message,
                )
            else:
                logger.info(message)
        self.burned_in.fill_(True)

    # ------------------------------------------------------------------ pieces of a step
    def pseudo_labels(self, unlabeled: Batch) -> tuple[View, list[Tensor], list[Tensor]]:
        """Hard pseudo boxes from the teacher's weak view, in the base images' pixels.

        Returns:
            ``(weak view, boxes, labels)``; per image ``Tensor[P_i, 4]`` ``xyxy`` and
            ``Tensor[P_i]``, the detections with ``score >= threshold``. The batch's own
            boxes (the hidden ground truth of the unlabeled images) are never read.
        """
        weak = weak_view(unlabeled.images, unlabeled.image_sizes, self.weak_flip)
        detections = self.teacher_detections(weak.images, weak.image_sizes)
        thr = float(self.pseudo_threshold)
        keep = [
            (d["scores"] >= thr) & self.allowed_labels(unlabeled, i, d["labels"])
            for i, d in enumerate(detections)
        ]
        boxes = [d["boxes"][k].detach() for d, k in zip(detections, keep, strict=True)]
        labels = [d["labels"][k].detach() for d, k in zip(detections, keep, strict=True)]
        return weak, weak.transform.inverse().apply(boxes), labels

    def allowed_labels(self, unlabeled: Batch, i: int, labels: Tensor) -> Tensor:
        """Which teacher detections of unlabeled image ``i`` (by class) may become pseudo
        boxes; all of them here (a subclass with image labels gates them)."""
        return torch.ones_like(labels, dtype=torch.bool)

    def keep_empty_image(self, unlabeled: Batch, i: int) -> bool:
        """Whether unlabeled image ``i`` without a pseudo box is trained as background."""
        return self.keep_empty

    def unsupervised_loss(self, unlabeled: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's detector loss on its strong view with the teacher's pseudo boxes.

        Returns:
            ``(loss_unsup, diagnostics)``; the loss is un-weighted and differentiable with
            respect to the student only (zero when no image has a pseudo box and
            ``keep_empty`` is off).
        """
        zero = unlabeled.images.new_zeros(())
        _, base_boxes, labels = self.pseudo_labels(unlabeled)
        strong = strong_view(unlabeled.images, unlabeled.image_sizes, **self.aug)
        boxes = strong.transform.apply(base_boxes)
        ok = [nondegenerate(b, 1.0) for b in boxes]
        boxes = [b[k] for b, k in zip(boxes, ok, strict=True)]
        labels = [lab[k] for lab, k in zip(labels, ok, strict=True)]
        counts = [len(b) for b in boxes]
        kept = [i for i, n in enumerate(counts) if n > 0 or self.keep_empty_image(unlabeled, i)]
        b_u = max(1, len(counts))
        stats = {
            "pseudo_boxes_per_image": torch.tensor(sum(counts) / b_u, dtype=torch.float64),
            "pseudo_image_fraction": torch.tensor(
                sum(n > 0 for n in counts) / b_u, dtype=torch.float64
            ),
            "pseudo_threshold": self.pseudo_threshold.detach().clone(),
        }
        if self.auto_threshold:
            stats["threshold_f1"] = self.threshold_f1.detach().clone()
        if not kept:
            return zero, stats
        idx = torch.tensor(kept, device=strong.images.device)
        targets = [{"boxes": boxes[i], "labels": labels[i]} for i in kept]
        terms: dict[str, Tensor] = cast(Any, self.model).loss(
            self.model(strong.images.index_select(0, idx)), targets
        )
        names = list(terms) if self.unsup_terms is None else self.unsup_terms
        missing = [n for n in names if n not in terms]
        if missing:
            raise _fail(
                "unsup_terms", self.unsup_terms, f"the detector's loss has keys {sorted(terms)}"
            )
        for n in names:
            stats[f"unsup_{n}"] = terms[n].detach()
        return sum((terms[n] for n in names), start=zero), stats

    # ------------------------------------------------------------------ the step
    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Supervised loss, plus ``unsup_weight * loss_unsup`` after burn-in.

        Returns:
            the detector's supervised terms (``loss_cls``, ``loss_box`` for RetinaNet),
            ``loss_unsup`` (un-weighted; 0 during burn-in), the diagnostics of the module
            docstring after burn-in, and ``loss``.
        """
        self.teacher.eval()
        active = step >= self.burn_in_iters and unlabeled is not None and len(unlabeled) > 0
        if active and not bool(self.burned_in):
            self.finish_burn_in()  # before any forward of this step: the burnt-in student
        zero = labeled.images.new_zeros(())
        model = cast(Any, self.model)
        losses: dict[str, Tensor] = dict(model.loss(self.model(labeled.images), labeled.targets()))
        supervised = sum(losses.values(), start=zero)
        unsup = zero
        if active and unlabeled is not None:
            unsup, stats = self.unsupervised_loss(unlabeled)
            losses.update(stats)
        losses["loss_unsup"] = unsup
        losses["loss"] = supervised + self.unsup_weight * unsup
        return losses
