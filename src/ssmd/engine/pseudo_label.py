"""Deprecated: pseudo-labeling's stages moved to :mod:`ssmd.tasks.pseudo_label` (issue 19).

Only re-exports, so that existing imports keep working.
"""

from __future__ import annotations

from ssmd.tasks.pseudo_label import (
    PseudoLabeledSamples,
    filter_pseudo_labels,
    run_pseudo_label,
    stage1_config,
    stage1_mismatch,
)

__all__ = [
    "PseudoLabeledSamples",
    "filter_pseudo_labels",
    "run_pseudo_label",
    "stage1_config",
    "stage1_mismatch",
]
