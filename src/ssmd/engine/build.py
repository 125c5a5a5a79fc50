"""Deprecated: the detection task moved to :mod:`ssmd.tasks.detection` (issue 19).

Only re-exports, so that existing imports keep working; import from :mod:`ssmd.tasks.detection`
(task code) and :mod:`ssmd.engine.optim` (optimiser, schedule, seeding) instead.
"""

from __future__ import annotations

from ssmd.engine.optim import build_optimizer, build_scheduler, seed_everything
from ssmd.tasks.detection import (
    DataBundle,
    augment_transform,
    build_data,
    build_model,
    dataset_from_config,
    evaluate_checkpoint,
    evaluate_predictions,
    load_model,
    normalize_transform,
    predict_dataset,
    prepare_transform,
    run_training,
    tiling,
    train_once,
)

__all__ = [
    "DataBundle",
    "augment_transform",
    "build_data",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "dataset_from_config",
    "evaluate_checkpoint",
    "evaluate_predictions",
    "load_model",
    "normalize_transform",
    "predict_dataset",
    "prepare_transform",
    "run_training",
    "seed_everything",
    "tiling",
    "train_once",
]
