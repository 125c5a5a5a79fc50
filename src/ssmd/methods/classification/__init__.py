"""Semi-supervised classification methods: supervised, Mean Teacher, SRC-MT and STSC."""

from __future__ import annotations

from ssmd.methods.classification import mean_teacher as _mean_teacher  # noqa: F401
from ssmd.methods.classification import srcmt as _srcmt  # noqa: F401
from ssmd.methods.classification import stsc as _stsc  # noqa: F401
from ssmd.methods.classification import supervised as _supervised  # noqa: F401
from ssmd.methods.classification.base import (
    CLASSIFICATION_METHODS,
    ClassBatch,
    ClassificationMethod,
    build_classification_method,
)

__all__ = [
    "CLASSIFICATION_METHODS",
    "ClassBatch",
    "ClassificationMethod",
    "build_classification_method",
]
