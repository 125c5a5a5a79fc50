"""MIL plus an online pseudo-label teacher on the weak images — beyond the BUSI paper.

Not a method of Shin et al.: issue 20 asks whether the project's consistency methods add to
MIL as a third signal on the weak images' pixels. This is :class:`OnlineTeacher` (EMA
teacher on a weak view, hard pseudo boxes above a threshold chosen on labeled validation
images, the student on a strong view) with two changes that the image labels allow, plus the
MIL loss of :mod:`ssmd.methods.mil`::

    L = L_s + unsup_weight * L_unsup + alpha * L_ws

* **pseudo boxes gated by the image label** (``gate_by_image_label``, default on): a weak
  image labelled benign keeps only the teacher's benign detections, one labelled malignant
  only malignant ones; an image labelled **normal** keeps none and is trained as background
  everywhere (its label says there is no mass), whatever ``keep_empty`` says for the others;
* **MIL** on the weak images as the engine augmented them (``alpha``, ``alpha_schedule``,
  ``ramp_fraction``, ``moi_*``, ``weak_normal`` as :class:`ssmd.methods.mil.MIL`).

Logged as the two methods log (``pseudo_*``, ``mil_*``), plus ``gated_out`` (teacher
detections above the threshold dropped by the gate, per image).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.methods.base import METHODS
from ssmd.methods.mil import check_weight_params, mil_weight, moi_rules, weak_mil_loss
from ssmd.methods.online_teacher import OnlineTeacher
from ssmd.structures.sample import Batch

__all__ = ["MILTeacher"]


@METHODS.register("mil_teacher")
class MILTeacher(OnlineTeacher):
    """Online teacher with image-label-gated pseudo boxes + MIL (module docstring).

    Args:
        model: a detector with region scores (Faster R-CNN).
        alpha, alpha_schedule, ramp_fraction, moi_normal, moi_benign, moi_malignant,
            weak_normal: the MIL part (:class:`ssmd.methods.mil.MIL`).
        gate_by_image_label: keep only pseudo boxes of the image's class; normal images
            are background.
        **kwargs: :class:`~ssmd.methods.online_teacher.OnlineTeacher`'s parameters.
    """

    requires: ClassVar[tuple[str, ...]] = ("losses", "detections", "region_scores")
    defaults: ClassVar[dict[str, Any]] = {
        **OnlineTeacher.defaults,
        "require_focal": False,  # Faster R-CNN's losses are cross-entropies
        "alpha": 0.5,
        "alpha_schedule": "gradual",
        "ramp_fraction": 0.5,
        "moi_normal": "most_abnormal",
        "moi_benign": "most_malignant",
        "moi_malignant": "most_malignant",
        "weak_normal": True,
        "gate_by_image_label": True,
    }

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.5,
        alpha_schedule: str = "gradual",
        ramp_fraction: float = 0.5,
        moi_normal: str = "most_abnormal",
        moi_benign: str = "most_malignant",
        moi_malignant: str = "most_malignant",
        weak_normal: bool = True,
        gate_by_image_label: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("require_focal", False)
        super().__init__(model, **kwargs)
        check_weight_params(alpha, alpha_schedule, ramp_fraction)
        self.alpha = float(alpha)
        self.alpha_schedule = alpha_schedule
        self.ramp_fraction = float(ramp_fraction)
        self.rules = moi_rules(model, moi_normal, moi_benign, moi_malignant)
        self.weak_normal = bool(weak_normal)
        self.gate = bool(gate_by_image_label)
        self._gated_out = 0

    def _image_label(self, unlabeled: Batch, i: int) -> int:
        lab = unlabeled.image_labels[i]
        if lab is None:
            raise ValueError(
                f"mil_teacher needs an image-level label on every weak image; "
                f"{unlabeled.paths[i]} has none (use a format with image labels, e.g. busi)"
            )
        return int(lab)

    def allowed_labels(self, unlabeled: Batch, i: int, labels: Tensor) -> Tensor:
        if not self.gate:
            return super().allowed_labels(unlabeled, i, labels)
        allowed = labels == self._image_label(unlabeled, i)  # normal (0): no class allowed
        self._gated_out += int((~allowed).sum())
        return allowed

    def keep_empty_image(self, unlabeled: Batch, i: int) -> bool:
        if self.gate and self._image_label(unlabeled, i) == 0:
            return True  # a normal image has no mass: background everywhere
        return super().keep_empty_image(unlabeled, i)

    def alpha_at(self, step: int, max_iters: int) -> float:
        """The MIL weight at ``step`` (:func:`ssmd.methods.mil.mil_weight`)."""
        return mil_weight(step, max_iters, self.alpha, self.alpha_schedule, self.ramp_fraction)

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        if unlabeled is None:
            raise ValueError("mil_teacher needs the weak (unlabeled) stream")
        self._gated_out = 0
        losses = super().training_step(labeled, unlabeled, step, max_iters)
        alpha = self.alpha_at(step, max_iters)
        l_ws, stats = weak_mil_loss(self.model, unlabeled, self.rules, self.weak_normal)
        losses["loss_mil"] = l_ws.detach()
        losses["loss"] = losses["loss"] + alpha * l_ws
        losses["mil_alpha"] = torch.tensor(alpha)
        for key in ("moi_correct", "p_label", "images", "no_region"):
            losses[f"mil_{key}"] = torch.tensor(float(stats[key]))
        losses["gated_out"] = torch.tensor(self._gated_out / max(1, len(unlabeled)))
        return losses
