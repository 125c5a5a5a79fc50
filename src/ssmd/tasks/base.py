"""What a task is (issue 19): how to build, train, evaluate, predict and load one kind of run.

A :class:`Task` (2D detection, classification, ...) is registered in :data:`TASKS` under the
name a config's ``task`` key holds; ``ssmd train / evaluate / predict``, ``ssmd experiment``
and ``ssmd pretrain`` pick the task through the registry, never by comparing names.

A multi-stage recipe (pseudo-labeling: a supervised stage 1, its pseudo boxes, stage 2) is a
list of :class:`Stage` objects run by :func:`run_stages`: each stage writes into its own
folder, and a stage whose marker file exists is not run again but read back, so an
interrupted recipe resumes at the first unfinished stage. An SSL method names the recipe it
needs with :attr:`ssmd.methods.base.Method.recipe`; the task maps that name to its stages
(:meth:`Task.stages`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from ssmd.config import ConfigError
from ssmd.utils.registry import Registry

__all__ = ["RECIPES", "TASKS", "Stage", "Task", "get_task", "run_stages"]

Log = Callable[[str], None]


class Stage(ABC):
    """One resumable step of a multi-stage recipe.

    A stage is done when its :meth:`marker` file exists; :func:`run_stages` then calls
    :meth:`load` instead of :meth:`run`. :meth:`run` must write the marker last (so that a
    stage killed half-way is run again), and gets the results of the stages before it.
    """

    name: ClassVar[str]

    @abstractmethod
    def output_dir(self, config: dict[str, Any]) -> Path:
        """The folder this stage writes into."""

    @abstractmethod
    def marker(self, config: dict[str, Any]) -> Path:
        """The file whose existence means the stage finished."""

    @abstractmethod
    def run(
        self,
        config: dict[str, Any],
        previous: dict[str, Any],
        resume: str | Path | None,
        log: Log,
    ) -> dict[str, Any]:
        """Run the stage; ``previous`` maps earlier stages' names to their results."""

    def load(self, config: dict[str, Any], previous: dict[str, Any], log: Log) -> dict[str, Any]:
        """The result of a finished stage (default: its marker read as JSON)."""
        return dict(json.loads(self.marker(config).read_text()))

    def done(self, config: dict[str, Any]) -> bool:
        """Whether the stage finished (its marker exists)."""
        return self.marker(config).is_file()


def run_stages(
    stages: Sequence[Stage],
    config: dict[str, Any],
    resume: str | Path | None = None,
    log: Log = print,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order, skipping (reading back) the finished ones.

    Args:
        stages: the recipe; names must be unique.
        config: the resolved config of the whole recipe.
        resume: handed to the last stage only (the others resume from their own folders).
        log: progress messages.

    Returns:
        Stage name -> result, in order.
    """
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    results: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        if stage.done(config):
            results[stage.name] = stage.load(config, results, log)
        else:
            results[stage.name] = stage.run(config, results, resume if last else None, log)
    return results


class Task(ABC):
    """One kind of run: its config defaults, data, model, method, training and inference.

    Subclasses are registered with ``@TASKS.register("<task>")``; ``config["task"]`` names
    one. The models and methods never read the config: a task turns config sections into
    constructor arguments (detectron2's rule).
    """

    name: ClassVar[str]

    @property
    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """The default config of this task (what :func:`ssmd.config.load_config` starts from)."""

    @abstractmethod
    def build_data(self, config: dict[str, Any]) -> Any:
        """Dataset and split of ``config``."""

    @abstractmethod
    def build_model(self, config: dict[str, Any], data: Any) -> nn.Module:
        """The network of ``config["model"]`` for ``data``'s classes and channels."""

    @abstractmethod
    def build_method(self, config: dict[str, Any], model: nn.Module, data: Any) -> Any:
        """The training method of ``config["method"]`` around ``model``."""

    @abstractmethod
    def train(
        self, config: dict[str, Any], resume: str | Path | None = None, log: Log = print
    ) -> dict[str, Any]:
        """Train and test one run (all its stages); returns the run's summary."""

    @abstractmethod
    def evaluate_checkpoint(
        self, checkpoint: str | Path, part: str = "test", which: str = "student"
    ) -> dict[str, float]:
        """Metrics of a run's checkpoint on a part of that run's own split."""

    @abstractmethod
    def load_model(
        self, checkpoint: str | Path, which: str = "student"
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The network and the checkpoint state of ``best.pt`` / ``last.pt``."""

    @abstractmethod
    def predict(self, checkpoint: str | Path, source: str | Path, **kwargs: Any) -> Any:
        """Predictions of a checkpoint's network on the images of ``source``."""

    def pretrain_images(
        self, config: dict[str, Any], part: str
    ) -> tuple[Callable[[int], Tensor], int, list[int], int]:
        """The images ``ssmd pretrain`` learns from.

        Returns:
            ``(load, total, indices, channels)``: ``load(i)`` is image ``i`` of the dataset as
            ``Tensor[C, H, W]``, ``total`` the dataset size, ``indices`` the positions of the
            split part ``part`` (``all``: every image) and ``channels`` is ``C``.
        """
        raise ConfigError(f"task = {self.name!r}: ssmd pretrain does not support this task")

    def pretrain_trunk(
        self, config: dict[str, Any], in_channels: int
    ) -> tuple[nn.Module, list[int]]:
        """The trunk of the model ``config`` builds, and the channels of its feature maps."""
        raise ConfigError(f"task = {self.name!r}: ssmd pretrain does not support this task")

    def pretrain_view_size(self, config: dict[str, Any]) -> int:
        """The side of a pretraining view when ``pretrain.augment.crop_size`` is null."""
        return 128

    @property
    @abstractmethod
    def methods(self) -> Registry[Any]:
        """The registry of this task's training methods (``method.name``)."""

    def stages(self, config: dict[str, Any]) -> list[Stage]:
        """The stages of ``config``'s method recipe (:attr:`ssmd.methods.base.Method.recipe`,
        registered in :data:`RECIPES`); ``[]`` for a one-stage method (or an unknown name,
        which building the method reports)."""
        name = str(config["method"]["name"])
        recipe = getattr(self.methods.get(name), "recipe", None) if name in self.methods else None
        return RECIPES.get(recipe)(config) if recipe else []


TASKS: Registry[Task] = Registry("task")
"""The tasks, by the name a config's ``task`` key holds (one instance each)."""

RECIPES: Registry[Callable[[dict[str, Any]], list[Stage]]] = Registry("recipe")
"""Multi-stage recipes by the name a method's :attr:`~ssmd.methods.base.Method.recipe` holds:
a function from the resolved config to its stages (it may validate the config first)."""


def get_task(config_or_name: dict[str, Any] | str) -> Task:
    """The registered task of a config (its ``task`` key, default ``detection``) or a name.

    Raises:
        ConfigError: no task of that name.
    """
    name = (
        config_or_name
        if isinstance(config_or_name, str)
        else str(config_or_name.get("task", "detection"))
    )
    if name not in TASKS:
        raise ConfigError(f"task = {name!r}: unknown task; known: {', '.join(TASKS.names())}")
    return TASKS.get(name)
