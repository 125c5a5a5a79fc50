"""``--resume`` refuses a checkpoint of another config and names the keys and the file (issue 24)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ssmd.config import load_config
from ssmd.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ssmd.engine.resume import config_differences
from ssmd.tasks.classification import run_classification_training
from ssmd.tasks.detection import run_training

TINY = [
    "data.format=synthetic",
    "data.synthetic.n_images=8",
    "data.synthetic.image_size=128",
    "data.input_size=128",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "train.max_iters=2",
    "train.batch_size=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.warmup_iters=0",
    "train.progress=false",
    "split.train=0.5",
    "split.val=0.25",
    "split.test=0.25",
]


def _config(out: Path, *extra: str) -> dict[str, Any]:
    return load_config(
        None, [*TINY, f"output_dir={out}", f"data.cache_dir={out.parent / 'c'}", *extra]
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step detection run; its ``last.pt``."""
    out = tmp_path_factory.mktemp("resume") / "run"
    run_training(_config(out), log=lambda _: None)
    return out / "last.pt"


def test_config_differences_counts_a_missing_key_as_its_default() -> None:
    current = load_config(None, ["train.lr=0.01"])
    stored = {k: v for k, v in current.items() if k != "eval"}  # an older checkpoint
    stored["train"] = {**current["train"], "lr": "1e-2"}  # the same number, as YAML 1.1 read it
    stored["model"] = {**current["model"], "anchor_sizes": tuple(current["model"]["anchor_sizes"])}
    assert config_differences(stored, current) == []
    stored["model"] = {**current["model"], "width_multiplier": 0.5}
    assert config_differences(stored, current) == [("model.width_multiplier", 0.5, 0.25)]
    stored["model"] = current["model"]
    stored["eval"] = {**current["eval"], "froc": False}
    assert config_differences(stored, current) == [("eval.froc", False, True)]
    stored["eval"] = current["eval"]
    stored["method"] = {"name": "ssmd", "alpha": 0.9}
    current["method"] = {"name": "ssmd"}
    assert config_differences(stored, current) == [("method.alpha", 0.9, "<unset>")]


def test_resume_with_another_architecture_names_key_values_and_file(
    finished: Path, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError) as err:
        run_training(
            _config(finished.parent, "model.width_multiplier=0.5", "train.max_iters=4"),
            resume=finished,
            log=lambda _: None,
        )
    text = str(err.value)
    assert str(finished) in text
    assert "model.width_multiplier = 0.25 in the checkpoint, 0.5 now" in text
    assert "train.max_iters" not in text.split("Safe to change")[0]  # 2 -> 4 is allowed


def test_resume_with_another_lr_or_a_shorter_schedule_is_refused(finished: Path) -> None:
    with pytest.raises(CheckpointError, match=r"train\.lr = 0\.001 in the checkpoint, 0\.01 now"):
        run_training(_config(finished.parent, "train.lr=0.01"), resume=finished)
    with pytest.raises(CheckpointError, match=r"train\.max_iters = 2 in the checkpoint, 1 now"):
        run_training(_config(finished.parent, "train.max_iters=1"), resume=finished)


def test_resume_into_another_output_dir_with_a_longer_schedule_works(
    finished: Path, tmp_path: Path
) -> None:
    out = tmp_path / "moved"
    logs: list[str] = []
    summary = run_training(
        _config(out, "train.max_iters=4", "train.log_every=1"), resume=finished, log=logs.append
    )
    assert summary["max_iters"] == 4 and load_checkpoint(out / "last.pt")["step"] == 4
    assert (out / "best.pt").is_file()  # copied from the checkpoint's run, then maybe replaced
    assert any("copied" in line and "best.pt" in line for line in logs)


def test_a_state_that_does_not_fit_the_model_is_a_checkpoint_error(
    finished: Path, tmp_path: Path
) -> None:
    """The config check passes (it was edited to match), the weights do not: the file is named."""
    state = load_checkpoint(finished)
    state["config"]["model"]["width_multiplier"] = 0.5
    forged = save_checkpoint(state, tmp_path / "forged" / "last.pt")
    with pytest.raises(CheckpointError) as err:
        run_training(_config(tmp_path / "out", "model.width_multiplier=0.5"), resume=forged)
    assert str(forged) in str(err.value) and "size mismatch" in str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError)


def test_resume_from_best_pt_says_to_use_last_pt(finished: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"best\.pt.*not a resumable training checkpoint.*last\.pt"
    ):
        run_training(_config(finished.parent), resume=finished.parent / "best.pt")


def test_classification_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    cfg = [
        "task=classification",
        "data.image_size=16",
        "data.synthetic.n_images=60",
        "model.width_multiplier=0.125",
        "train.batch_size=8",
        "train.progress=false",
        "train.max_iters=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        f"output_dir={tmp_path / 'cls'}",
    ]
    run_classification_training(load_config(None, cfg))
    with pytest.raises(CheckpointError) as err:
        run_classification_training(
            load_config(None, [*cfg, "model.dropout=0.5", "train.max_iters=3"]), resume=True
        )
    assert str(tmp_path / "cls" / "last.pt") in str(err.value)
    assert "model.dropout = 0.2 in the checkpoint, 0.5 now" in str(err.value)
    # an allowed change resumes
    summary = run_classification_training(
        load_config(None, [*cfg, "train.max_iters=3", "train.log_every=1"]), resume=True
    )
    assert summary["max_iters"] == 3
    assert load_checkpoint(tmp_path / "cls" / "last.pt")["step"] == 3
