"""The 3D RetinaNet (``model.name: retinanet3d``): the 2D detector's code with ``spatial_dims=3``.

Only the trunk is new (:class:`~ssmd.models.backbones.resnet3d.ResNet3dFeatures`). The FPN
and the head are the 2D modules built with ``spatial_dims=3`` (``Conv3d``); the anchors
(:class:`~ssmd.models.detectors.anchors.AnchorGenerator`, ``(z, y, x, a)`` order), the
Eq. (3) box coder with six weights, the matcher, the focal loss
(:func:`~ssmd.losses.detection.dense_detection_loss`), :class:`~ssmd.structures.dense.DenseOutputs`
and :class:`~ssmd.models.detectors.retinanet.RetinaNet` itself (loss, decode, class-wise
NMS through :func:`ssmd.structures.boxes.batched_nms`, which takes 3D boxes) are the 2D
ones, unchanged. Boxes are ``xyxy`` voxels ``(x1, y1, z1, x2, y2, z2)``; inputs are
``Tensor[B, C, D, H, W]`` with ``D, H, W`` multiples of the coarsest stride (16 by default)
so that every level tiles the patch exactly and the anchor grid is mirror-symmetric along
every axis.

Defaults suit lung nodules on a CPU at 1.5 mm voxels (2-20 voxels across): levels of
strides 4, 8, 16 with cube anchors of side 3, 6, 12 voxels times ``2^0, 2^(1/3), 2^(2/3)``
(3..19 voxels), and a looser IoU rule than 2D (foreground ``>= 0.4``, background ``< 0.3``,
low-quality matches kept), because the IoU of two cubes falls with the cube of a centre
offset. These are reasoned defaults, not tuned ones (one 300-step comparison with 0.3 / 0.2
was within noise).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ssmd.losses.detection import Activation, ClsLoss
from ssmd.models.backbones.resnet3d import ResNet3dFeatures
from ssmd.models.detectors.anchors import DEFAULT_SCALES, AnchorGenerator
from ssmd.models.detectors.base import MODELS
from ssmd.models.detectors.matcher import Matcher
from ssmd.models.detectors.retinanet import RetinaNet
from ssmd.models.heads.retinanet_head import RetinaNetHead
from ssmd.models.necks.fpn import FPN

__all__ = ["build_retinanet3d", "retinanet3d"]


def build_retinanet3d(
    num_classes: int = 1,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1),
    backbone_norm: str = "gn",
    fpn_channels: int = 32,
    head_convs: int = 1,
    head_norm: str | None = "gn",
    anchor_sizes: Sequence[float] = (3.0, 6.0, 12.0),
    anchor_scales: Sequence[float] = DEFAULT_SCALES,
    fg_iou_thresh: float = 0.4,
    bg_iou_thresh: float = 0.3,
    activation: Activation = "sigmoid",
    cls_loss: ClsLoss = "focal",
    prior_prob: float = 0.01,
    **post: float | int,
) -> RetinaNet:
    """A 3D ResNet-FPN RetinaNet from plain arguments (module docstring).

    Args:
        num_classes: ``K`` foreground classes.
        in_channels: volume channels.
        widths: stem and stage channels of the trunk; the last ``len(anchor_sizes)``
            stages feed the FPN (strides ``4, 8, 16, ...``).
        blocks: basic blocks per stage.
        backbone_norm: ``"gn"`` or ``"bn"``.
        fpn_channels: channels of the pyramid and the head subnets.
        head_convs: conv layers per head subnet.
        head_norm: ``"gn"`` or ``None``.
        anchor_sizes: cube side per pyramid level, voxels.
        anchor_scales: side multipliers shared by the levels.
        fg_iou_thresh: matcher foreground IoU.
        bg_iou_thresh: matcher background IoU.
        activation: ``"sigmoid"`` (RetinaNet, default here) or ``"softmax"``.
        cls_loss: ``"focal"``, ``"ce"`` or ``"ce_ohem"``.
        prior_prob: initial foreground probability of the head.
        **post: further :class:`RetinaNet` keywords (``score_thresh``, ``topk_candidates``,
            ``nms_thresh``, ``detections_per_img``, ``focal_alpha``, ``focal_gamma``,
            ``smooth_l1_beta``).
    """
    levels = len(anchor_sizes)
    if levels < 1 or levels > len(widths) - 1:
        raise ValueError(
            f"anchor_sizes = {tuple(anchor_sizes)}: need 1..{len(widths) - 1} levels (one per "
            f"returned trunk stage of widths = {tuple(widths)})"
        )
    if head_norm not in (None, "gn"):
        raise ValueError(f"head_norm must be None or 'gn', got {head_norm!r}")
    body = ResNet3dFeatures(
        in_channels=in_channels,
        widths=widths,
        blocks=blocks,
        num_outputs=levels,
        norm=backbone_norm,
    )
    fpn = FPN(body.out_channels, out_channels=fpn_channels, extra_levels=0, spatial_dims=3)
    anchor_generator = AnchorGenerator(
        sizes=anchor_sizes,
        aspect_ratios=(1.0,),
        scales=anchor_scales,
        strides=body.strides,
        spatial_dims=3,
    )
    head = RetinaNetHead(
        fpn_channels,
        anchor_generator.num_anchors_per_location,
        num_classes,
        activation=activation,
        num_convs=head_convs,
        norm="gn" if head_norm == "gn" else None,
        prior_prob=prior_prob,
        spatial_dims=3,
    )
    return RetinaNet(
        body,
        fpn,
        head,
        anchor_generator,
        matcher=Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True),
        num_classes=num_classes,
        cls_loss=cls_loss,
        activation=activation,
        **post,  # type: ignore[arg-type]
    )


@MODELS.register("retinanet3d")
def retinanet3d(
    *,
    num_classes: int = 1,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1),
    backbone_norm: str = "gn",
    fpn_channels: int = 32,
    head_convs: int = 1,
    head_norm: str | None = "gn",
    anchor_sizes: Sequence[float] = (3.0, 6.0, 12.0),
    fg_iou_thresh: float = 0.4,
    bg_iou_thresh: float = 0.3,
    activation: str = "sigmoid",
    cls_loss: str = "focal",
    score_thresh: float = 0.05,
    nms_thresh: float = 0.1,
    topk_candidates: int = 200,
    detections_per_img: int = 100,
) -> nn.Module:
    """:func:`build_retinanet3d` from the ``model`` keys (their names are the config keys)."""
    return build_retinanet3d(
        num_classes=int(num_classes),
        in_channels=int(in_channels),
        widths=tuple(int(w) for w in widths),
        blocks=tuple(int(b) for b in blocks),
        backbone_norm=backbone_norm,
        fpn_channels=int(fpn_channels),
        head_convs=int(head_convs),
        head_norm=head_norm,
        anchor_sizes=tuple(float(s) for s in anchor_sizes),
        fg_iou_thresh=float(fg_iou_thresh),
        bg_iou_thresh=float(bg_iou_thresh),
        activation=activation,  # type: ignore[arg-type]
        cls_loss=cls_loss,  # type: ignore[arg-type]
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_thresh),
        topk_candidates=int(topk_candidates),
        detections_per_img=int(detections_per_img),
    )
