"""Deprecated: the classification task moved to :mod:`ssmd.tasks.classification` (issue 19).

Only re-exports, so that existing imports keep working.
"""

from __future__ import annotations

from ssmd.tasks.classification import (
    ClassBatchStream,
    Normalizer,
    build_classification_data,
    build_classification_dataset_from_config,
    build_classification_model,
    evaluate_classifier,
    is_classification_checkpoint,
    load_classifier,
    predict_probabilities,
    run_classification_training,
)

__all__ = [
    "ClassBatchStream",
    "Normalizer",
    "build_classification_data",
    "build_classification_dataset_from_config",
    "build_classification_model",
    "evaluate_classifier",
    "is_classification_checkpoint",
    "load_classifier",
    "predict_probabilities",
    "run_classification_training",
]
