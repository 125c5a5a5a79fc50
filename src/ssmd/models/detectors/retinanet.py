"""RetinaNet with dense outputs kept apart from post-processing — the detector of SSMD (Sec. 3).

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy`` absolute pixels, ``float32``; labels are
``1..K`` (0 = background).

The model never changes behaviour with ``train()``/``eval()`` beyond BatchNorm/dropout:
:meth:`RetinaNet.forward` always returns the per-level dense maps (:class:`DenseOutputs`);
:meth:`RetinaNet.loss` turns them and ground truth into ``{"loss_cls", "loss_box"}`` (Eq. (1));
:meth:`RetinaNet.postprocess` turns them into boxes. Consistency methods (CSD, SSMD Eq. (4)-(5))
compare the dense maps of a student and a teacher position by position.

**Flat order.** :meth:`DenseOutputs.flat_cls_logits` / :meth:`DenseOutputs.flat_box_deltas`
concatenate the levels ``P3..P7``; within a level the index is ``(y * W_l + x) * A + a``
(``dense.permute(0, 3, 4, 1, 2)``), the order of :meth:`RetinaNet.anchors`. So flat row ``i``
of the maps, of :meth:`RetinaNet.anchors` and of the anchor labels from
:meth:`RetinaNet.assign_targets` all describe the same anchor.

**Inputs** are expected normalised by the data pipeline; any ``H, W`` works, but pad them to a
multiple of 128 (the ``P7`` stride) when a method compares an image with its horizontal flip:
only then is the anchor grid mirror-symmetric and :meth:`DenseOutputs.hflip` exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from ssmd.losses.detection import CLS_LOSSES, Activation, ClsLoss, dense_detection_loss
from ssmd.models.backbones.resnet import build_resnet
from ssmd.models.detectors.anchors import DEFAULT_ASPECT_RATIOS, DEFAULT_SCALES, AnchorGenerator
from ssmd.models.detectors.box_coder import BoxCoder
from ssmd.models.detectors.matcher import BACKGROUND, IGNORE, Matcher, match_quality
from ssmd.models.heads.retinanet_head import RetinaNetHead
from ssmd.models.necks.fpn import FPN
from ssmd.structures.boxes import batched_nms, clip_boxes
from ssmd.structures.dense import DenseOutputs, flatten_levels  # re-exported here

__all__ = ["DenseOutputs", "RetinaNet", "build_retinanet", "flatten_levels"]


class RetinaNet(nn.Module):
    """RetinaNet (Lin et al.) assembled from parts, as used by SSMD (Sec. 3, Eq. (1), (3)).

    Args:
        backbone: returns ``[C3, C4, C5]`` and has ``out_channels``.
        fpn: turns the backbone maps into ``P3..P7``.
        head: :class:`RetinaNetHead` (or compatible) over the pyramid.
        anchor_generator: one anchor set per pyramid level, ``A`` per location.
        box_coder: Eq. (3) encoder; default weights ``(1, 1, 1, 1)``.
        matcher: anchor assignment; default IoU ``>= 0.5`` foreground, ``< 0.4`` background,
            low-quality matches allowed.
        num_classes: ``K`` foreground classes.
        cls_loss: ``"focal"`` (default), ``"ce"`` or ``"ce_ohem"`` (softmax only;
            :mod:`ssmd.losses.detection`).
        activation: ``"softmax"`` (``K + 1`` logits, SSMD's ``p^c``) or ``"sigmoid"``.
        score_thresh: minimum class probability kept by :meth:`postprocess`.
        topk_candidates: best (anchor, class) pairs kept per level before NMS.
        nms_thresh: IoU of class-wise NMS.
        detections_per_img: detections kept per image after NMS (>= 300 for nuclei).
        focal_alpha: focal-loss foreground weight (background ``1 - alpha``).
        focal_gamma: focal-loss focusing parameter.
        smooth_l1_beta: smooth-L1 ``beta`` of the box loss (see :mod:`ssmd.losses.detection`).

    Implements the detector contract of :mod:`ssmd.models.detectors.base` with dense maps.
    """

    provides_dense_maps: ClassVar[bool] = True

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        head: RetinaNetHead,
        anchor_generator: AnchorGenerator,
        box_coder: BoxCoder | None = None,
        matcher: Matcher | None = None,
        num_classes: int = 1,
        cls_loss: ClsLoss = "focal",
        activation: Activation = "softmax",
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_img: int = 300,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        smooth_l1_beta: float = 1.0 / 9.0,
    ) -> None:
        super().__init__()
        if head.num_classes != num_classes or head.activation != activation:
            raise ValueError(
                f"head has num_classes={head.num_classes}, activation={head.activation!r} but the "
                f"detector was given num_classes={num_classes}, activation={activation!r}"
            )
        if head.num_anchors != anchor_generator.num_anchors_per_location:
            raise ValueError(
                f"head predicts {head.num_anchors} anchors per location, anchor generator makes "
                f"{anchor_generator.num_anchors_per_location}"
            )
        if cls_loss not in CLS_LOSSES or (cls_loss == "ce_ohem" and activation != "softmax"):
            raise ValueError(
                f"cls_loss must be one of {CLS_LOSSES} ('ce_ohem' with softmax), got {cls_loss!r}"
            )
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.anchor_generator = anchor_generator
        self.spatial_dims = anchor_generator.spatial_dims
        self.box_coder = (
            box_coder if box_coder is not None else BoxCoder((1.0,) * (2 * self.spatial_dims))
        )
        self.matcher = (
            matcher if matcher is not None else Matcher(0.5, 0.4, allow_low_quality_matches=True)
        )
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.activation = activation
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.smooth_l1_beta = smooth_l1_beta

    # 1. dense predictions -------------------------------------------------------------
    def forward(self, images: Tensor) -> DenseOutputs:
        """Dense per-level predictions (same in train and eval mode).

        Args:
            images: ``Tensor[B, C, H, W]``, normalised.

        Returns:
            :class:`DenseOutputs` with ``cls_logits`` ``(B, A, C', H_l, W_l)`` and
            ``box_deltas`` ``(B, A, 4, H_l, W_l)`` for ``P3..P7``.
        """
        if images.ndim != 2 + self.spatial_dims:
            want = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"RetinaNet expects images {want}, got shape {tuple(images.shape)}")
        features = self.backbone(images)
        pyramid = self.fpn(features)
        if len(pyramid) != self.anchor_generator.num_levels:
            raise ValueError(
                f"the neck returns {len(pyramid)} levels but the anchor generator has "
                f"{self.anchor_generator.num_levels} (strides {self.anchor_generator.strides})"
            )
        cls_logits, box_deltas = self.head(pyramid)
        return DenseOutputs(cls_logits, box_deltas, tuple(int(s) for s in images.shape[2:]))

    def anchors_per_level(self, outputs: DenseOutputs) -> list[Tensor]:
        """Per-level anchors ``Tensor[H_l W_l A, 4]`` of ``outputs`` (cached per input size)."""
        ref = outputs.box_deltas[0]
        return self.anchor_generator.anchors_for(
            outputs.image_size, outputs.feature_sizes, device=ref.device, dtype=ref.dtype
        )

    def anchors(self, outputs: DenseOutputs) -> Tensor:
        """All anchors ``Tensor[N, 4]`` (``xyxy``) in the flat order of the maps."""
        return torch.cat(self.anchors_per_level(outputs), dim=0)  # (N, 4)

    def class_probs(self, outputs: DenseOutputs) -> list[Tensor]:
        """Per-level class probabilities, shaped like ``outputs.cls_logits``.

        Softmax over the ``K + 1`` classes (``[:, :, 0]`` is SSMD's background ``p^c[0]``,
        Eq. (4)) or element-wise sigmoid over ``K``.
        """
        if self.activation == "softmax":
            return [t.softmax(dim=2) for t in outputs.cls_logits]
        return [t.sigmoid() for t in outputs.cls_logits]

    # 2. training targets and loss -----------------------------------------------------
    def _check_targets(self, targets: Sequence[dict[str, Tensor]], batch_size: int) -> None:
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch_size} images")
        d = self.spatial_dims
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            if boxes.ndim != 2 or boxes.shape[1] != 2 * d or labels.shape != boxes.shape[:1]:
                raise ValueError(
                    f"targets[{i}]: boxes must be (N, {2 * d}) and labels (N,), got "
                    f"{tuple(boxes.shape)} and {tuple(labels.shape)}"
                )
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > self.num_classes):
                raise ValueError(
                    f"targets[{i}]['labels'] must be in 1..{self.num_classes}, got "
                    f"{sorted(set(labels.tolist()))}"
                )
            if boxes.numel() and not bool((boxes[:, d:] > boxes[:, :d]).all()):
                bad = boxes[~(boxes[:, d:] > boxes[:, :d]).all(dim=1)]
                raise ValueError(
                    f"targets[{i}]['boxes'] has boxes without positive size: {bad[:3].tolist()}"
                )

    @torch.no_grad()
    def assign_targets(
        self, outputs: DenseOutputs, targets: Sequence[dict[str, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Per-anchor training targets of a batch (matcher + Eq. (3) encoding).

        Args:
            outputs: the batch's predictions (for sizes, device, dtype).
            targets: per image ``{"boxes": Tensor[G, 4] xyxy, "labels": Tensor[G] in 1..K}``;
                ``G = 0`` is valid.

        Returns:
            ``(anchor_labels, box_targets)``: ``Tensor[B, N]`` int64 with ``1..K`` foreground,
            ``0`` background, ``-2`` ignored; and ``Tensor[B, N, 4]`` encoded matched boxes
            (zeros where not foreground), both in flat anchor order.
        """
        self._check_targets(targets, outputs.batch_size)
        anchors = self.anchors(outputs)  # (N, 4)
        labels_rows: list[Tensor] = []
        boxes_rows: list[Tensor] = []
        for t in targets:
            gt_boxes = t["boxes"].to(device=anchors.device, dtype=anchors.dtype)
            gt_labels = t["labels"].to(device=anchors.device, dtype=torch.int64)
            if gt_boxes.shape[0] == 0:
                labels_rows.append(
                    torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
                )
                boxes_rows.append(anchors)
                continue
            if anchors.device.type == "cpu":  # stream over anchor chunks: no (G, N) matrix
                matched = self.matcher.match_boxes(gt_boxes, anchors)  # (N,)
            else:  # one dense (G, N) IoU matrix: fewer kernel launches, no host syncs
                matched = self.matcher(match_quality(gt_boxes, anchors))  # (N,)
            idx = matched.clamp(min=0)
            fg = matched >= 0  # (N,)
            labels = torch.where(fg, gt_labels[idx], torch.where(matched == BACKGROUND, 0, IGNORE))
            labels_rows.append(labels)  # (N,)
            boxes_rows.append(torch.where(fg[:, None], gt_boxes[idx], anchors))  # (N, 4)
        anchor_labels = torch.stack(labels_rows)  # (B, N)
        box_targets = self.box_coder.encode(torch.stack(boxes_rows), anchors[None])  # (B, N, 4)
        return anchor_labels, box_targets

    def loss(
        self, outputs: DenseOutputs, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Supervised loss of Eq. (1): focal (or CE) classification + smooth-L1 box regression.

        Args:
            outputs: :meth:`forward` of the batch.
            targets: per image ``{"boxes": Tensor[G, 4] xyxy, "labels": Tensor[G] in 1..K}``;
                images without objects are valid (they add background terms only).

        Returns:
            ``{"loss_cls", "loss_box"}``, each normalised by ``max(1, #foreground anchors)``.
        """
        anchor_labels, box_targets = self.assign_targets(outputs, targets)
        return dense_detection_loss(
            outputs.flat_cls_logits(),
            outputs.flat_box_deltas(),
            anchor_labels,
            box_targets,
            activation=self.activation,
            cls_loss=self.cls_loss,
            alpha=self.focal_alpha,
            gamma=self.focal_gamma,
            beta=self.smooth_l1_beta,
        )

    # 3. post-processing --------------------------------------------------------------
    @torch.no_grad()
    def postprocess(
        self, outputs: DenseOutputs, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Decode, threshold, keep the top-k per level, clip, NMS.

        Args:
            outputs: :meth:`forward` of the batch.
            image_sizes: ``(H, W)`` of each image before padding (boxes are clipped to it);
                default ``outputs.image_size`` for all.

        Returns:
            Per image ``{"boxes": Tensor[M, 4] xyxy, "scores": Tensor[M], "labels": Tensor[M]
            int64 in 1..K}``, sorted by score, ``M <= detections_per_img``.
        """
        b = outputs.batch_size
        sizes = (
            [tuple(outputs.image_size)] * b
            if image_sizes is None
            else [tuple(s) for s in image_sizes]
        )
        if len(sizes) != b:
            raise ValueError(f"got {len(sizes)} image_sizes for a batch of {b} images")
        per_level_scores, per_level_labels, per_level_boxes = [], [], []
        probs = self.class_probs(outputs)
        for prob, deltas, anchors in zip(
            probs, outputs.box_deltas, self.anchors_per_level(outputs), strict=True
        ):
            scores = flatten_levels([prob])  # (B, HWA, C')
            if self.activation == "softmax":
                scores = scores[..., 1:]  # (B, HWA, K)
            num_k = scores.shape[-1]
            scores = scores.reshape(b, -1)  # (B, HWA * K)
            k = min(self.topk_candidates, scores.shape[1])
            top_scores, top_idx = scores.topk(k, dim=1)  # (B, k)
            anchor_idx = top_idx // num_k  # (B, k)
            flat_deltas = flatten_levels([deltas])  # (B, HWA, 4)
            gather_idx = anchor_idx[..., None].expand(-1, -1, flat_deltas.shape[-1])  # (B, k, 4)
            top_deltas = flat_deltas.gather(1, gather_idx)  # (B, k, 4)
            per_level_boxes.append(self.box_coder.decode(top_deltas, anchors[anchor_idx]))
            per_level_scores.append(top_scores)
            per_level_labels.append(top_idx % num_k + 1)
        all_scores = torch.cat(per_level_scores, dim=1)  # (B, sum k)
        all_labels = torch.cat(per_level_labels, dim=1)  # (B, sum k)
        all_boxes = torch.cat(per_level_boxes, dim=1)  # (B, sum k, 4)
        d = self.spatial_dims
        results: list[dict[str, Tensor]] = []
        for i in range(b):
            keep = all_scores[i] > self.score_thresh
            boxes = clip_boxes(all_boxes[i][keep], tuple(int(s) for s in sizes[i]))
            scores, labels = all_scores[i][keep], all_labels[i][keep]
            nonempty = (boxes[:, d:] > boxes[:, :d]).all(dim=1)
            boxes, scores, labels = boxes[nonempty], scores[nonempty], labels[nonempty]
            kept = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
        return results

    @torch.no_grad()
    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """``postprocess(forward(images))`` without gradients (mode left as it is)."""
        return self.postprocess(self(images), image_sizes)


def build_retinanet(
    backbone: str = "resnet18",
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    head_convs: int = 4,
    num_classes: int = 1,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    activation: Activation = "softmax",
    cls_loss: ClsLoss = "focal",
    pretrained_weights: str | Path | None = None,
    in_channels: int = 3,
    head_norm: str | None = None,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    anchor_scales: Sequence[float] = DEFAULT_SCALES,
    prior_prob: float = 0.01,
    backbone_norm: str = "bn",
    **post: float | int,
) -> RetinaNet:
    """Build a ResNet-FPN RetinaNet (``P3..P7``, strides 8..128) from plain arguments.

    Args:
        backbone: ``resnet18``/``34``/``50``/``101``.
        width_multiplier: backbone channel scale (e.g. 0.25 for CPU runs).
        fpn_channels: channels of the pyramid and of the head subnets.
        head_convs: conv layers per head subnet.
        num_classes: ``K`` foreground classes.
        anchor_sizes: base anchor side per level (``8..128`` suits nuclei at 256 px).
        activation: ``"softmax"`` or ``"sigmoid"``.
        cls_loss: ``"focal"``, ``"ce"`` or ``"ce_ohem"`` (:mod:`ssmd.losses.detection`).
        pretrained_weights: optional local ResNet state dict (width 1.0 only).
        in_channels: image channels.
        head_norm: ``"gn"`` or ``None``.
        aspect_ratios: anchor ``h / w`` ratios.
        anchor_scales: anchor size multipliers.
        prior_prob: initial foreground probability of the head.
        backbone_norm: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm; identical in train and eval
            mode, better for small mixed-style CPU batches).
        **post: further :class:`RetinaNet` keywords (``score_thresh``, ``topk_candidates``,
            ``nms_thresh``, ``detections_per_img``, ``focal_alpha``, ``focal_gamma``,
            ``smooth_l1_beta``).
    """
    if head_norm not in (None, "gn"):
        raise ValueError(f"head_norm must be None or 'gn', got {head_norm!r}")
    body = build_resnet(
        backbone,
        width_multiplier=width_multiplier,
        in_channels=in_channels,
        pretrained_weights=pretrained_weights,
        norm=backbone_norm,
    )
    fpn = FPN(body.out_channels, out_channels=fpn_channels, extra_levels=2, extra_from="c5")
    anchor_generator = AnchorGenerator(
        sizes=anchor_sizes,
        aspect_ratios=aspect_ratios,
        scales=anchor_scales,
        strides=(8, 16, 32, 64, 128),
    )
    head = RetinaNetHead(
        fpn_channels,
        anchor_generator.num_anchors_per_location,
        num_classes,
        activation=activation,
        num_convs=head_convs,
        norm="gn" if head_norm == "gn" else None,
        prior_prob=prior_prob,
    )
    return RetinaNet(
        body,
        fpn,
        head,
        anchor_generator,
        num_classes=num_classes,
        cls_loss=cls_loss,
        activation=activation,
        **post,  # type: ignore[arg-type]
    )
