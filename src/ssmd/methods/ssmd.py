"""SSMD: adaptive consistency with heterogeneous perturbations (Zhou et al., Sec. 3, Algorithm 1).

One training step on ``B`` labeled and ``B`` unlabeled images (both already normalised and
augmented by the engine):

1. views (:func:`~ssmd.methods.perturb.make_consistency_views`): the student sees
   ``cutout(Rot(x))``; the teacher sees ``cutout'(Flip(Rot(x)))`` with the same angle and
   independent cutout squares (Algorithm 1 lines 1-2; see that module for the order), the
   rotated-in corners and the squares filled with the image's background value (``fill``,
   default the per-image median; ``teacher_cutout=False``: no squares in the teacher's view);
2. the student (with its feature-noise layers, Sec. 3.2) runs on the labeled and on the
   unlabeled views in two forward passes, so the BatchNorm statistics of the supervised
   loss come from labeled images only, as in the supervised baseline; the supervised loss
   (line 10) uses the labeled view's rotated boxes;
3. the teacher's input gets the instance-level adversarial perturbation (Eq. (8)-(9), one
   extra teacher forward + backward to the input, run only on the images that have an
   anchor above the threshold — the others get ``r_adv = 0`` exactly), then the teacher
   predicts without gradient and its outputs are mirrored back with ``DenseOutputs.hflip()``,
   so every anchor of every level is compared with its counterpart;
4. ``loss_cons`` = adaptive consistency cost (Eq. (4)-(5)) of the labeled images + that of
   the unlabeled images (lines 11-12, each a W-weighted mean over its anchors);
   ``loss = loss_cls + loss_box + lambda * loss_cons`` with ``lambda`` from Eq. (10) times
   ``consistency_weight`` (line 13);
5. after the optimiser step, :meth:`SSMD.after_step` moves the teacher by Eq. (2).

**Does each switch act?** A component that silently never runs is a defect, so every step
returns, beside the losses, how often each one acted (logged as ``train/<key>`` in
``metrics.jsonl``; never added to ``loss``): ``fg_max`` (mean over the step's images of the
student's largest foreground probability ``1 - p_s[0]``), ``iap_tau`` (the threshold of
Eq. (9) used), ``iap_images`` / ``iap_images_labeled`` / ``iap_images_unlabeled`` (fraction
of images whose ``r_adv`` is non-zero), ``iap_anchors`` (fraction of the regularised anchors
that pass the indicator), ``cutout_masked_anchors`` and ``cutout_masked_w`` (fraction of the
anchors, and of the Eq. (4) weight, left out of the cost by the cutout mask) and
``boxes_erased`` (labeled boxes dropped as mostly erased).

**The threshold of Eq. (9) and the score scale.** ``tau = 0.95`` assumes probabilities that
reach 0.95. The default focal loss does not produce them: on DSB the largest foreground
probability per image stays at 0.35-0.82 after ~500 steps (the highest of 27k test detections
of a trained supervised model is 0.937), so with the paper's threshold the adversarial step
never runs. Two ways out, both off by default: ``tau_mode="relative"`` (not in the paper)
compares with ``tau`` times the largest foreground probability of the batch (labeled and
unlabeled batches separately), so "confident" means "within ``1 - tau`` of the best the
detector currently does" (on the synthetic set it acts on 20-40 % of the images in the
first 40 steps); or train the detector with the cross entropy of Algorithm 1 line 10
(``model.cls_loss=ce``, :mod:`ssmd.losses.detection`), whose probabilities are calibrated
and reach the paper's scale (on the synthetic set, after 300 supervised steps, 67 % of the
validation images have an anchor above 0.95, none with the focal loss), and keep
``tau_mode="absolute"``. Both are measured on DSB by
``configs/experiments/ssmd_faithful_dsb_cpu.yaml``.

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

from ssmd.losses.consistency import COMPONENTS, adaptive_consistency_loss, adaptive_weight
from ssmd.methods.base import METHODS, Method
from ssmd.methods.perturb import (
    FILL_MODES,
    ConsistencyViews,
    erased_anchor_mask,
    erased_box_mask,
    instance_adversarial_perturbation,
    make_consistency_views,
)
from ssmd.methods.schedules import RAMPS, consistency_weight
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet, flatten_levels
from ssmd.models.ema import BufferPolicy, ModelEma, TeacherInit, create_teacher
from ssmd.models.layers.noisy_residual import PERTURBATION_NAME, strip_feature_perturbations
from ssmd.models.layers.perturb import (
    FEATURE_NOISE_KINDS,
    insert_feature_perturbation,
    parse_feature_noise,
)
from ssmd.structures.sample import Batch

__all__ = ["CUTOUT_MASKS", "SSMD", "TAU_MODES"]

TAU_MODES = ("absolute", "relative")
"""``tau_mode`` values: Eq. (9)'s fixed threshold, or ``tau`` times the batch's best score."""

CUTOUT_MASKS = ("cell", "box", "none")
"""``cutout_mask`` values (``True`` = ``"cell"``, ``False`` = ``"none"``)."""

_Stats = dict[str, list[float]]
"""Per-step diagnostics: name -> ``[numerator, denominator]``, summed over both batches."""


def _add(stats: _Stats | None, key: str, num: float, den: float) -> None:
    if stats is not None:
        entry = stats.setdefault(key, [0.0, 0.0])
        entry[0] += num
        entry[1] += den


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
        tau_mode: ``"absolute"`` (Eq. (9): ``1 - p_s[0] > tau``) or ``"relative"`` (not in
            the paper: ``> tau * max`` over the batch's regularised anchors; module
            docstring).
        cutout: cutout on both branches (independent squares).
        cutout_n: squares per image (5, Table 8).
        cutout_size: square side at ``cutout_reference`` px (70, Table 8), scaled with width.
        cutout_reference: width the size refers to (448, the paper's DSB input).
        cutout_min_visible: labeled boxes less visible than this in the student's view are
            dropped from the supervised targets (0.5; 0 = the paper's literal reading;
            :mod:`ssmd.methods.perturb`).
        cutout_mask: leave the anchors erased in either view out of the consistency cost:
            ``"cell"`` (or True: the anchor's feature-map cell is mostly erased),
            ``"box"`` (also when more than ``cutout_mask_fraction`` of the anchor's box, of
            the student's predicted box or of the teacher's is erased:
            :func:`~ssmd.methods.perturb.erased_box_mask`; needs a detector with
            ``anchors()`` and ``box_coder``), ``"none"`` (or False: the literal reading).
        cutout_mask_fraction: erased fraction of a box above which ``"box"`` drops the anchor.
        teacher_cutout: cut squares out of the teacher's view too (True, the paper); False
            gives the teacher a clean view (not in the paper).
        fill: value of the rotated-in corners and the cutout squares in normalised units:
            ``"median"`` (per image and channel, the background; default — a bug fix: the
            views used to be filled with 0, the dataset mean, a grey as bright as a
            nucleus), ``"dataset_mean"`` (that old 0) or a number
            (:func:`~ssmd.methods.perturb.background_fill`).
        rotate: maximum rotation in degrees, one angle per image shared by both branches
            (10, Sec. 4.2); 0 disables it.
        flip: horizontal flip of the teacher's view.
        consistency_weight: ``lambda_max`` multiplying the ramp (1 in the paper).
        ramp: ``"eq10"`` (Eq. (10)) or ``"none"`` (constant ``lambda_max``).
    """

    uses_unlabeled: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("losses", "detections", "dense_maps")
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
        "tau_mode": "absolute",
        "cutout": True,
        "cutout_n": 5,
        "cutout_size": 70,
        "cutout_reference": 448,
        "cutout_min_visible": 0.5,
        "cutout_mask": True,
        "cutout_mask_fraction": 0.25,
        "teacher_cutout": True,
        "fill": "median",
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
        tau_mode: str = "absolute",
        cutout: bool = True,
        cutout_n: int = 5,
        cutout_size: int = 70,
        cutout_reference: int = 448,
        cutout_min_visible: float = 0.5,
        cutout_mask: bool | str = True,
        cutout_mask_fraction: float = 0.25,
        teacher_cutout: bool = True,
        fill: str | float = "median",
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
        if tau_mode not in TAU_MODES:
            raise _fail("tau_mode", tau_mode, f"expected one of {TAU_MODES}")
        mask_mode = (
            "cell" if cutout_mask is True else "none" if cutout_mask is False else cutout_mask
        )
        if mask_mode not in CUTOUT_MASKS:
            raise _fail("cutout_mask", cutout_mask, f"expected one of {CUTOUT_MASKS} or a bool")
        if mask_mode == "box" and not (hasattr(model, "anchors") and hasattr(model, "box_coder")):
            raise _fail(
                "cutout_mask", cutout_mask, "'box' needs a detector with anchors() and box_coder"
            )
        if not 0.0 <= float(cutout_mask_fraction) < 1.0:
            raise _fail(
                "cutout_mask_fraction", cutout_mask_fraction, "expected a fraction in [0, 1)"
            )
        if (
            isinstance(fill, bool)
            or (isinstance(fill, str) and fill not in FILL_MODES)
            or not isinstance(fill, (str, int, float))
        ):
            raise _fail("fill", fill, f"expected one of {FILL_MODES} or a number")
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
        self.tau_mode = str(tau_mode)
        self.cutout_n = int(cutout_n) if cutout else 0
        self.cutout_size = int(cutout_size)
        self.cutout_reference = int(cutout_reference)
        self.cutout_min_visible = float(cutout_min_visible)
        self.cutout_mask = str(mask_mode)
        self.cutout_mask_fraction = float(cutout_mask_fraction)
        self.teacher_cutout = bool(teacher_cutout)
        self.fill: str | float = fill if isinstance(fill, str) else float(fill)
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
            fill=self.fill,
            teacher_cutout=self.teacher_cutout,
        )

    def _teacher_aligned(self, images: Tensor, flipped: bool) -> DenseOutputs:
        out: DenseOutputs = self.teacher(images)
        return out.hflip() if flipped else out

    def teacher_predictions(
        self, views: ConsistencyViews, student: DenseOutputs, stats: _Stats | None = None
    ) -> DenseOutputs:
        """Teacher outputs on its (adversarially perturbed) view, mapped onto the student's anchors.

        Args:
            views: the batch's views.
            student: the student's predictions on ``views.student`` (for Eq. (9)'s mask).
            stats: if given, ``fg_max``, ``iap_tau``, ``iap_images`` and ``iap_anchors``
                counts are added to it (module docstring).

        Returns:
            Detached :class:`DenseOutputs` aligned anchor by anchor with ``student``.
        """
        inputs = views.teacher
        fg = self.foreground(student)  # (B, N)
        b, n = int(fg.shape[0]), int(fg.shape[1])
        _add(stats, "fg_max", float(fg.max(dim=1).values.sum()) if n else 0.0, b)
        acted = 0
        if self.iap and self.epsilon > 0:
            threshold = self.iap_threshold(fg)
            passing = fg > threshold  # (B, N)
            confident = passing.any(dim=1)  # (B,), as confident_images()
            mask = self.anchor_mask(views, student)  # (B, N) or None
            if mask is not None:
                passing = passing & mask
            _add(stats, "iap_tau", threshold, 1.0)
            _add(stats, "iap_anchors", float(passing.sum()), passing.numel())
            if bool(confident.any()):
                # Images without a confident anchor get r_adv = 0 (their g is 0, Eq. (9)), so
                # the adversarial pass runs on the others only; exact, since the teacher runs
                # in eval mode (no batch statistics) and the masked cost's sum of weights
                # gets nothing from the images left out.
                idx = confident.nonzero().flatten()  # (B',)
                sub_mask = None if mask is None else mask.index_select(0, idx)  # (B', N)

                def masked_cost(s: DenseOutputs, t: DenseOutputs) -> Tensor:
                    return adaptive_consistency_loss(
                        s,
                        t,
                        self.components,
                        self.levels,
                        acc=self.acc,
                        fg_threshold=threshold,
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
                acted = int((r_sub.flatten(1).norm(dim=1) > 0).sum())
                r_adv = torch.zeros_like(inputs).index_copy(0, idx, r_sub)  # (B, C, H, W)
                inputs = inputs + r_adv
        _add(stats, "iap_images", acted, b)
        with torch.no_grad():
            return self._teacher_aligned(inputs, views.flipped).detach()

    def foreground(self, student: DenseOutputs) -> Tensor:
        """Summed foreground probability ``1 - p_s[0]`` of the regularised anchors: ``Tensor[B, N]``.

        Detached; rows in the flat anchor order of the consistency cost.
        """
        n = student.num_levels if self.levels is None else self.levels
        logits = flatten_levels([t.detach() for t in student.cls_logits[:n]])  # (B, N, K+1)
        return 1.0 - logits.softmax(dim=-1)[..., 0]  # (B, N)

    def iap_threshold(self, foreground: Tensor) -> float:
        """The threshold of Eq. (9)'s indicator for a batch.

        Args:
            foreground: :meth:`foreground` of the batch, ``Tensor[B, N]``.

        Returns:
            ``tau`` (``tau_mode="absolute"``) or ``tau`` times the largest foreground
            probability of the batch (``"relative"``).
        """
        if self.tau_mode == "relative" and foreground.numel():
            return self.tau * float(foreground.max())
        return self.tau

    def confident_images(self, student: DenseOutputs, threshold: float | None = None) -> Tensor:
        """Images that pass Eq. (9)'s indicator: ``Tensor[B]`` bool.

        True where some anchor of the regularised levels has a summed foreground
        probability ``1 - p_s[0]`` above ``threshold`` (default :meth:`iap_threshold`).
        """
        fg = self.foreground(student)  # (B, N)
        thr = self.iap_threshold(fg) if threshold is None else threshold
        return (fg > thr).any(dim=1)

    def anchor_mask(
        self,
        views: ConsistencyViews,
        student: DenseOutputs,
        teacher: DenseOutputs | None = None,
    ) -> Tensor | None:
        """Anchors kept in the consistency cost (``Tensor[B, N]`` bool), ``None``: all.

        ``cutout_mask="cell"`` drops the anchors whose cell is mostly erased in either view;
        ``"box"`` also those whose anchor box, student box or (when ``teacher`` is given)
        teacher box is erased beyond ``cutout_mask_fraction`` — boxes decoded from the
        dense deltas, in the student's geometry (the teacher's are already aligned). The
        adversarial step, which runs before the teacher's prediction exists, uses the
        anchor and student boxes.
        """
        if self.cutout_mask == "none" or views.erased is None:
            return None
        erased = erased_anchor_mask(views.erased, student, self.levels)  # (B, N)
        if self.cutout_mask == "box":
            erased = erased | erased_box_mask(
                views.erased, self._anchor_boxes(student, teacher), self.cutout_mask_fraction
            )
        return ~erased

    def _anchor_boxes(
        self, student: DenseOutputs, teacher: DenseOutputs | None = None
    ) -> list[Tensor]:
        """Anchor boxes ``Tensor[N, 4]`` and the boxes decoded from each prediction ``Tensor[B, N, 4]``."""
        detector = cast(RetinaNet, self.model)
        n = student.num_levels if self.levels is None else self.levels
        anchors = torch.cat(detector.anchors_per_level(student)[:n], dim=0)  # (N, 4)
        boxes = [anchors]
        for out in (student, teacher):
            if out is not None:
                deltas = flatten_levels([t.detach() for t in out.box_deltas[:n]])  # (B, N, 4)
                boxes.append(detector.box_coder.decode(deltas, anchors[None]))  # (B, N, 4)
        return boxes

    def _count_mask(
        self,
        stats: _Stats | None,
        mask: Tensor | None,
        student: DenseOutputs,
        teacher: DenseOutputs,
    ) -> None:
        """Add the fraction of anchors and of Eq. (4)'s weight that ``mask`` leaves out."""
        if stats is None:
            return
        n = student.num_levels if self.levels is None else self.levels
        if mask is None:
            _add(stats, "cutout_masked_anchors", 0.0, 1.0)
            _add(stats, "cutout_masked_w", 0.0, 1.0)
            return
        with torch.no_grad():
            p_s = flatten_levels(student.cls_logits[:n]).softmax(-1)[..., 0]  # (B, N)
            p_t = flatten_levels(teacher.cls_logits[:n]).softmax(-1)[..., 0]  # (B, N)
            weight = adaptive_weight(p_s, p_t) if self.acc else torch.ones_like(p_s)
        left_out = ~mask
        _add(stats, "cutout_masked_anchors", float(left_out.sum()), mask.numel())
        _add(stats, "cutout_masked_w", float(weight[left_out].sum()), float(weight.sum()))

    def consistency(
        self, student: DenseOutputs, teacher: DenseOutputs, anchor_mask: Tensor | None = None
    ) -> Tensor:
        """Adaptive consistency cost (Eq. (4)-(5)) with this method's options."""
        return adaptive_consistency_loss(
            student, teacher, self.components, self.levels, acc=self.acc, anchor_mask=anchor_mask
        )

    def branch_consistency(
        self, views: ConsistencyViews, student: DenseOutputs, stats: _Stats | None = None
    ) -> Tensor:
        """Teacher prediction, cutout mask and consistency cost of one batch's views."""
        teacher = self.teacher_predictions(views, student, stats)
        mask = self.anchor_mask(views, student, teacher)
        self._count_mask(stats, mask, student, teacher)
        return self.consistency(student, teacher, mask)

    def unlabeled_consistency(self, images: Tensor, stats: _Stats | None = None) -> Tensor:
        """Consistency cost of a batch without labels (Algorithm 1 line 12), un-weighted.

        Args:
            images: ``Tensor[B, C, H, W]``, normalised.
            stats: optional diagnostics accumulator (:meth:`teacher_predictions`).

        Returns:
            Scalar; differentiable with respect to the student only.
        """
        views = self.make_views(images)
        student = self.model(views.student)
        return self.branch_consistency(views, student, stats)

    # ------------------------------------------------------------------ the step
    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Algorithm 1 for one batch of labeled and one of unlabeled images.

        Returns:
            ``loss_cls``, ``loss_box`` (supervised, on the student's labeled view),
            ``loss_cons`` (un-weighted consistency, labeled + unlabeled),
            ``loss_cons_labeled``, ``loss_cons_unlabeled``, ``cons_weight`` (``lambda``),
            ``loss = loss_cls + loss_box + lambda * loss_cons`` and the diagnostics of the
            module docstring (detached scalars, not part of ``loss``).
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

        stats: _Stats = {}
        labeled_stats: _Stats = {}
        cons_l = self.branch_consistency(views, student_l, labeled_stats)  # line 11
        cons_u = zero
        unlabeled_stats: _Stats = {}
        if unlabeled is not None and len(unlabeled) > 0:
            cons_u = self.unlabeled_consistency(unlabeled.images, unlabeled_stats)  # line 12
        for part in (labeled_stats, unlabeled_stats):
            for key, (num, den) in part.items():
                _add(stats, key, num, den)
        cons = cons_l + cons_u
        losses["loss_cons"] = cons
        losses["loss_cons_labeled"] = cons_l.detach()
        losses["loss_cons_unlabeled"] = cons_u.detach()
        losses["cons_weight"] = torch.tensor(lam, dtype=zero.dtype, device=zero.device)
        losses["boxes_erased"] = torch.tensor(float(views.dropped), dtype=zero.dtype)

        def ratio(part: _Stats, key: str) -> Tensor:
            num, den = part.get(key, [0.0, 0.0])
            return torch.tensor(num / den if den > 0 else 0.0, dtype=zero.dtype)

        for key in sorted(stats):
            losses[key] = ratio(stats, key)
        losses["iap_images_labeled"] = ratio(labeled_stats, "iap_images")
        losses["iap_images_unlabeled"] = ratio(unlabeled_stats, "iap_images")
        losses["loss"] = supervised + lam * cons  # line 13
        return losses
