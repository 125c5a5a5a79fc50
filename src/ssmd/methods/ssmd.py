"""SSMD: adaptive consistency with heterogeneous perturbations (Zhou et al., Sec. 3, Algorithm 1).

One training step on ``B`` labeled and ``B`` unlabeled images (both already normalised and
augmented by the engine):

1. views (:func:`~ssmd.methods.perturb.make_consistency_views`): the student sees
   ``cutout(Rot(x))``; the teacher sees ``cutout'(Flip(Rot(x)))`` with the same angle and
   independent cutout squares (Algorithm 1 lines 1-2; see that module for the order);
2. the student (with its feature-noise layers, Sec. 3.2) runs on the labeled and on the
   unlabeled views in two forward passes, so the BatchNorm statistics of the supervised
   loss come from labeled images only, as in the supervised baseline; the supervised loss
   (line 10) uses the labeled view's rotated boxes;
3. the teacher's input gets the instance-level adversarial perturbation (Eq. (8)-(9), one
   extra teacher forward + backward to the input, run only on the images that have an
   anchor above ``tau`` — the others get ``r_adv = 0`` exactly), then the teacher predicts without
   gradient and its outputs are mirrored back with ``DenseOutputs.hflip()``, so every anchor
   of every level is compared with its counterpart;
4. ``loss_cons`` = adaptive consistency cost (Eq. (4)-(5)) of the labeled images + that of
   the unlabeled images (lines 11-12, each a W-weighted mean over its anchors);
   ``loss = loss_cls + loss_box + lambda * loss_cons`` with ``lambda`` from Eq. (10) times
   ``consistency_weight`` (line 13);
5. after the optimiser step, :meth:`SSMD.after_step` moves the teacher by Eq. (2).

**Teacher.** A deep copy of the student made after the feature-noise layers are inserted
(``teacher_init="copy"``, or re-drawn with ``"independent"``, see
:func:`~ssmd.models.ema.create_teacher`), registered as ``self.teacher`` (checkpoint keys
``teacher.*``), with ``requires_grad=False`` and outside :meth:`trainable_parameters`. It
always runs in ``eval()`` mode: BatchNorm uses its running statistics, which are the EMA of
the student's (``ema_buffers="ema"``, see :mod:`ssmd.models.ema`), so its targets do not
depend on the batch, and its feature-noise layers are the identity — the student gets the
feature-space noise and the teacher the image-space adversarial noise, the heterogeneous
perturbations of the paper. ``teacher_noise=True`` switches the teacher's feature-noise
layers on (independent draws; BatchNorm stays in eval mode), as in the original mean teacher
where both branches are noisy.

The detector must produce softmax outputs (``K + 1`` logits with background at 0, the
``p^c[0]`` of Eq. (4)) and, with ``flip`` on, be fed images whose width is a multiple of its
largest stride (128 for ``P3..P7``) so that the anchor grid is mirror-symmetric; the data
pipeline pads to 128 by default.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ssmd.losses.consistency import COMPONENTS, adaptive_consistency_loss
from ssmd.methods.base import METHODS, Method
from ssmd.methods.perturb import (
    ConsistencyViews,
    erased_anchor_mask,
    instance_adversarial_perturbation,
    make_consistency_views,
)
from ssmd.methods.schedules import RAMPS, consistency_weight
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet
from ssmd.models.ema import BufferPolicy, ModelEma, TeacherInit, create_teacher
from ssmd.models.layers.noisy_residual import PERTURBATION_NAME, strip_feature_perturbations
from ssmd.models.layers.perturb import (
    FEATURE_NOISE_KINDS,
    insert_feature_perturbation,
    parse_feature_noise,
)
from ssmd.structures.sample import Batch

__all__ = ["SSMD"]


def _select(outputs: DenseOutputs, idx: Tensor) -> DenseOutputs:
    """The predictions of the images ``idx`` (``Tensor[B']`` int64) of a batch."""
    return DenseOutputs(
        [t.index_select(0, idx) for t in outputs.cls_logits],  # (B', A, K+1, H, W)
        [t.index_select(0, idx) for t in outputs.box_deltas],  # (B', A, 4, H, W)
        outputs.image_size,
    )


def _fail(key: str, value: object, need: str) -> ValueError:
    return ValueError(f"method.{key} = {value!r}: {need}")


@METHODS.register("ssmd")
class SSMD(Method):
    """Semi-supervised medical detection with a mean teacher (Sec. 3, Algorithm 1).

    Every component switches on and off from the method parameters (``method.<key>`` in the
    config); :attr:`defaults` lists them with the paper's values.

    Args:
        model: the student detector (a :class:`~ssmd.models.RetinaNet` with softmax outputs
            and a ResNet backbone when ``feature_noise`` is not ``"none"``); feature-noise
            layers are inserted into it in place.
        alpha: EMA factor of Eq. (2) (0.99, Table 6).
        teacher_init: ``"copy"`` or ``"independent"`` (:func:`~ssmd.models.ema.create_teacher`).
        teacher_weights: optional model checkpoint (a run's ``best.pt``) whose student weights
            replace the teacher's initial weights — not in the paper: with ``alpha=1`` the
            teacher stays that trained model (distillation through the consistency cost),
            the "oracle teacher" diagnostic of ``docs/benchmarks.md``.
        ema_buffers: ``"ema"`` or ``"copy"`` for BatchNorm running statistics.
        ema_warmup: mean-teacher warm-up ``alpha_n = min(alpha, 1 - 1/(n + 1))``.
        acc: adaptive weight of Eq. (4) (``False``: CSD's unweighted cost, Table 3).
        components: consistency terms, a subset of ``"cxywh"`` (Table 7).
        levels: number of finest pyramid levels regularised (Table 9); ``None``: all.
        feature_noise: ``"nrb"``, ``"dropout"``, ``"dropblock"``, ``"noise"``, ``"none"``, or
            Table 4's combinations ``"nrb+dropout"`` / ``"nrb+noise"``
            (:mod:`ssmd.models.layers.perturb`).
        noise_stages: ResNet stages (1..4) that get the feature noise; ``None``: the
            kind's default (all four; ``layer3, layer4`` for DropBlock).
        gamma: NRB sigmoid scale (0.9, Sec. 4.2).
        mu: noise mean (NRB, Gaussian noise).
        sigma: noise standard deviation (NRB, Gaussian noise).
        drop_prob: dropout / DropBlock probability.
        dropblock_size: DropBlock block side.
        teacher_noise: also perturb the teacher's features (class docstring).
        iap: instance-level adversarial perturbation of the teacher's input (Eq. (8)-(9)).
        xi: Eq. (8) scale (5e-7, Table 5).
        epsilon: L2 norm of ``r_adv`` per image (2.0, Table 5).
        tau: confidence threshold of Eq. (9) (0.95, Fig. 5).
        cutout: cutout on both branches (independent squares).
        cutout_n: squares per image (5, Table 8).
        cutout_size: square side at ``cutout_reference`` px (70, Table 8), scaled with width.
        cutout_reference: width the size refers to (448, the paper's DSB input).
        cutout_min_visible: labeled boxes less visible than this in the student's view are
            dropped from the supervised targets (0.5; 0 = the paper's literal reading;
            :mod:`ssmd.methods.perturb`).
        cutout_mask: leave the anchors erased in either view out of the consistency cost
            (True; False = literal reading).
        rotate: maximum rotation in degrees, one angle per image shared by both branches
            (10, Sec. 4.2); 0 disables it.
        flip: horizontal flip of the teacher's view.
        consistency_weight: ``lambda_max`` multiplying the ramp (1 in the paper).
        ramp: ``"eq10"`` (Eq. (10)) or ``"none"`` (constant ``lambda_max``).
    """

    uses_unlabeled: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "alpha": 0.99,
        "teacher_init": "copy",
        "teacher_weights": None,
        "ema_buffers": "ema",
        "ema_warmup": False,
        "acc": True,
        "components": COMPONENTS,
        "levels": None,
        "feature_noise": "nrb",
        "noise_stages": None,
        "gamma": 0.9,
        "mu": 0.0,
        "sigma": 1.0,
        "drop_prob": 0.1,
        "dropblock_size": 3,
        "teacher_noise": False,
        "iap": True,
        "xi": 5e-7,
        "epsilon": 2.0,
        "tau": 0.95,
        "cutout": True,
        "cutout_n": 5,
        "cutout_size": 70,
        "cutout_reference": 448,
        "cutout_min_visible": 0.5,
        "cutout_mask": True,
        "rotate": 10.0,
        "flip": True,
        "consistency_weight": 1.0,
        "ramp": "eq10",
    }

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.99,
        teacher_init: TeacherInit = "copy",
        teacher_weights: str | None = None,
        ema_buffers: BufferPolicy = "ema",
        ema_warmup: bool = False,
        acc: bool = True,
        components: str = COMPONENTS,
        levels: int | None = None,
        feature_noise: str | None = "nrb",
        noise_stages: list[int] | None = None,
        gamma: float = 0.9,
        mu: float = 0.0,
        sigma: float = 1.0,
        drop_prob: float = 0.1,
        dropblock_size: int = 3,
        teacher_noise: bool = False,
        iap: bool = True,
        xi: float = 5e-7,
        epsilon: float = 2.0,
        tau: float = 0.95,
        cutout: bool = True,
        cutout_n: int = 5,
        cutout_size: int = 70,
        cutout_reference: int = 448,
        cutout_min_visible: float = 0.5,
        cutout_mask: bool = True,
        rotate: float = 10.0,
        flip: bool = True,
        consistency_weight: float = 1.0,
        ramp: str = "eq10",
    ) -> None:
        super().__init__(model)
        activation = getattr(model, "activation", "softmax")
        if activation != "softmax":
            raise ValueError(
                f"SSMD needs a detector with softmax outputs (background p^c[0] of Eq. (4)); "
                f"got activation={activation!r} (set model.activation=softmax)"
            )
        kind = "none" if feature_noise is None else str(feature_noise)
        try:
            parse_feature_noise(kind)
        except ValueError:
            raise _fail(
                "feature_noise",
                feature_noise,
                f"expected one of {FEATURE_NOISE_KINDS} or a '+' combination (Table 4: "
                "'nrb+dropout', 'nrb+noise')",
            ) from None
        if teacher_init not in ("copy", "independent"):
            raise _fail("teacher_init", teacher_init, "expected 'copy' or 'independent'")
        if ema_buffers not in ("ema", "copy"):
            raise _fail("ema_buffers", ema_buffers, "expected 'ema' or 'copy'")
        if not 0.0 <= float(alpha) <= 1.0:
            raise _fail("alpha", alpha, "expected a number in [0, 1]")
        if not isinstance(components, str) or not components or set(components) - set(COMPONENTS):
            raise _fail("components", components, "expected a non-empty subset of 'cxywh'")
        if len(set(components)) != len(components):
            raise _fail("components", components, "letters must not repeat")
        num_levels = getattr(getattr(model, "anchor_generator", None), "num_levels", None)
        if levels is not None and (
            int(levels) < 1 or (num_levels is not None and int(levels) > int(num_levels))
        ):
            raise _fail("levels", levels, f"expected 1..{num_levels or 'number of levels'}")
        if ramp not in RAMPS:
            raise _fail("ramp", ramp, f"expected one of {RAMPS}")
        if float(consistency_weight) < 0:
            raise _fail("consistency_weight", consistency_weight, "expected >= 0")
        if iap and not 0.0 < float(xi) <= 1.0:
            raise _fail("xi", xi, "expected 0 < xi <= 1 (Eq. (8))")
        if float(epsilon) < 0:
            raise _fail("epsilon", epsilon, "expected >= 0")
        if not 0.0 <= float(tau) <= 1.0:
            raise _fail("tau", tau, "expected a probability in [0, 1]")
        if cutout and (int(cutout_n) < 0 or int(cutout_size) < 1 or int(cutout_reference) < 1):
            raise _fail(
                "cutout_n/cutout_size/cutout_reference",
                (cutout_n, cutout_size, cutout_reference),
                "expected n >= 0, size >= 1, reference >= 1",
            )
        if not 0.0 <= float(cutout_min_visible) <= 1.0:
            raise _fail("cutout_min_visible", cutout_min_visible, "expected a fraction in [0, 1]")
        if float(rotate) < 0:
            raise _fail("rotate", rotate, "expected a maximum angle >= 0 in degrees")

        self.alpha = float(alpha)
        self.acc = bool(acc)
        self.components = components
        self.levels = None if levels is None else int(levels)
        self.feature_noise = kind
        self.teacher_noise = bool(teacher_noise)
        self.iap = bool(iap)
        self.xi = float(xi)
        self.epsilon = float(epsilon)
        self.tau = float(tau)
        self.cutout_n = int(cutout_n) if cutout else 0
        self.cutout_size = int(cutout_size)
        self.cutout_reference = int(cutout_reference)
        self.cutout_min_visible = float(cutout_min_visible)
        self.cutout_mask = bool(cutout_mask)
        self.rotate = float(rotate)
        self.flip = bool(flip)
        self.consistency_weight = float(consistency_weight)
        self.ramp = ramp

        # Feature noise goes into the student before the teacher is copied from it, so both
        # have the same structure (and state-dict keys) for Eq. (2).
        self.noise_layers: list[nn.Module] = insert_feature_perturbation(
            model,
            kind,
            None if noise_stages is None else [int(s) for s in noise_stages],
            gamma=float(gamma),
            mu=float(mu),
            sigma=float(sigma),
            drop_prob=float(drop_prob),
            block_size=int(dropblock_size),
        )
        self.teacher = create_teacher(model, init=teacher_init)
        if teacher_weights is not None:
            self._load_teacher_weights(str(teacher_weights))
        self.ema = ModelEma(self.alpha, buffers=ema_buffers, warmup=bool(ema_warmup))
        self._set_teacher_mode()

    # ------------------------------------------------------------------ modes / teacher
    def _load_teacher_weights(self, path: str) -> None:
        """Teacher weights from the ``model`` (student) entry of a model checkpoint."""
        from ssmd.engine.checkpoint import load_checkpoint  # lazy: methods do not need engine

        state = load_checkpoint(path)
        if state.get("kind") != "ssmd-model" or "model" not in state:
            raise _fail("teacher_weights", path, "expected a model checkpoint (a run's best.pt)")
        try:
            # the source's own noise layers (an SSMD run's best.pt) are identity in eval mode
            weights = strip_feature_perturbations(state["model"])
            result = self.teacher.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise _fail(
                "teacher_weights", path, f"its detector does not match this run's model: {exc}"
            ) from None
        marker = f".{PERTURBATION_NAME}."
        missing = [k for k in result.missing_keys if marker not in f".{k}"]
        if missing or result.unexpected_keys:
            bad = (missing or result.unexpected_keys)[0]
            raise _fail(
                "teacher_weights",
                path,
                f"its detector does not match this run's model config (key {bad!r})",
            )

    def _set_teacher_mode(self) -> None:
        """Teacher in eval mode; its feature-noise layers on only with ``teacher_noise``."""
        self.teacher.eval()
        if self.teacher_noise:
            for name, module in self.teacher.named_modules():
                if name.split(".")[-1] == PERTURBATION_NAME:
                    module.train()

    def train(self, mode: bool = True) -> SSMD:
        """Set the student's mode; the teacher stays in eval mode (class docstring)."""
        super().train(mode)
        self._set_teacher_mode()
        return self

    def augment_overrides(self) -> dict[str, Any]:
        """With ``rotate > 0`` the data pipeline's rotation is off (``augment.rotate = 0``).

        Algorithm 1 rotates both branches by one shared angle; rotating the labeled images
        again in the data pipeline would compound two rotations (up to twice the angle) and,
        worse, enlarge every box twice (a rotated box is replaced by the axis-aligned box of
        its corners), so the supervised targets would be looser than the supervised
        baseline's. One rotation of at most ``rotate`` degrees, as the baseline gets.
        """
        return {"rotate": 0.0} if self.rotate > 0 else {}

    def inference_model(self, which: str = "student") -> nn.Module:
        """``"student"`` (the paper predicts with it) or ``"teacher"`` (the EMA network)."""
        if which == "student":
            return self.model
        if which == "teacher":
            return self.teacher
        raise ValueError(f"SSMD has networks 'student' and 'teacher', not {which!r}")

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Eq. (2): ``teacher <- alpha teacher + (1 - alpha) student`` (and the BN buffers)."""
        self.ema.update(self.teacher, self.model, step)

    # ------------------------------------------------------------------ pieces of a step
    def make_views(
        self,
        images: Tensor,
        boxes: list[Tensor] | None = None,
        labels: list[Tensor] | None = None,
    ) -> ConsistencyViews:
        """Student and teacher views of a batch ``Tensor[B, C, H, W]`` (Algorithm 1 lines 1-2)."""
        if self.flip:
            strides = getattr(getattr(self.model, "anchor_generator", None), "strides", None)
            if strides and int(images.shape[-1]) % int(max(strides)) != 0:
                raise ValueError(
                    f"SSMD with flip needs an input width that is a multiple of the largest "
                    f"stride {max(strides)} (mirror-symmetric anchors), got {int(images.shape[-1])}; "
                    "pad the images (data.pad_to) or set method.flip=false"
                )
        return make_consistency_views(
            images,
            boxes,
            labels,
            rotate_degrees=self.rotate,
            flip=self.flip,
            cutout_n=self.cutout_n,
            cutout_size=self.cutout_size,
            cutout_reference=self.cutout_reference,
            min_visible=self.cutout_min_visible if boxes is not None else 0.0,
        )

    def _teacher_aligned(self, images: Tensor, flipped: bool) -> DenseOutputs:
        out: DenseOutputs = self.teacher(images)
        return out.hflip() if flipped else out

    def teacher_predictions(self, views: ConsistencyViews, student: DenseOutputs) -> DenseOutputs:
        """Teacher outputs on its (adversarially perturbed) view, mapped onto the student's anchors.

        Args:
            views: the batch's views.
            student: the student's predictions on ``views.student`` (for Eq. (9)'s mask).

        Returns:
            Detached :class:`DenseOutputs` aligned anchor by anchor with ``student``.
        """
        inputs = views.teacher
        if self.iap and self.epsilon > 0:
            confident = self.confident_images(student)  # (B,)
            if bool(confident.any()):
                # Images without a confident anchor get r_adv = 0 (their g is 0, Eq. (9)), so
                # the adversarial pass runs on the others only; exact, since the teacher runs
                # in eval mode (no batch statistics) and the masked cost's sum of weights
                # gets nothing from the images left out.
                idx = confident.nonzero().flatten()  # (B',)

                mask = self.anchor_mask(views, student)
                sub_mask = None if mask is None else mask.index_select(0, idx)  # (B', N)

                def masked_cost(s: DenseOutputs, t: DenseOutputs) -> Tensor:
                    return adaptive_consistency_loss(
                        s,
                        t,
                        self.components,
                        self.levels,
                        acc=self.acc,
                        fg_threshold=self.tau,
                        detach_teacher=False,
                        anchor_mask=sub_mask,
                    )

                r_sub = instance_adversarial_perturbation(
                    lambda x: self._teacher_aligned(x, views.flipped),
                    inputs[idx],
                    _select(student, idx),
                    masked_cost,
                    xi=self.xi,
                    epsilon=self.epsilon,
                )  # (B', C, H, W)
                r_adv = torch.zeros_like(inputs).index_copy(0, idx, r_sub)  # (B, C, H, W)
                inputs = inputs + r_adv
        with torch.no_grad():
            return self._teacher_aligned(inputs, views.flipped).detach()

    def confident_images(self, student: DenseOutputs) -> Tensor:
        """Images that pass Eq. (9)'s indicator: ``Tensor[B]`` bool.

        True where some anchor of the regularised levels has a summed foreground
        probability ``1 - p_s[0]`` above ``tau``.
        """
        n = student.num_levels if self.levels is None else self.levels
        flags = [
            (1.0 - lvl.detach().softmax(dim=2)[:, :, 0] > self.tau).flatten(1).any(dim=1)
            for lvl in student.cls_logits[:n]
        ]  # each (B,)
        return torch.stack(flags).any(dim=0)

    def anchor_mask(self, views: ConsistencyViews, student: DenseOutputs) -> Tensor | None:
        """Anchors kept in the consistency cost (``Tensor[B, N]`` bool), ``None``: all."""
        if not self.cutout_mask or views.erased is None:
            return None
        return ~erased_anchor_mask(views.erased, student, self.levels)  # (B, N)

    def consistency(
        self, student: DenseOutputs, teacher: DenseOutputs, anchor_mask: Tensor | None = None
    ) -> Tensor:
        """Adaptive consistency cost (Eq. (4)-(5)) with this method's options."""
        return adaptive_consistency_loss(
            student, teacher, self.components, self.levels, acc=self.acc, anchor_mask=anchor_mask
        )

    def unlabeled_consistency(self, images: Tensor) -> Tensor:
        """Consistency cost of a batch without labels (Algorithm 1 line 12), un-weighted.

        Args:
            images: ``Tensor[B, C, H, W]``, normalised.

        Returns:
            Scalar; differentiable with respect to the student only.
        """
        views = self.make_views(images)
        student = self.model(views.student)
        return self.consistency(
            student, self.teacher_predictions(views, student), self.anchor_mask(views, student)
        )

    # ------------------------------------------------------------------ the step
    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Algorithm 1 for one batch of labeled and one of unlabeled images.

        Returns:
            ``loss_cls``, ``loss_box`` (supervised, on the student's labeled view),
            ``loss_cons`` (un-weighted consistency, labeled + unlabeled),
            ``loss_cons_labeled``, ``loss_cons_unlabeled``, ``cons_weight`` (``lambda``) and
            ``loss = loss_cls + loss_box + lambda * loss_cons``.
        """
        self._set_teacher_mode()
        lam = consistency_weight(step, max_iters, self.ramp, self.consistency_weight)
        zero = labeled.images.new_zeros(())

        views = self.make_views(labeled.images, list(labeled.boxes), list(labeled.labels))
        if views.boxes is None or views.labels is None:
            targets = labeled.targets()
        else:
            targets = [
                {"boxes": b, "labels": lab}
                for b, lab in zip(views.boxes, views.labels, strict=True)
            ]
        student_l = self.model(views.student)
        detector = cast(RetinaNet, self.model)  # any model with RetinaNet's loss() contract
        losses = detector.loss(student_l, targets)  # Eq. (1), Algorithm 1 line 10
        supervised = sum(losses.values(), start=zero)

        teacher_l = self.teacher_predictions(views, student_l)
        cons_l = self.consistency(student_l, teacher_l, self.anchor_mask(views, student_l))  # l. 11
        cons_u = zero
        if unlabeled is not None and len(unlabeled) > 0:
            cons_u = self.unlabeled_consistency(unlabeled.images)  # line 12
        cons = cons_l + cons_u
        losses["loss_cons"] = cons
        losses["loss_cons_labeled"] = cons_l.detach()
        losses["loss_cons_unlabeled"] = cons_u.detach()
        losses["cons_weight"] = torch.tensor(lam, dtype=zero.dtype, device=zero.device)
        losses["boxes_erased"] = torch.tensor(float(views.dropped), dtype=zero.dtype)
        losses["loss"] = supervised + lam * cons  # line 13
        return losses
