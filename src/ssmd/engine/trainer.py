"""A plain training loop with hooks (detectron2's ``TrainerBase`` in spirit).

The loop draws a labeled batch (and an unlabeled one when the method uses it, and one of
every further named stream a task adds, e.g. ``weak``: passed to
:meth:`Method.training_step` as the keyword of that name), asks the method for its losses, checks they are finite, steps the optimiser and the
LR schedule, lets the method update any teacher (:meth:`Method.after_step`), and
calls every hook's ``after_step``. Evaluation, checkpointing and logging are hooks.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssmd.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ssmd.engine.loader import BatchStream
from ssmd.methods.base import Method

__all__ = ["HookBase", "NonFiniteLossError", "Trainer"]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class HookBase:
    """Hooks see the trainer before training, before/after every step and after training."""

    trainer: Trainer

    def before_train(self) -> None:
        """Called once before the first step (also after a resume)."""

    def before_step(self) -> None:
        """Called before every step."""

    def after_step(self) -> None:
        """Called after every optimiser step; ``trainer.step`` is the step just finished."""

    def after_train(self) -> None:
        """Called once after the last step."""

    def state_dict(self) -> dict[str, Any]:
        """State to store in checkpoints (e.g. the best metric so far)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Trainer:
    """Runs ``max_iters`` optimisation steps of ``method``.

    Args:
        method: the training method (owns the student and any teacher).
        optimizer: optimiser over ``method.trainable_parameters()``.
        scheduler: LR scheduler stepped once per iteration.
        labeled: stream of labeled batches.
        unlabeled: stream of unlabeled batches (required when ``method.uses_unlabeled``).
        max_iters: number of steps.
        hooks: evaluation, checkpointing, logging.
        grad_clip: max global gradient norm (``None`` or ``<= 0`` disables clipping).
        extra_state: JSON-like items stored in every checkpoint (resolved config, split manifest).
        streams: further named streams (e.g. ``{"weak": ...}``); each step draws one batch of
            each and passes it to ``training_step`` as the keyword of its name, so a task adds
            an input without touching the trainer (the method declares it as an optional
            parameter, e.g. ``weak: Batch | None = None``, keeping the base signature). Checkpoints keep their state as
            ``<name>_stream``.
    """

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        labeled: BatchStream,
        unlabeled: BatchStream | None,
        max_iters: int,
        hooks: Sequence[HookBase] = (),
        grad_clip: float | None = None,
        extra_state: dict[str, Any] | None = None,
        streams: Mapping[str, BatchStream] | None = None,
    ) -> None:
        if method.uses_unlabeled and unlabeled is None:
            raise ValueError(
                f"method {type(method).__name__} needs unlabeled images, but the split has none"
            )
        streams = dict(streams or {})
        accepts = inspect.signature(method.training_step).parameters
        for name in streams:
            if name in ("labeled", "unlabeled", "step", "max_iters"):
                raise ValueError(f"stream name {name!r} is reserved")
            if name not in accepts:
                raise ValueError(
                    f"stream {name!r}: {type(method).__name__}.training_step has no parameter "
                    f"{name!r} to receive it"
                )
        self.streams = streams
        self.method = method
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.max_iters = max_iters
        self.grad_clip = grad_clip
        self.extra_state = dict(extra_state or {})
        self.step = 0  # number of finished steps
        self.last_losses: dict[str, float] = {}
        self.last_step_time = 0.0
        self.last_good_checkpoint: Path | None = None
        self.hooks = list(hooks)
        for hook in self.hooks:
            hook.trainer = self

    # ---------------------------------------------------------------- loop
    def train(self) -> None:
        """Run from ``self.step`` to ``max_iters`` (``self.step > 0`` after :meth:`resume`)."""
        for hook in self.hooks:
            hook.before_train()
        while self.step < self.max_iters:
            for hook in self.hooks:
                hook.before_step()
            self.run_step()
            self.step += 1
            for hook in self.hooks:
                hook.after_step()
        for hook in self.hooks:
            hook.after_train()

    def run_step(self) -> dict[str, Tensor]:
        """One optimisation step; raises :class:`NonFiniteLossError` before touching the weights."""
        start = time.perf_counter()
        self.method.train()
        labeled = next(self.labeled)
        unlabeled = (
            next(self.unlabeled)
            if (self.method.uses_unlabeled and self.unlabeled is not None)
            else None
        )
        extra = {name: next(stream) for name, stream in self.streams.items()}
        losses = self.method.training_step(labeled, unlabeled, self.step, self.max_iters, **extra)
        if "loss" not in losses:
            raise KeyError(
                f"{type(self.method).__name__}.training_step returned no 'loss' (keys: {sorted(losses)})"
            )
        total = losses["loss"]
        if not bool(torch.isfinite(total)):
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            kept = (
                f"the last good checkpoint is {self.last_good_checkpoint}"
                if self.last_good_checkpoint is not None
                else "no checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step} ({parts}); training stopped before updating the "
                f"weights; {kept}. Try a lower train.lr or train.grad_clip."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip is not None and self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.method.after_step(self.step)
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        self.last_step_time = time.perf_counter() - start
        return losses

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs."""
        return {
            "kind": "ssmd-train",
            "step": self.step,
            "max_iters": self.max_iters,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "labeled_stream": self.labeled.state_dict(),
            "unlabeled_stream": self.unlabeled.state_dict() if self.unlabeled is not None else None,
            **{f"{name}_stream": stream.state_dict() for name, stream in self.streams.items()},
            "rng": capture_rng_state(),
            "hooks": [{"hook": type(h).__name__, "state": h.state_dict()} for h in self.hooks],
            **self.extra_state,
        }

    def save(self, path: str | Path) -> Path:
        """Write a resumable checkpoint atomically; remembered as the last good one."""
        written = save_checkpoint(self.state_dict(), path)
        self.last_good_checkpoint = written
        return written

    def resume(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` so the next step equals the uninterrupted run's."""
        state = load_checkpoint(path)
        if state.get("kind") != "ssmd-train":
            raise ValueError(
                f"{path}: field 'kind' = {state.get('kind')!r}: not a resumable training checkpoint"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.labeled.load_state_dict(state["labeled_stream"])
        if self.unlabeled is not None and state.get("unlabeled_stream") is not None:
            self.unlabeled.load_state_dict(state["unlabeled_stream"])
        for name, stream in self.streams.items():
            if f"{name}_stream" not in state:
                raise ValueError(f"{path}: field '{name}_stream' missing: no state of that stream")
            stream.load_state_dict(state[f"{name}_stream"])
        restore_rng_state(state["rng"])
        for hook, hook_state in zip(self.hooks, _hook_states(self.hooks, state), strict=True):
            hook.load_state_dict(hook_state)
        self.step = int(state["step"])
        self.last_good_checkpoint = Path(path)


def _hook_states(hooks: Sequence[HookBase], state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each hook's saved state, matched by hook type (in order among hooks of one type).

    Matching by type keeps a checkpoint loadable when the hook order changes (issue 24 moved
    validation before ``last.pt``). Checkpoints written before hooks were named hold a plain
    list of states; those are matched by their keys (the keys of the hook's own state).
    """
    saved = list(state.get("hooks", []))
    named = all(isinstance(s, dict) and "hook" in s and "state" in s for s in saved)
    out: list[dict[str, Any]] = []
    used: set[int] = set()
    for hook in hooks:
        name, keys = type(hook).__name__, set(hook.state_dict())
        match = next(
            (
                i
                for i, s in enumerate(saved)
                if i not in used and (s["hook"] == name if named else set(s) == keys)
            ),
            None,
        )
        if match is None:
            out.append({})
        else:
            used.add(match)
            out.append(dict(saved[match]["state"] if named else saved[match]))
    return out
