"""The task registry and the resumable stages of a multi-stage recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ssmd.config import DEFAULTS, ConfigError, load_config
from ssmd.methods import METHODS
from ssmd.tasks import RECIPES, TASKS, Stage, get_task, run_stages
from ssmd.tasks.classification import ClassificationTask
from ssmd.tasks.detection import DetectionTask


class Counting(Stage):
    """Writes ``<out>/<name>.json`` holding the previous stages' names and its run count."""

    runs: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str, always: bool = False) -> None:
        self.name = name  # type: ignore[misc]
        self.always = always

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / f"{self.name}.json"

    def done(self, config: dict[str, Any]) -> bool:
        return not self.always and super().done(config)

    def run(
        self, config: dict[str, Any], previous: dict[str, Any], resume: Any, log: Any
    ) -> dict[str, Any]:
        Counting.runs[self.name] = Counting.runs.get(self.name, 0) + 1
        result = {"previous": list(previous), "resume": resume}
        self.marker(config).write_text(json.dumps(result))
        return result


def test_registry_holds_both_tasks_and_the_pseudo_label_recipe() -> None:
    assert TASKS.names() == ["classification", "detection", "detection3d"]
    assert isinstance(get_task({}), DetectionTask)  # no task key: detection
    assert isinstance(get_task(load_config(None, ["task=classification"])), ClassificationTask)
    assert get_task("detection").defaults is DEFAULTS
    assert "pseudo_label" in RECIPES
    assert METHODS.get("pseudo_label").recipe == "pseudo_label"
    assert METHODS.get("supervised").recipe is None
    with pytest.raises(ConfigError, match=r"task = 'segmentation': unknown task; known: "):
        get_task("segmentation")


def test_stages_of_a_config_follow_its_method() -> None:
    det = get_task("detection")
    assert det.stages(load_config(None, [])) == []  # supervised: one training run
    stages = det.stages(load_config(None, ["method.name=pseudo_label"]))
    assert [s.name for s in stages] == ["stage1", "pseudo_labels", "train"]
    with pytest.raises(ValueError, match=r"method.threshold = 1.5"):
        det.stages(load_config(None, ["method.name=pseudo_label", "method.threshold=1.5"]))


def test_finished_stages_are_read_back_not_run_again(tmp_path: Path) -> None:
    Counting.runs = {}
    config = {"output_dir": str(tmp_path)}
    recipe = [Counting("a"), Counting("b"), Counting("last", always=True)]
    first = run_stages(recipe, config, resume="ckpt", log=lambda _: None)
    assert Counting.runs == {"a": 1, "b": 1, "last": 1}
    assert first["b"]["previous"] == ["a"] and first["last"]["previous"] == ["a", "b"]
    # resume goes to the last stage only
    assert first["a"]["resume"] is None and first["last"]["resume"] == "ckpt"
    (tmp_path / "b.json").unlink()  # an interrupted recipe: b did not finish
    again = run_stages(recipe, config, log=lambda _: None)
    assert Counting.runs == {"a": 1, "b": 2, "last": 2}
    assert again["a"] == first["a"]  # read from its marker


def test_stage_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stage names repeat"):
        run_stages([Counting("a"), Counting("a")], {"output_dir": str(tmp_path)})


def test_each_task_names_its_method_registry() -> None:
    from ssmd.methods.classification.base import CLASSIFICATION_METHODS

    assert get_task("detection").methods is METHODS
    assert get_task("classification").methods is CLASSIFICATION_METHODS
    cls_config = load_config(None, ["task=classification", "method.name=mean_teacher"])
    assert get_task(cls_config).stages(cls_config) == []  # no classification recipe yet
