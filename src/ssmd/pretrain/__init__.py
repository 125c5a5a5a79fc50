"""Self-supervised pretraining of backbones on unlabeled images (``ssmd pretrain``).

The first family of semi-supervised learning — pretrain on unlabeled data, fine-tune on
labeled data: :mod:`ssmd.pretrain.job` pretrains the trunk of any detector or classifier
config on the images of its split with SimCLR (:mod:`ssmd.pretrain.simclr`, global features)
or VICRegL (:mod:`ssmd.pretrain.vicregl`, global and local features) under modality-aware
augmentation (:mod:`ssmd.pretrain.views`), and writes a backbone checkpoint that
``model.pretrained_weights`` loads (:mod:`ssmd.models.backbones.weights`). The losses and heads
are lightly's (the ``pretrain`` extra).
"""

from __future__ import annotations

from ssmd.pretrain import simclr, vicregl  # noqa: F401  (register the methods)
from ssmd.pretrain.base import PRETRAIN_METHODS, PretrainMethod, build_pretrain_method
from ssmd.pretrain.views import PRESETS, MultiViewAugment, ViewBatch, augment_from_config

__all__ = [
    "PRESETS",
    "PRETRAIN_METHODS",
    "MultiViewAugment",
    "PretrainMethod",
    "ViewBatch",
    "augment_from_config",
    "build_pretrain_method",
]
