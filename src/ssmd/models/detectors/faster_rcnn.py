"""Faster R-CNN with FPN (Ren et al.; Lin et al.) — the second detector, from torchvision parts.

Boxes follow :mod:`ssmd.structures.boxes`: ``xyxy`` absolute pixels, ``float32``; labels are
``1..K`` (0 = background), as torchvision's detection models and the rest of ssmd.

**Parts.** The project's ResNet (:func:`~ssmd.models.backbones.resnet.build_resnet`) and FPN
(:class:`~ssmd.models.necks.fpn.FPN`, ``P3..P7``, as RetinaNet, so both detectors share the
backbone and neck cost), the project's :class:`~ssmd.models.detectors.anchors.AnchorGenerator`
(anchor centres at ``(x + 0.5) * stride``: mirror-symmetric grids, the flat order of
:func:`~ssmd.models.detectors.retinanet.flatten_levels`), and torchvision's ``RPNHead``,
``RegionProposalNetwork`` (its anchor matcher, sampler, proposal filter and loss),
``MultiScaleRoIAlign``, ``TwoMLPHead``, ``FastRCNNPredictor`` and ``RoIHeads`` (its proposal
matcher, sampler, ``fastrcnn_loss`` and ``postprocess_detections``). There is no
``GeneralizedRCNNTransform``: the data pipeline already resizes, pads (to a multiple of 128)
and normalises, exactly what RetinaNet receives. RoI features are pooled from ``P3..P5``
(``roi_levels = 3``; torchvision's FPN pools from ``P2..P5``, but the project's pyramid starts at
``P3``) with torchvision's level rule (canonical 224 px at ``P4``: objects under 112 px — every
nucleus — are pooled from ``P3``).

**Raw outputs apart from post-processing**, as far as a two-stage detector allows:
:meth:`FasterRCNN.forward` returns :class:`TwoStageOutputs` — the RPN's dense per-level maps
(objectness ``(B, A, 1, H_l, W_l)`` and deltas ``(B, A, 4, H_l, W_l)`` as a
:class:`~ssmd.models.detectors.retinanet.DenseOutputs`), the proposals decoded from them
(detached, as in Faster R-CNN: no gradient flows through the proposal boxes), the pyramid,
and — in ``eval()`` mode or with ``with_roi=True`` — the RoI head's class logits
``(sum P_i, K + 1)`` and per-class box deltas ``(sum P_i, K + 1, 4)`` for those proposals.
:meth:`FasterRCNN.postprocess` decodes, thresholds and NMS-es them. Where the two-stage
structure forces a dependence on the targets: the RoI head is **trained on a sample of
proposals that depends on the ground truth** (the ground-truth boxes are added to the
proposals, then ``box_batch_size_per_image`` of them are drawn with ``box_positive_fraction``
foreground, torchvision's ``select_training_samples``). :meth:`FasterRCNN.loss` therefore runs
the RoI head a second time on that sample from the pyramid kept in the outputs; in training
mode ``forward`` skips the RoI head on the unsampled proposals (their outputs would be
discarded). :meth:`FasterRCNN.roi_outputs` runs the RoI head on any boxes (e.g. the same
proposals in two views of an image).

**Mode dependence** beyond BatchNorm/dropout, both torchvision's: the RPN keeps
``rpn_pre_nms_top_n_train`` / ``rpn_post_nms_top_n_train`` proposals in ``train()`` mode and
the ``_test`` numbers in ``eval()`` mode; and the RoI outputs above. Randomness: the RPN's
and the RoI head's samplers draw from torch's global RNG (``torch.randperm``), so a seeded
run and a resumed one (the trainer restores the RNG) sample the same anchors and RoIs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ssmd.models.backbones.resnet import build_resnet
from ssmd.models.detectors.anchors import DEFAULT_ASPECT_RATIOS, AnchorGenerator
from ssmd.models.detectors.base import MODELS
from ssmd.models.detectors.retinanet import DenseOutputs
from ssmd.models.necks.fpn import FPN

__all__ = ["FasterRCNN", "TwoStageOutputs", "build_faster_rcnn"]


@dataclass
class TwoStageOutputs:
    """Raw predictions of :class:`FasterRCNN` for one batch.

    Attributes:
        features: the pyramid ``P3..P7``, per level ``Tensor[B, F, H_l, W_l]``.
        rpn: the RPN's dense maps; ``cls_logits`` per level ``Tensor[B, A, 1, H_l, W_l]``
            (objectness logit), ``box_deltas`` ``Tensor[B, A, 4, H_l, W_l]`` (weights 1).
        proposals: per image ``Tensor[P_i, 4]`` ``xyxy`` pixels, detached.
        image_size: ``(H, W)`` of the (padded) input batch.
        roi_cls_logits: ``Tensor[sum_i P_i, K + 1]`` for ``proposals`` (image-major), or
            ``None`` when the RoI head was not run on them (training mode).
        roi_box_deltas: ``Tensor[sum_i P_i, K + 1, 4]`` per-class deltas (weights
            ``bbox_reg_weights``), or ``None``.
    """

    features: list[Tensor]
    rpn: DenseOutputs
    proposals: list[Tensor]
    image_size: tuple[int, ...]
    roi_cls_logits: Tensor | None = None
    roi_box_deltas: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """``B``."""
        return len(self.proposals)

    def rows(self, start: int, stop: int) -> TwoStageOutputs:
        """The predictions of images ``start:stop`` of the batch (the detector contract)."""
        counts = [int(p.shape[0]) for p in self.proposals]
        lo, hi = sum(counts[:start]), sum(counts[:stop])
        return TwoStageOutputs(
            [f[start:stop] for f in self.features],  # (B', F, H_l, W_l)
            self.rpn.rows(start, stop),
            self.proposals[start:stop],
            self.image_size,
            None if self.roi_cls_logits is None else self.roi_cls_logits[lo:hi],  # (P', K+1)
            None if self.roi_box_deltas is None else self.roi_box_deltas[lo:hi],  # (P', K+1, 4)
        )

    def detach(self) -> TwoStageOutputs:
        """A copy whose tensors are detached from the graph."""
        return TwoStageOutputs(
            [f.detach() for f in self.features],
            self.rpn.detach(),
            [p.detach() for p in self.proposals],
            self.image_size,
            None if self.roi_cls_logits is None else self.roi_cls_logits.detach(),
            None if self.roi_box_deltas is None else self.roi_box_deltas.detach(),
        )


class FasterRCNN(nn.Module):
    """Faster R-CNN with FPN assembled from parts (module docstring).

    Args:
        backbone: returns ``[C3, C4, C5]`` and has ``out_channels``.
        fpn: turns the backbone maps into the pyramid (``P3..P7``).
        anchor_generator: one anchor set per pyramid level, ``A`` per location.
        rpn: torchvision ``RegionProposalNetwork`` whose ``head`` predicts ``A`` anchors per
            location (its own anchor generator is not used; ``anchor_generator`` is).
        roi_heads: torchvision ``RoIHeads`` (box branch only) over the pyramid levels named
            ``"p3"``, ``"p4"``, ...
        num_classes: ``K`` foreground classes (the predictor has ``K + 1`` outputs).

    Implements the detector contract of :mod:`ssmd.models.detectors.base` without dense
    per-anchor class maps (``provides_dense_maps = False``): the RPN's maps are class-agnostic
    objectness, the class scores live on proposals — which it offers as ``"region_scores"``
    (``provides_region_scores = True``: ``forward(images, with_roi=True)``).
    """

    provides_dense_maps: ClassVar[bool] = False
    provides_region_scores: ClassVar[bool] = True

    def __init__(
        self,
        backbone: nn.Module,
        fpn: nn.Module,
        anchor_generator: AnchorGenerator,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        num_classes: int = 1,
    ) -> None:
        super().__init__()
        rpn_anchors = int(rpn.head.cls_logits.out_channels)
        if rpn_anchors != anchor_generator.num_anchors_per_location:
            raise ValueError(
                f"RPN head predicts {rpn_anchors} anchors per location, anchor generator makes "
                f"{anchor_generator.num_anchors_per_location}"
            )
        predictor = roi_heads.box_predictor
        outputs = int(getattr(getattr(predictor, "cls_score", None), "out_features", -1))
        if outputs != num_classes + 1:
            raise ValueError(
                f"box predictor has {outputs} class outputs but the detector was given "
                f"num_classes={num_classes} (needs K + 1 = {num_classes + 1})"
            )
        if anchor_generator.spatial_dims != 2:
            raise ValueError("FasterRCNN is 2D: the anchor generator must have spatial_dims=2")
        self.backbone = backbone
        self.fpn = fpn
        self.anchor_generator = anchor_generator
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.num_classes = num_classes
        self.spatial_dims = 2

    # the post-processing settings, as RetinaNet's attributes (tiled inference reads them)
    @property
    def score_thresh(self) -> float:
        """Minimum class probability kept by :meth:`postprocess`."""
        return float(self.roi_heads.score_thresh)

    @property
    def nms_thresh(self) -> float:
        """IoU of the class-wise NMS of :meth:`postprocess`."""
        return float(self.roi_heads.nms_thresh)

    @property
    def detections_per_img(self) -> int:
        """Detections kept per image by :meth:`postprocess`."""
        return int(self.roi_heads.detections_per_img)

    # 1. raw predictions ---------------------------------------------------------------
    def forward(self, images: Tensor, with_roi: bool | None = None) -> TwoStageOutputs:
        """RPN maps, proposals and (eval mode, or ``with_roi=True``) RoI outputs on them.

        Args:
            images: ``Tensor[B, C, H, W]``, normalised.
            with_roi: run the RoI head on the proposals; default ``not self.training``.

        Returns:
            :class:`TwoStageOutputs`.
        """
        if images.ndim != 4:
            raise ValueError(
                f"FasterRCNN expects images (B, C, H, W), got shape {tuple(images.shape)}"
            )
        pyramid = self.fpn(self.backbone(images))
        if len(pyramid) != self.anchor_generator.num_levels:
            raise ValueError(
                f"the neck returns {len(pyramid)} levels but the anchor generator has "
                f"{self.anchor_generator.num_levels} (strides {self.anchor_generator.strides})"
            )
        objectness, deltas = self.rpn.head(pyramid)  # (B, A, H, W), (B, A * 4, H, W)
        b = int(images.shape[0])
        rpn = DenseOutputs(
            [o.view(b, -1, 1, *o.shape[-2:]) for o in objectness],  # (B, A, 1, H_l, W_l)
            [d.view(b, -1, 4, *d.shape[-2:]) for d in deltas],  # (B, A, 4, H_l, W_l)
            tuple(int(s) for s in images.shape[2:]),
        )
        out = TwoStageOutputs(list(pyramid), rpn, self.propose(rpn), rpn.image_size)
        if with_roi if with_roi is not None else not self.training:
            out.roi_cls_logits, out.roi_box_deltas = self.roi_outputs(out, out.proposals)
        return out

    def anchors(self, rpn: DenseOutputs) -> Tensor:
        """All RPN anchors ``Tensor[N, 4]`` (``xyxy``) in the flat order of the RPN maps."""
        ref = rpn.box_deltas[0]
        per_level = self.anchor_generator.anchors_for(
            rpn.image_size, rpn.feature_sizes, device=ref.device, dtype=ref.dtype
        )
        return torch.cat(per_level, dim=0)  # (N, 4)

    @torch.no_grad()
    def propose(self, rpn: DenseOutputs) -> list[Tensor]:
        """Proposals of the RPN maps: decode, top-n per level, clip, NMS, top-n (torchvision).

        Returns:
            Per image ``Tensor[P_i, 4]`` ``xyxy`` pixels, best objectness first.
        """
        b = rpn.batch_size
        anchors = self.anchors(rpn)  # (N, 4)
        objectness = rpn.flat_cls_logits()[..., 0].detach()  # (B, N)
        deltas = rpn.flat_box_deltas().detach()  # (B, N, 4)
        boxes = self.rpn.box_coder.decode(deltas.reshape(-1, 4), [anchors] * b)
        boxes = boxes.view(b, -1, 4)  # (B, N, 4)
        per_level = [int(m.shape[1] * m.shape[3] * m.shape[4]) for m in rpn.cls_logits]
        size = (int(rpn.image_size[0]), int(rpn.image_size[1]))
        proposals, _ = self.rpn.filter_proposals(boxes, objectness, [size] * b, per_level)
        return proposals

    def roi_outputs(
        self, outputs: TwoStageOutputs, boxes: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """The RoI head on ``boxes`` (per image ``Tensor[P_i, 4]`` xyxy) of ``outputs``' images.

        Returns:
            ``(class_logits, box_deltas)``: ``Tensor[sum P_i, K + 1]`` and
            ``Tensor[sum P_i, K + 1, 4]`` (image-major, in the order of ``boxes``).
        """
        if len(boxes) != outputs.batch_size:
            raise ValueError(
                f"got boxes for {len(boxes)} images, the batch has {outputs.batch_size}"
            )
        names = [f"p{level + 3}" for level in range(len(outputs.features))]
        features = OrderedDict(zip(names, outputs.features, strict=True))
        size = (int(outputs.image_size[0]), int(outputs.image_size[1]))
        pooled = self.roi_heads.box_roi_pool(features, list(boxes), [size] * len(boxes))
        logits, deltas = self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))
        return logits, deltas.view(logits.shape[0], -1, 4)  # (P, K+1), (P, K+1, 4)

    # 2. training losses ---------------------------------------------------------------
    def _check_targets(self, targets: Sequence[dict[str, Tensor]], batch_size: int) -> None:
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch_size} images")
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(
                    f"targets[{i}]: boxes must be (N, 4) and labels (N,), got "
                    f"{tuple(boxes.shape)} and {tuple(labels.shape)}"
                )
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > self.num_classes):
                raise ValueError(
                    f"targets[{i}]['labels'] must be in 1..{self.num_classes}, got "
                    f"{sorted(set(labels.tolist()))}"
                )
            if boxes.numel() and not bool((boxes[:, 2:] > boxes[:, :2]).all()):
                bad = boxes[~(boxes[:, 2:] > boxes[:, :2]).all(dim=1)]
                raise ValueError(
                    f"targets[{i}]['boxes'] has boxes without positive size: {bad[:3].tolist()}"
                )

    def loss(
        self, outputs: TwoStageOutputs, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """RPN and RoI-head losses (torchvision's Faster R-CNN losses).

        * ``loss_rpn_cls``: binary cross entropy of the objectness of
          ``rpn_batch_size_per_image`` sampled anchors per image (IoU ``>= rpn_fg_iou_thresh``
          foreground, ``< rpn_bg_iou_thresh`` background, best anchor of each box foreground);
        * ``loss_rpn_box``: smooth-L1 (``beta = 1/9``) of the foreground anchors' deltas, summed
          and divided by the number of sampled anchors;
        * ``loss_cls``: cross entropy over ``K + 1`` classes of the sampled RoIs (proposals +
          ground-truth boxes; module docstring);
        * ``loss_box``: smooth-L1 of the true class's deltas of the foreground RoIs, divided by
          the number of sampled RoIs.

        Args:
            outputs: :meth:`forward` of the batch.
            targets: per image ``{"boxes": Tensor[G, 4] xyxy, "labels": Tensor[G] in 1..K}``;
                ``G = 0`` is valid (background terms only, box losses 0).

        Returns:
            ``{"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}``.
        """
        self._check_targets(targets, outputs.batch_size)
        anchors = self.anchors(outputs.rpn)  # (N, 4)
        gt = [
            {
                "boxes": t["boxes"].to(device=anchors.device, dtype=anchors.dtype),
                "labels": t["labels"].to(device=anchors.device, dtype=torch.int64),
            }
            for t in targets
        ]
        b = outputs.batch_size
        # RPN: every anchor of every image, image-major, in the flat order of the maps
        labels, matched = self.rpn.assign_targets_to_anchors([anchors] * b, gt)
        regression_targets = self.rpn.box_coder.encode(matched, [anchors] * b)
        objectness = outputs.rpn.flat_cls_logits().reshape(-1, 1)  # (B N, 1)
        rpn_deltas = outputs.rpn.flat_box_deltas().reshape(-1, 4)  # (B N, 4)
        loss_rpn_cls, loss_rpn_box = self.rpn.compute_loss(
            objectness, rpn_deltas, labels, list(regression_targets)
        )
        # RoI head: a target-dependent sample of proposals + ground truth
        sampled, _, roi_labels, roi_targets = self.roi_heads.select_training_samples(
            [p.detach() for p in outputs.proposals], gt
        )
        logits, deltas = self.roi_outputs(outputs, sampled)
        loss_cls, loss_box = fastrcnn_loss(
            logits, deltas.reshape(logits.shape[0], -1), roi_labels, roi_targets
        )
        return {
            "loss_rpn_cls": loss_rpn_cls,
            "loss_rpn_box": loss_rpn_box,
            "loss_cls": loss_cls,
            "loss_box": loss_box,
        }

    # 3. post-processing ---------------------------------------------------------------
    @torch.no_grad()
    def postprocess(
        self, outputs: TwoStageOutputs, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Decode the RoI outputs per class, clip, threshold, class-wise NMS (torchvision).

        Args:
            outputs: :meth:`forward` of the batch (the RoI head is run on its proposals
                here when ``forward`` skipped it).
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
        logits, deltas = outputs.roi_cls_logits, outputs.roi_box_deltas
        if logits is None or deltas is None:
            logits, deltas = self.roi_outputs(outputs, outputs.proposals)
        boxes, scores, labels = self.roi_heads.postprocess_detections(
            logits,
            deltas.reshape(logits.shape[0], -1),
            list(outputs.proposals),
            [(int(s[0]), int(s[1])) for s in sizes],
        )
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(boxes, scores, labels, strict=True)
        ]

    @torch.no_grad()
    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """``postprocess(forward(images))`` without gradients (mode left as it is)."""
        return self.postprocess(self(images, with_roi=True), image_sizes)


def build_faster_rcnn(
    backbone: str = "resnet18",
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    num_classes: int = 1,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    anchor_scales: Sequence[float] = (1.0,),
    pretrained_weights: str | Path | None = None,
    in_channels: int = 3,
    backbone_norm: str = "bn",
    rpn_head_convs: int = 1,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_score_thresh: float = 0.0,
    roi_levels: int = 3,
    roi_output_size: int = 7,
    roi_sampling_ratio: int = 2,
    representation_size: int = 1024,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> FasterRCNN:
    """Build a ResNet-FPN Faster R-CNN from plain arguments (torchvision's defaults).

    Args:
        backbone: ``resnet18``/``34``/``50``/``101``, randomly initialised.
        width_multiplier: backbone channel scale (e.g. 0.25 for CPU runs).
        fpn_channels: channels of the pyramid ``P3..P7`` (RPN and RoI features).
        num_classes: ``K`` foreground classes.
        anchor_sizes: anchor side per level ``P3..P7`` (``8..128`` suits nuclei at 256 px).
        aspect_ratios: anchor ``h / w`` ratios (3 anchors per location with one scale).
        anchor_scales: anchor size multipliers (torchvision's FPN: one, ``1.0``).
        pretrained_weights: optional local ResNet state dict (width 1.0 only); no download.
        in_channels: image channels.
        backbone_norm: ``"bn"`` or ``"gn"`` (see :func:`~ssmd.models.backbones.resnet.build_resnet`).
        rpn_head_convs: 3x3 convs of the RPN head (torchvision ``conv_depth``).
        rpn_fg_iou_thresh: anchor IoU for an RPN foreground.
        rpn_bg_iou_thresh: anchor IoU below which an anchor is RPN background.
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        rpn_positive_fraction: foreground share of that sample.
        rpn_pre_nms_top_n_train: proposals kept per level before NMS in training.
        rpn_pre_nms_top_n_test: the same at inference.
        rpn_post_nms_top_n_train: proposals kept per image after NMS in training.
        rpn_post_nms_top_n_test: the same at inference.
        rpn_nms_thresh: IoU of the proposals' NMS.
        rpn_score_thresh: minimum objectness probability of a proposal.
        roi_levels: finest pyramid levels the RoI features are pooled from (3: ``P3..P5``).
        roi_output_size: RoIAlign output side.
        roi_sampling_ratio: RoIAlign sampling points per bin side.
        representation_size: width of the two fully connected layers of the box head.
        box_fg_iou_thresh: proposal IoU for a foreground RoI.
        box_bg_iou_thresh: proposal IoU below which a RoI is background.
        box_batch_size_per_image: RoIs sampled per image for the RoI-head loss.
        box_positive_fraction: foreground share of that sample.
        bbox_reg_weights: the RoI head's box-coder weights.
        score_thresh: minimum class probability kept by :meth:`FasterRCNN.postprocess`.
        nms_thresh: IoU of its class-wise NMS.
        detections_per_img: detections kept per image.
    """
    body = build_resnet(
        backbone,
        width_multiplier=width_multiplier,
        in_channels=in_channels,
        pretrained_weights=pretrained_weights,
        norm=backbone_norm,
    )
    fpn = FPN(body.out_channels, out_channels=fpn_channels, extra_levels=2, extra_from="c5")
    if not 1 <= roi_levels <= fpn.num_levels:
        raise ValueError(f"roi_levels = {roi_levels}: expected 1..{fpn.num_levels}")
    anchor_generator = AnchorGenerator(
        sizes=anchor_sizes,
        aspect_ratios=aspect_ratios,
        scales=anchor_scales,
        strides=(8, 16, 32, 64, 128),
    )
    rpn = RegionProposalNetwork(
        anchor_generator,  # stored only: FasterRCNN computes the anchors itself
        RPNHead(fpn_channels, anchor_generator.num_anchors_per_location, conv_depth=rpn_head_convs),
        fg_iou_thresh=rpn_fg_iou_thresh,
        bg_iou_thresh=rpn_bg_iou_thresh,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=rpn_positive_fraction,
        pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
        nms_thresh=rpn_nms_thresh,
        score_thresh=rpn_score_thresh,
    )
    pool = MultiScaleRoIAlign(
        [f"p{level + 3}" for level in range(roi_levels)],
        output_size=roi_output_size,
        sampling_ratio=roi_sampling_ratio,
    )
    roi_heads = RoIHeads(
        pool,
        TwoMLPHead(fpn_channels * roi_output_size**2, representation_size),
        FastRCNNPredictor(representation_size, num_classes + 1),
        fg_iou_thresh=box_fg_iou_thresh,
        bg_iou_thresh=box_bg_iou_thresh,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=tuple(float(w) for w in bbox_reg_weights),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    return FasterRCNN(body, fpn, anchor_generator, rpn, roi_heads, num_classes=num_classes)


@MODELS.register("faster_rcnn")
def faster_rcnn(
    *,
    num_classes: int = 1,
    backbone: str = "resnet18",
    backbone_norm: str = "bn",
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    anchor_scales: Sequence[float] = (1.0,),
    pretrained_weights: str | None = None,
    in_channels: int = 3,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    rpn_head_convs: int = 1,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_score_thresh: float = 0.0,
    roi_levels: int = 3,
    roi_output_size: int = 7,
    roi_sampling_ratio: int = 2,
    representation_size: int = 1024,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
) -> nn.Module:
    """``model.name=faster_rcnn``: :func:`build_faster_rcnn` from the ``model`` keys.

    The keyword names are the config keys (``model.<key>``); the ``rpn_*``, ``roi_*``,
    ``box_*``, ``representation_size``, ``aspect_ratios``, ``anchor_scales`` and
    ``bbox_reg_weights`` keys are this detector's own (torchvision's defaults). RetinaNet's
    ``head_convs``, ``head_norm``, ``activation``, ``cls_loss`` and ``topk_candidates`` do not
    apply and must stay at their defaults.
    """
    return build_faster_rcnn(
        backbone=backbone,
        width_multiplier=float(width_multiplier),
        fpn_channels=int(fpn_channels),
        num_classes=int(num_classes),
        anchor_sizes=tuple(float(s) for s in anchor_sizes),
        aspect_ratios=tuple(float(r) for r in aspect_ratios),
        anchor_scales=tuple(float(s) for s in anchor_scales),
        pretrained_weights=pretrained_weights,
        in_channels=int(in_channels),
        backbone_norm=backbone_norm,
        rpn_head_convs=int(rpn_head_convs),
        rpn_fg_iou_thresh=float(rpn_fg_iou_thresh),
        rpn_bg_iou_thresh=float(rpn_bg_iou_thresh),
        rpn_batch_size_per_image=int(rpn_batch_size_per_image),
        rpn_positive_fraction=float(rpn_positive_fraction),
        rpn_pre_nms_top_n_train=int(rpn_pre_nms_top_n_train),
        rpn_pre_nms_top_n_test=int(rpn_pre_nms_top_n_test),
        rpn_post_nms_top_n_train=int(rpn_post_nms_top_n_train),
        rpn_post_nms_top_n_test=int(rpn_post_nms_top_n_test),
        rpn_nms_thresh=float(rpn_nms_thresh),
        rpn_score_thresh=float(rpn_score_thresh),
        roi_levels=int(roi_levels),
        roi_output_size=int(roi_output_size),
        roi_sampling_ratio=int(roi_sampling_ratio),
        representation_size=int(representation_size),
        box_fg_iou_thresh=float(box_fg_iou_thresh),
        box_bg_iou_thresh=float(box_bg_iou_thresh),
        box_batch_size_per_image=int(box_batch_size_per_image),
        box_positive_fraction=float(box_positive_fraction),
        bbox_reg_weights=tuple(float(w) for w in bbox_reg_weights),
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_thresh),
        detections_per_img=int(detections_per_img),
    )
