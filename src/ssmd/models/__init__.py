"""Detection models: backbones, necks, heads, anchors, box coding, matching and detectors."""

from __future__ import annotations

from ssmd.models.backbones.resnet import BACKBONES, ResNetFeatures, build_resnet
from ssmd.models.detectors.anchors import AnchorGenerator
from ssmd.models.detectors.box_coder import BoxCoder
from ssmd.models.detectors.matcher import Matcher
from ssmd.models.detectors.retinanet import DenseOutputs, RetinaNet, build_retinanet, flatten_levels
from ssmd.models.factory import MODELS, create_model
from ssmd.models.heads.retinanet_head import RetinaNetHead
from ssmd.models.necks.fpn import FPN

__all__ = [
    "BACKBONES",
    "FPN",
    "MODELS",
    "AnchorGenerator",
    "BoxCoder",
    "DenseOutputs",
    "Matcher",
    "ResNetFeatures",
    "RetinaNet",
    "RetinaNetHead",
    "build_resnet",
    "build_retinanet",
    "create_model",
    "flatten_levels",
]
