"""A run killed at any phase of a step and resumed ends exactly as the uninterrupted run (issue 24).

The kill is simulated by an exception that no ``except Exception`` catches, raised at one phase
of one step; the "new process" then builds fresh objects and resumes from ``last.pt``, as
``ssmd train --resume`` / ``ssmd experiment`` do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import ToyMethod, make_samples, noisy
from torch import nn

from ssmd.config import load_config
from ssmd.engine.checkpoint import load_checkpoint
from ssmd.engine.hooks import EvalHook, standard_hooks
from ssmd.engine.loader import BatchStream
from ssmd.engine.trainer import Trainer
from ssmd.tasks import detection as build


class Killed(BaseException):
    """Stands for kill -9: nothing after the raise point runs."""


# validation "AP" per step, chosen so that the best (step 4) is followed by worse values
# that beat the best before it: losing step 4's evaluation changes best.pt
SCRIPTED_AP = {2: 0.1, 4: 0.5, 6: 0.3, 8: 0.2}
TRAIN_CFG = {
    "log_every": 1,
    "progress": False,
    "tensorboard": False,
    "eval_every": 2,
    "checkpoint_every": 2,
}


def toy_trainer(out: Path, evaluate: Callable[[Any], dict[str, float]] | None = None) -> Trainer:
    torch.manual_seed(0)
    samples = make_samples(10)
    method = ToyMethod(nn.Linear(3, 1))
    opt = torch.optim.Adam(method.trainable_parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    labeled = BatchStream(samples, [0, 1, 2], batch_size=2, seed=1, augment=noisy)
    unlabeled = BatchStream(
        samples, list(range(3, 10)), batch_size=3, seed=2, augment=noisy, is_labeled=False
    )
    hooks, _ = standard_hooks(
        out, TRAIN_CFG, evaluate or (lambda tr: {"AP": SCRIPTED_AP[tr.step]}), "AP"
    )
    return Trainer(method, opt, sched, labeled, unlabeled, 8, hooks, extra_state={"config": {}})


def rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the timing fields (wall clock differs between runs)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if "seconds" not in k})
    return out


def resume_or_start(out: Path, make: Callable[[Path], Trainer]) -> Trainer:
    trainer = make(out)
    if (out / "last.pt").is_file():
        trainer.resume(out / "last.pt")
    trainer.train()
    return trainer


PHASES = [
    "before_eval",  # killed while validating
    "after_eval",  # best.pt written, last.pt of this step not yet
    "before_checkpoint",
    "after_checkpoint",
    "mid_step",  # inside the optimisation step after the checkpoint
]


def arm(monkeypatch: pytest.MonkeyPatch, phase: str, at: int) -> None:
    """Make the first process die at ``phase`` of step ``at``."""
    if phase == "mid_step":
        real_step = Trainer.run_step

        def run_step(self: Trainer) -> Any:
            if self.step == at:  # step ``at + 1`` is being computed
                raise Killed
            return real_step(self)

        monkeypatch.setattr(Trainer, "run_step", run_step)
    elif phase in ("before_eval", "after_eval"):
        real_run = EvalHook.run

        def run(self: EvalHook) -> dict[str, float]:
            if phase == "before_eval" and self.trainer.step == at:
                raise Killed
            metrics = real_run(self)
            if phase == "after_eval" and self.trainer.step == at:
                raise Killed
            return metrics

        monkeypatch.setattr(EvalHook, "run", run)
    else:
        real_save = Trainer.save

        def save(self: Trainer, path: str | Path) -> Path:
            if phase == "before_checkpoint" and self.step == at:
                raise Killed
            written = real_save(self, path)
            if phase == "after_checkpoint" and self.step == at:
                raise Killed
            return written

        monkeypatch.setattr(Trainer, "save", save)


@pytest.mark.parametrize("at", [4, 8])
@pytest.mark.parametrize("phase", PHASES)
def test_kill_at_any_phase_resumes_to_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str, at: int
) -> None:
    if phase == "mid_step" and at == 8:
        pytest.skip("no step after the last one")
    ref = toy_trainer(tmp_path / "ref")
    ref.train()
    ref_best = load_checkpoint(tmp_path / "ref" / "best.pt")
    assert ref_best["step"] == 4  # the scripted best

    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        arm(m, phase, at)
        with pytest.raises(Killed):
            toy_trainer(out).train()
    # an interrupted atomic write leaves its temporary file behind
    (out / ".last.pt.abcd1234.tmp").write_bytes(b"partial")
    torch.manual_seed(999)  # a new process: the RNG must come from last.pt
    resumed = resume_or_start(out, toy_trainer)

    best = load_checkpoint(out / "best.pt")
    assert best["step"] == ref_best["step"]
    for key, tensor in ref_best["model"].items():
        assert torch.equal(best["model"][key], tensor), key
    assert resumed.hooks[1].best == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert rows(out / "metrics.jsonl") == rows(tmp_path / "ref" / "metrics.jsonl")
    last, ref_last = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "ref" / "last.pt")
    for key, tensor in ref_last["method"].items():
        assert torch.equal(last["method"][key], tensor), key
    assert not list(out.glob(".*.tmp"))


def test_old_checkpoint_hook_order_is_refused(tmp_path: Path) -> None:
    trainer = toy_trainer(tmp_path)
    trainer.hooks = [trainer.hooks[0], trainer.hooks[2], trainer.hooks[1]]
    with pytest.raises(ValueError, match="EvalHook comes after CheckpointHook"):
        trainer.train()


def test_a_checkpoint_with_positional_hook_states_still_resumes(tmp_path: Path) -> None:
    """last.pt files written before hook states were named (old order: log, ckpt, eval)."""
    trainer = toy_trainer(tmp_path)
    state = trainer.state_dict()
    state["hooks"] = [{}, {}, {"best": 0.25, "best_step": 2}]
    torch.save(state, tmp_path / "old.pt")
    fresh = toy_trainer(tmp_path)
    fresh.resume(tmp_path / "old.pt")
    assert fresh.hooks[1].best == 0.25  # type: ignore[attr-defined]


# a detector and data small enough for a 6-step run with 3 validations on a CPU
TINY = [
    "data.synthetic.n_images=12",
    "data.synthetic.image_size=96",
    "data.input_size=96",
    "split.labeled_ratio=1.0",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "model.head_norm=null",
    "model.detections_per_img=50",
    "train.max_iters=6",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.progress=false",
    "train.lr=0.01",
]


@pytest.mark.slow
def test_run_training_killed_after_a_validation_gives_the_same_best_and_test_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(name: str) -> dict[str, Any]:
        return load_config(
            None, [f"output_dir={tmp_path / name}", f"data.cache_dir={tmp_path / 'c'}", *TINY]
        )

    ref = build.run_training(config("ref"), log=lambda _: None)
    with monkeypatch.context() as m:
        arm(m, "after_eval", 4)
        with pytest.raises(Killed):
            build.run_training(config("run"), log=lambda _: None)
    torch.manual_seed(5)
    again = build.run_training(
        config("run"), resume=tmp_path / "run" / "last.pt", log=lambda _: None
    )
    assert again["test"] == ref["test"]
    assert again["best_step"] == ref["best_step"] and again["best_val"] == ref["best_val"]
    a, b = (
        load_checkpoint(tmp_path / "run" / "best.pt"),
        load_checkpoint(tmp_path / "ref" / "best.pt"),
    )
    for key, tensor in b["model"].items():
        assert torch.equal(a["model"][key], tensor), key
    assert rows(tmp_path / "run" / "metrics.jsonl") == rows(tmp_path / "ref" / "metrics.jsonl")
