"""Tasks (issue 19): each kind of run — 2D detection, classification — as one registered object.

``TASKS.get(config["task"])`` (or :func:`get_task`) says how to build a run's data, model and
method, how to train it (all its stages), evaluate and load its checkpoints and predict.
"""

from __future__ import annotations

from ssmd.tasks import classification as _classification  # noqa: F401  (registers "classification")
from ssmd.tasks import ct_slices as _ct_slices  # noqa: F401  (registers recipe "ct_slices")
from ssmd.tasks import detection as _detection  # noqa: F401  (registers "detection")
from ssmd.tasks import detection3d as _detection3d  # noqa: F401  (registers "detection3d")
from ssmd.tasks import mil_self_training as _mil_self_training  # noqa: F401  (recipe)
from ssmd.tasks import pseudo_label as _pseudo_label  # noqa: F401  (registers recipe "pseudo_label")
from ssmd.tasks.base import RECIPES, TASKS, Stage, Task, get_task, run_stages

__all__ = ["RECIPES", "TASKS", "Stage", "Task", "get_task", "run_stages"]
