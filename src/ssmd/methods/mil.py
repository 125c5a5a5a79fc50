"""Joint weakly- and semi-supervised detection: strong boxes + MIL over image labels.

Shin et al., "Joint Weakly and Semi-Supervised Deep Learning for Localization and
Classification of Masses in Breast Ultrasound Images" (IEEE TMI 2019): a two-stage detector
(Faster R-CNN) trained on a few **strong** images (boxes and diagnosis, "DXLoc": the
labeled stream) and many **weak** ones (diagnosis only, "DX": the unlabeled stream, whose
boxes are never read — only ``Batch.image_labels``)::

    L = L_s + alpha L_ws
    L_s = L_cls^RPN + L_reg^RPN + L_cls^FRC + L_reg^FRC      (the detector's own loss)

with ``L_ws`` the multiple-instance loss of :func:`ssmd.losses.mil.mil_loss` on the RoI
head's class scores over each weak image's proposals (``p_l(x_MoI)``, the mass of interest
chosen per image label by ``moi_normal`` / ``moi_benign`` / ``moi_malignant``).

Options (Table II of the slides):

* ``moi_benign``: the MoI rule for images labelled B (``most_malignant``, the proposed;
  ``most_benign``, ``most_discriminative``, ``most_abnormal`` the ablations);
  ``moi_malignant`` for M (``most_malignant`` in every row of the paper); ``moi_normal`` for
  N (``most_abnormal``: the least-normal region, as the slides write).
* ``alpha_schedule``: ``"static"`` (``alpha`` throughout; Table II's 0.5 row) or
  ``"gradual"`` (the proposed "gradual increase"; the slides give no curve: here ``alpha``
  times the ramp-up ``exp(-5 (1 - t)^2)`` over the first ``ramp_fraction`` of training,
  :func:`ssmd.methods.schedules.sigmoid_rampup`, the usual semi-supervised ramp).
* ``start_fraction`` (not in the paper; default 0): no MIL before this share of training, then
  the schedule above starts — the MoI is only as good as the detector that picks it, and a
  detector trained from scratch on a few strong images picks wrong regions early on;
  ``moi_top_proposals`` (not in the paper; default 0 = all): the MoI is chosen among the
  ``k`` best proposals by objectness only (the RPN is trained on the strong boxes).
* ``batching``: ``"combined"`` (the proposed single mini-batch: both streams' losses in one
  update) or ``"alternating"`` (even steps a strong mini-batch with ``L_s``, odd steps a weak
  one with ``alpha L_ws``). In ``combined`` mode the strong and weak images go through the
  network in two forward passes of one step (their sizes differ; with GroupNorm or frozen
  BatchNorm this equals one forward of the concatenated batch).

Logged every step (``metrics.jsonl``): ``mil_alpha`` (the weight applied), ``mil_weak_step``
(1 when the step used the weak stream), ``mil_moi_correct`` (fraction of weak images whose
MoI's most likely class is the image label), ``mil_p_label`` (mean ``P_{l*}(I)``),
``mil_images`` and ``mil_no_region`` (weak images without any proposal, skipped).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ssmd.losses.mil import MOI_RULES, mil_loss
from ssmd.methods.base import METHODS, Method
from ssmd.methods.schedules import sigmoid_rampup
from ssmd.structures.sample import Batch

__all__ = ["MIL", "MILSelfTraining"]

ALPHA_SCHEDULES = ("static", "gradual")
BATCHINGS = ("combined", "alternating")


def moi_rules(model: nn.Module, normal: str, benign: str, malignant: str) -> dict[int, str]:
    """Region class -> MoI rule: 0 normal, 1 benign, ``K`` malignant (``K = 2`` for BUSI).

    Raises:
        ValueError: a rule not in :data:`ssmd.losses.mil.MOI_RULES` (named by its key).
    """
    for key, rule in (("moi_normal", normal), ("moi_benign", benign), ("moi_malignant", malignant)):
        if rule not in MOI_RULES:
            raise ValueError(f"method.{key} = {rule!r}: one of {', '.join(MOI_RULES)}")
    k = int(getattr(model, "num_classes", 2))
    if k < 1:
        raise ValueError(f"MIL needs a detector with >= 1 foreground class, got {k}")
    rules = {0: normal, 1: benign}
    rules[k] = malignant if k > 1 else benign
    return rules


def check_weight_params(alpha: float, alpha_schedule: str, ramp_fraction: float) -> None:
    """Refuse a bad MIL weight setting (``method.alpha``, ``alpha_schedule``, ``ramp_fraction``)."""
    if not float(alpha) >= 0.0:
        raise ValueError(f"method.alpha = {alpha!r}: must be >= 0")
    if alpha_schedule not in ALPHA_SCHEDULES:
        raise ValueError(
            f"method.alpha_schedule = {alpha_schedule!r}: one of {', '.join(ALPHA_SCHEDULES)}"
        )
    if not 0.0 <= float(ramp_fraction) <= 1.0:
        raise ValueError(f"method.ramp_fraction = {ramp_fraction!r}: must be in [0, 1]")


def mil_weight(
    step: int,
    max_iters: int,
    alpha: float,
    schedule: str = "gradual",
    ramp_fraction: float = 0.5,
    start_fraction: float = 0.0,
) -> float:
    """The MIL weight at ``step`` (0-based) of ``max_iters``.

    0 before ``start = round(start_fraction * max_iters)``; from there ``alpha``
    (``"static"``) or ``alpha * exp(-5 (1 - t)^2)``, ``t = (step - start) / (ramp_fraction *
    max_iters)`` capped at 1 (``"gradual"``, :func:`ssmd.methods.schedules.sigmoid_rampup`).
    """
    start = round(start_fraction * max_iters)
    if step < start:
        return 0.0
    if schedule == "static":
        return float(alpha)
    return float(alpha) * sigmoid_rampup(step - start, round(ramp_fraction * max_iters))


def weak_mil_loss(
    model: nn.Module,
    weak: Batch,
    rules: dict[int, str],
    weak_normal: bool = True,
    top_proposals: int = 0,
) -> tuple[Tensor, dict[str, float]]:
    """``L_ws`` of a weak batch through ``model``'s region scores, and its statistics.

    ``model(images, with_roi=True).roi_cls_logits`` over each image's proposals (with
    ``top_proposals > 0``: the RoI head on only the ``top_proposals`` best proposals by
    objectness, ``model.roi_outputs``) goes to :func:`ssmd.losses.mil.mil_loss`; with
    ``weak_normal=False`` images labelled normal are left out.

    Raises:
        ValueError: a weak image without an image label (named by its path).
    """
    keep = []
    for i, lab in enumerate(weak.image_labels):
        if lab is None:
            raise ValueError(
                f"MIL needs an image-level label on every weak image; {weak.paths[i]} has "
                "none (use a format with image labels, e.g. data.format=busi)"
            )
        if lab != 0 or weak_normal:
            keep.append(i)
    if not keep:
        zero = weak.images.new_zeros(())
        return zero, {"images": 0.0, "no_region": 0.0, "moi_correct": 0.0, "p_label": 0.0}
    images = weak.images[keep] if len(keep) < len(weak) else weak.images
    if top_proposals > 0:  # candidates: the best proposals by objectness (best first)
        outputs = model(images, with_roi=False)
        boxes = [p[:top_proposals] for p in outputs.proposals]
        logits, _ = cast(Any, model).roi_outputs(outputs, boxes)  # (sum P_i, K+1)
        counts = [int(b.shape[0]) for b in boxes]
    else:
        outputs = model(images, with_roi=True)
        logits = cast(Tensor, outputs.roi_cls_logits)  # (sum P_i, K+1)
        counts = [int(p.shape[0]) for p in outputs.proposals]
    per_image = list(torch.split(logits, counts))  # P_i x (K+1) each
    labels = [int(cast(int, weak.image_labels[i])) for i in keep]
    return mil_loss(per_image, labels, rules)


@METHODS.register("mil")
class MIL(Method):
    """Strong Faster R-CNN losses + ``alpha`` times MIL on weak images (module docstring).

    Args:
        model: a detector with region scores (``provides_region_scores``: Faster R-CNN).
        alpha: the MIL scale factor (0.5 as Table II's static row).
        alpha_schedule: ``"static"`` or ``"gradual"``.
        ramp_fraction: share of training over which ``gradual`` reaches ``alpha``.
        batching: ``"combined"`` or ``"alternating"``.
        moi_normal, moi_benign, moi_malignant: MoI rule per image label
            (:data:`ssmd.losses.mil.MOI_RULES`).
        weak_normal: use weak images labelled normal (``False``: only B / M weak images
            contribute to ``L_ws``; the paper's weak set held no normal image).
    """

    uses_unlabeled: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections", "region_scores")
    defaults: ClassVar[dict[str, Any]] = {
        "alpha": 0.5,
        "alpha_schedule": "gradual",
        "ramp_fraction": 0.5,
        "batching": "combined",
        "moi_normal": "most_abnormal",
        "moi_benign": "most_malignant",
        "moi_malignant": "most_malignant",
        "weak_normal": True,
        "start_fraction": 0.0,
        "moi_top_proposals": 0,
    }

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.5,
        alpha_schedule: str = "gradual",
        ramp_fraction: float = 0.5,
        batching: str = "combined",
        moi_normal: str = "most_abnormal",
        moi_benign: str = "most_malignant",
        moi_malignant: str = "most_malignant",
        weak_normal: bool = True,
        start_fraction: float = 0.0,
        moi_top_proposals: int = 0,
    ) -> None:
        super().__init__(model)
        check_weight_params(alpha, alpha_schedule, ramp_fraction)
        if batching not in BATCHINGS:
            raise ValueError(f"method.batching = {batching!r}: one of {', '.join(BATCHINGS)}")
        self.rules = moi_rules(model, moi_normal, moi_benign, moi_malignant)
        self.alpha = float(alpha)
        self.alpha_schedule = alpha_schedule
        self.ramp_fraction = float(ramp_fraction)
        self.batching = batching
        self.weak_normal = bool(weak_normal)
        if not 0.0 <= float(start_fraction) < 1.0:
            raise ValueError(f"method.start_fraction = {start_fraction!r}: must be in [0, 1)")
        if isinstance(moi_top_proposals, bool) or int(moi_top_proposals) < 0:
            raise ValueError(f"method.moi_top_proposals = {moi_top_proposals!r}: must be >= 0")
        self.start_fraction = float(start_fraction)
        self.moi_top_proposals = int(moi_top_proposals)

    def alpha_at(self, step: int, max_iters: int) -> float:
        """The MIL weight applied at ``step`` (0-based) of ``max_iters`` (:func:`mil_weight`)."""
        return mil_weight(
            step,
            max_iters,
            self.alpha,
            self.alpha_schedule,
            self.ramp_fraction,
            self.start_fraction,
        )

    def weak_loss(self, weak: Batch) -> tuple[Tensor, dict[str, float]]:
        """``L_ws`` of a weak batch and its statistics (:func:`weak_mil_loss`)."""
        return weak_mil_loss(self.model, weak, self.rules, self.weak_normal, self.moi_top_proposals)

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        if unlabeled is None:
            raise ValueError("MIL needs the weak (unlabeled) stream")
        alpha = self.alpha_at(step, max_iters)
        weak_step = self.batching == "combined" or step % 2 == 1
        strong_step = self.batching == "combined" or step % 2 == 0
        zero = labeled.images.new_zeros(())
        losses: dict[str, Tensor] = {}
        total = zero
        if strong_step:
            outputs = self.model(labeled.images)
            strong = cast(Any, self.model).loss(outputs, labeled.targets())
            losses.update(strong)
            total = total + sum(strong.values(), start=zero)
        if weak_step and alpha == 0.0 and self.start_fraction > 0.0:
            weak_step = False  # before start_fraction: the weak stream is not used yet
        if weak_step:
            l_ws, stats = self.weak_loss(unlabeled)
            losses["loss_mil"] = l_ws.detach()
            total = total + alpha * l_ws
        else:
            stats = {"images": 0.0, "no_region": 0.0, "moi_correct": 0.0, "p_label": 0.0}
            losses["loss_mil"] = zero
        losses["loss"] = total
        losses["mil_alpha"] = torch.tensor(alpha if weak_step else 0.0)
        losses["mil_weak_step"] = torch.tensor(float(weak_step))
        for key in ("moi_correct", "p_label", "images", "no_region"):
            losses[f"mil_{key}"] = torch.tensor(float(stats[key]))
        return losses


@METHODS.register("mil_self_training")
class MILSelfTraining(MIL):
    """MIL retrained after moving confident weak images to the strong set (Table IV).

    The recipe :mod:`ssmd.tasks.mil_self_training`: an initial :class:`MIL` run, the
    selection, and this method's own run on the enlarged strong set (trained exactly as
    :class:`MIL`).

    Args:
        self_train_fraction: share of the abnormal weak images moved (0.5 / 0.75 as Table IV).
        initial_dir: a finished ``mil`` run to use as the initial detector.
        **kwargs: :class:`MIL`'s parameters.
    """

    recipe: ClassVar[str | None] = "mil_self_training"
    defaults: ClassVar[dict[str, Any]] = {
        **MIL.defaults,
        "self_train_fraction": 0.5,
        "initial_dir": None,
    }

    def __init__(
        self,
        model: nn.Module,
        self_train_fraction: float = 0.5,
        initial_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if not 0.0 < float(self_train_fraction) <= 1.0:
            raise ValueError(
                f"method.self_train_fraction = {self_train_fraction!r}: must be in (0, 1]"
            )
        self.self_train_fraction = float(self_train_fraction)
        self.initial_dir = initial_dir
