"""Experiments: methods x labeled ratios x seeds, resumable and shareable between workers.

An experiment file (``configs/experiments/*.yaml``) names a base config, the rows (methods with
their parameters), the labeled ratios and the seeds; every ``(row, ratio, seed)`` is one cell,
one training run. The package is split by job:

- :mod:`~ssmd.experiments.spec`: the file's schema and validation, :class:`Experiment`,
  :class:`Cell`, :class:`MethodSpec`, each cell's config, :meth:`Experiment.restrict`
  (``--rows`` / ``--seeds`` / ``--ratios``).
- :mod:`~ssmd.experiments.claims`: atomic cell locks, their refresh, stale-lock breaking.
- :mod:`~ssmd.experiments.runner`: running cells (resume, shared pseudo-labeling stage 1,
  ``result.json``) and the worker loop :func:`run_experiment`.
- :mod:`~ssmd.experiments.report`: ``results.csv``, ``table.md``, ``summary.json``, plots.
"""

from __future__ import annotations

from ssmd.experiments.claims import claim, is_stale
from ssmd.experiments.report import collect_results, format_table, summarize, write_report
from ssmd.experiments.runner import cell_status, run_cell, run_experiment, shared_stage1
from ssmd.experiments.spec import Cell, Experiment, MethodSpec, load_experiment

__all__ = [
    "Cell",
    "Experiment",
    "MethodSpec",
    "cell_status",
    "claim",
    "collect_results",
    "format_table",
    "is_stale",
    "load_experiment",
    "run_cell",
    "run_experiment",
    "shared_stage1",
    "summarize",
    "write_report",
]
