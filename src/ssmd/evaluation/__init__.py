"""Evaluation: COCO AP/AR, FROC + CPM, CorLoc + bootstrap CIs, plots, statistics and metric tables.

Boxes are ``xyxy`` in absolute pixels (voxels in 3D) everywhere except the COCO
``[x, y, w, h]`` result lists, which are converted by ``ssmd.structures.boxes``.
"""

from __future__ import annotations

from ssmd.evaluation.coco_io import CocoGroundTruth, load_coco_gt, load_coco_results
from ssmd.evaluation.coco_map import (
    DEFAULT_MAX_DETS,
    STAT_KEYS,
    COCOEvaluator,
    coco_ap,
    predictions_to_coco_results,
)
from ssmd.evaluation.corloc import (
    CorLocOutcomes,
    bootstrap_ci,
    corloc_from_coco,
    corloc_outcomes,
    image_auc,
    paired_comparison,
)
from ssmd.evaluation.froc import (
    DEFAULT_FP_RATES,
    FROCMatch,
    FROCResult,
    froc,
    froc_curve,
    froc_from_coco,
    froc_match,
    interpolate_sensitivity,
)
from ssmd.evaluation.plots import plot_curves, plot_froc
from ssmd.evaluation.statistics import compare, mean_ci, mean_std
from ssmd.evaluation.table import format_metrics_table

__all__ = [
    "DEFAULT_FP_RATES",
    "DEFAULT_MAX_DETS",
    "STAT_KEYS",
    "COCOEvaluator",
    "CocoGroundTruth",
    "CorLocOutcomes",
    "FROCMatch",
    "FROCResult",
    "bootstrap_ci",
    "coco_ap",
    "compare",
    "corloc_from_coco",
    "corloc_outcomes",
    "format_metrics_table",
    "froc",
    "froc_curve",
    "froc_from_coco",
    "froc_match",
    "image_auc",
    "interpolate_sensitivity",
    "load_coco_gt",
    "load_coco_results",
    "mean_ci",
    "mean_std",
    "paired_comparison",
    "plot_curves",
    "plot_froc",
    "predictions_to_coco_results",
]
