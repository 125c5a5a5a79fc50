"""Standard hooks: periodic checkpoints, validation with best-checkpoint selection, logging."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmd.engine.checkpoint import load_checkpoint, save_checkpoint
from ssmd.engine.trainer import HookBase

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "LoggingHook",
    "model_checkpoint_state",
    "remove_stale_temporaries",
    "standard_hooks",
]


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files that an interrupted atomic checkpoint write left in ``folder``.

    :func:`ssmd.engine.checkpoint.save_checkpoint` writes ``.<name>.<random>.tmp`` and renames
    it; a process killed in between leaves the temporary behind. Only the run's own names
    (``last.pt``, ``best.pt``) are matched. Returns the removed paths.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in ("last.pt", "best.pt"):
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def model_checkpoint_state(trainer: Any, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """A prediction checkpoint: the student (and teacher, if any) weights plus run context."""
    method = trainer.method
    state: dict[str, Any] = {
        "kind": "ssmd-model",
        "step": trainer.step,
        "model": method.model.state_dict(),
        "metrics": dict(metrics or {}),
        **trainer.extra_state,
    }
    teacher = getattr(method, "teacher", None)
    if teacher is not None:
        state["teacher"] = teacher.state_dict()
    return state


class CheckpointHook(HookBase):
    """Write the resumable ``last.pt`` every ``every`` steps and at the end of training.

    It must run *after* any :class:`EvalHook` of the same trainer: ``last.pt`` of step ``k``
    then records step ``k``'s validation (the best value and step so far), so a run killed
    after that validation and resumed from ``last.pt`` neither repeats nor loses it. The
    opposite order lost the evaluation of step ``k`` on a resume and let a later, worse
    evaluation overwrite ``best.pt`` (issue 24); :meth:`before_train` refuses that order.
    Leftover temporary files of interrupted atomic writes (``.last.pt.*.tmp``,
    ``.best.pt.*.tmp``) are removed before training starts.
    """

    def __init__(self, output_dir: str | Path, every: int) -> None:
        self.path = Path(output_dir) / "last.pt"
        self.every = every

    def before_train(self) -> None:
        hooks = self.trainer.hooks
        mine = hooks.index(self)
        late = [type(h).__name__ for h in hooks[mine + 1 :] if isinstance(h, EvalHook)]
        if late:
            raise ValueError(
                f"hook order: {late[0]} comes after CheckpointHook, so last.pt would be written "
                "before that step's validation and a resume would lose it; put evaluation hooks "
                "before CheckpointHook"
            )
        remove_stale_temporaries(self.path.parent)

    def after_step(self) -> None:
        step = self.trainer.step
        if (self.every > 0 and step % self.every == 0) or step == self.trainer.max_iters:
            self.trainer.save(self.path)


class EvalHook(HookBase):
    """Validate every ``every`` steps and at the end; keep the best model as ``best.pt``.

    Args:
        evaluate: callable taking the trainer and returning a metrics dict.
        output_dir: where ``best.pt`` and ``metrics.jsonl`` go.
        every: validation period in steps (``<= 0``: only at the end).
        metric: key of the metrics dict that selects the best checkpoint (higher is better).
        logger: the :class:`LoggingHook` that writes validation rows to ``metrics.jsonl``
            (default: the trainer's first ``LoggingHook``).
    """

    def __init__(
        self,
        evaluate: Callable[[Any], dict[str, float]],
        output_dir: str | Path,
        every: int,
        metric: str = "AP",
        logger: LoggingHook | None = None,
    ) -> None:
        self.evaluate = evaluate
        self.best_path = Path(output_dir) / "best.pt"
        self.every = every
        self.metric = metric
        self.logger = logger
        self.best = -math.inf
        self.best_step = -1
        self.history: list[dict[str, float]] = []

    def before_train(self) -> None:
        if self.logger is None:
            self.logger = next((h for h in self.trainer.hooks if isinstance(h, LoggingHook)), None)
        step = self.trainer.step
        if step > 0 and self.best_path.is_file() and self.logger is not None:
            saved = int(load_checkpoint(self.best_path).get("step", -1))
            if saved > step:
                # killed after a validation that wrote best.pt but before last.pt recorded it:
                # the resumed run repeats that validation and writes best.pt again
                self.logger.message(
                    f"{self.best_path} (step {saved}) is newer than the resume point (step "
                    f"{step}); its validation will be repeated"
                )

    def after_step(self) -> None:
        step = self.trainer.step
        if (self.every > 0 and step % self.every == 0) or step == self.trainer.max_iters:
            self.run()

    def run(self) -> dict[str, float]:
        """Evaluate now, log, and write ``best.pt`` if the selection metric improved."""
        start = time.perf_counter()
        metrics = self.evaluate(self.trainer)
        if self.metric not in metrics:
            raise KeyError(
                f"eval.select_metric = {self.metric!r} is not among the metrics {sorted(metrics)}"
            )
        value = float(metrics[self.metric])
        improved = value > self.best
        if improved:
            self.best, self.best_step = value, self.trainer.step
            save_checkpoint(model_checkpoint_state(self.trainer, metrics), self.best_path)
        row = {"step": self.trainer.step, **{f"val/{k}": float(v) for k, v in metrics.items()}}
        row["val/seconds"] = time.perf_counter() - start
        row["val/best"] = self.best
        self.history.append(row)
        if self.logger is not None:
            self.logger.write(row)
            self.logger.message(
                f"step {self.trainer.step}: val {self.metric}={value:.4f}"
                + (
                    " (best, saved best.pt)"
                    if improved
                    else f" (best {self.best:.4f} at step {self.best_step})"
                )
            )
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", -math.inf))
        self.best_step = int(state.get("best_step", -1))


class LoggingHook(HookBase):
    """Progress bar with loss and ETA, ``metrics.jsonl`` rows, optional TensorBoard.

    Args:
        output_dir: folder of ``metrics.jsonl`` (and ``tensorboard/``).
        every: log period in steps.
        progress: show a tqdm progress bar (on stderr).
        tensorboard: also write TensorBoard scalars (needs the ``tensorboard`` extra).
    """

    def __init__(
        self,
        output_dir: str | Path,
        every: int = 10,
        progress: bool = True,
        tensorboard: bool = False,
    ) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.every = max(1, every)
        self.progress = progress
        self.tensorboard = tensorboard
        self._bar: Any = None
        self._tb: Any = None
        self._sums: dict[str, float] = {}
        self._count = 0

    def before_train(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_rows_after(self.trainer.step)
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.trainer.max_iters,
                initial=self.trainer.step,
                desc="train",
                unit="it",
                dynamic_ncols=True,
                mininterval=1.0,
            )
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "train.tensorboard=true needs TensorBoard: pip install 'ssmd[tensorboard]'"
                ) from exc
            self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))

    def after_step(self) -> None:
        for k, v in self.trainer.last_losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                loss=f"{self.trainer.last_losses.get('loss', float('nan')):.4f}", refresh=False
            )
        step = self.trainer.step
        if step % self.every == 0 or step == self.trainer.max_iters:
            row: dict[str, float] = {"step": step}
            row.update({f"train/{k}": s / self._count for k, s in self._sums.items()})
            row["train/lr"] = float(self.trainer.optimizer.param_groups[0]["lr"])
            row["train/step_seconds"] = self.trainer.last_step_time
            self.write(row)
            self._sums, self._count = {}, 0

    def _drop_rows_after(self, step: int) -> None:
        """Keep only the ``metrics.jsonl`` rows of steps ``<= step`` (the run's resume point).

        A run killed between two checkpoints has already logged the steps after the last
        one; resumed, it logs them again, so without this they would appear twice. A fresh
        run (``step == 0``) in an old output folder starts an empty file.
        """
        if not self.path.is_file():
            return
        kept: list[str] = []
        for line in self.path.read_text().splitlines():
            try:
                row_step = json.loads(line).get("step", 0)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if step > 0 and row_step <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def state_dict(self) -> dict[str, Any]:
        # the running sums of the current logging window, so a resumed run's next train
        # row averages the same steps as the uninterrupted run's
        return {"sums": dict(self._sums), "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = {str(k): float(v) for k, v in state.get("sums", {}).items()}
        self._count = int(state.get("count", 0))

    def write(self, row: dict[str, float]) -> None:
        """Append one JSON row to ``metrics.jsonl`` (and TensorBoard)."""
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step":
                    self._tb.add_scalar(key, value, step)

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def standard_hooks(
    out: Path,
    train_cfg: dict[str, Any],
    evaluate: Callable[[Any], dict[str, float]],
    metric: str,
) -> tuple[list[HookBase], EvalHook]:
    """The hooks every training run uses, in order: logging, validation/``best.pt``, ``last.pt``.

    Validation comes before the checkpoint so that ``last.pt`` of a step includes that
    step's evaluation (see :class:`CheckpointHook`).

    Args:
        out: the run's output folder.
        train_cfg: the config's ``train`` section (``log_every``, ``progress``,
            ``tensorboard``, ``eval_every``, ``checkpoint_every``).
        evaluate: validation metrics of the trainer's current model.
        metric: the validation metric that selects ``best.pt``.

    Returns:
        The hook list for :class:`~ssmd.engine.trainer.Trainer` and the :class:`EvalHook`
        (whose ``best`` / ``best_step`` the run summary reports).
    """
    logger = LoggingHook(
        out,
        every=int(train_cfg["log_every"]),
        progress=bool(train_cfg["progress"]),
        tensorboard=bool(train_cfg["tensorboard"]),
    )
    eval_hook = EvalHook(
        evaluate, out, every=int(train_cfg["eval_every"]), metric=metric, logger=logger
    )
    return [
        logger,
        eval_hook,
        CheckpointHook(out, every=int(train_cfg["checkpoint_every"])),
    ], eval_hook
