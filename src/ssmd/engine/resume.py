"""Resuming a run safely: the checkpoint's config must be the one being resumed.

:func:`resume_trainer` is what ``ssmd train --resume CKPT`` (detection and classification)
does before :meth:`ssmd.engine.trainer.Trainer.resume`: it checks that ``CKPT`` is a
resumable training checkpoint, compares the config stored in it with the current one key by
key, and turns a state that does not fit the model built from the current config (``size
mismatch``, missing keys, another optimiser) into a :class:`CheckpointError` naming the file.

Only what cannot change the weights a resumed run reaches may differ (:data:`SAFE_TO_CHANGE`),
plus ``train.max_iters`` upward (a run can be extended, not shortened: a shorter schedule
would stop at once, before any validation). Anything else — the architecture, the data, the
split, the learning rate, the method and its settings — would silently mix two runs, so it
is an error that names every differing key with both values.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmd.config import DEFAULTS, TASK_DEFAULTS, flatten_config
from ssmd.engine.checkpoint import CheckpointError, load_checkpoint

__all__ = ["SAFE_TO_CHANGE", "config_differences", "resume_trainer"]

SAFE_TO_CHANGE = (
    "output_dir",
    "train.progress",
    "train.log_every",
    "train.tensorboard",
    "train.threads",
    "train.checkpoint_every",
    "data.cache_dir",
    "data.cache_images",
)
"""Dotted keys that may differ between a checkpoint's config and the resuming one: where
outputs and caches go, what is printed, how often ``last.pt`` is written. ``train.eval_every``
is not among them: it decides which steps can become ``best.pt``."""

_UNSET = "<unset>"


def _normal(value: Any) -> Any:
    """Comparable form: tuples as lists, numbers (and numeric strings) as floats, bools kept."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def config_differences(
    stored: dict[str, Any], current: dict[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, stored value, current value)`` for every key that differs.

    A key missing from ``stored`` (a checkpoint written before the key existed) counts as
    its default; a ``method.*`` key missing on one side counts as ``<unset>``.
    """
    task = current.get("task", "detection")
    defaults = flatten_config(TASK_DEFAULTS.get(task, DEFAULTS))
    old, new = flatten_config(stored), flatten_config(current)
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        if key not in new and not key.startswith("method."):
            continue  # a key this version no longer has cannot be set
        fallback = _UNSET if key.startswith("method.") else defaults.get(key, _UNSET)
        a, b = old.get(key, fallback), new.get(key, _UNSET)
        if _normal(a) != _normal(b):
            out.append((key, a, b))
    return out


def _check_config(stored: Any, current: dict[str, Any], path: Path) -> None:
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: field 'config' missing: not an ssmd training checkpoint")
    problems: list[str] = []
    for key, old, new in config_differences(stored, current):
        if key in SAFE_TO_CHANGE:
            continue
        if key == "train.max_iters":
            try:
                if int(new) >= int(old):
                    continue
            except (TypeError, ValueError):
                pass
            problems.append(
                f"train.max_iters = {old!r} in the checkpoint, {new!r} now "
                "(a run can be extended, not shortened)"
            )
            continue
        problems.append(f"{key} = {old!r} in the checkpoint, {new!r} now")
    if problems:
        listed = "; ".join(problems)
        raise CheckpointError(
            f"{path}: this checkpoint was trained with another config ({listed}). Resuming "
            "would mix two runs: resume with the checkpoint's values (its run's config.yaml), "
            "or start a new run in another output_dir. Safe to change on resume: "
            f"train.max_iters (upward), {', '.join(SAFE_TO_CHANGE)}"
        )


def _load_error_detail(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line if len(line) <= 300 else line[:297] + "..."
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def resume_trainer(
    trainer: Any,
    path: str | Path,
    config: dict[str, Any],
    log: Callable[[str], None] | None = None,
) -> None:
    """Check ``path`` against ``config``, then ``trainer.resume(path)``.

    When the run now writes to another ``output_dir`` than the checkpoint's folder, the
    checkpoint's ``best.pt`` (if any) is copied there first: the resumed validation history
    says which step is best, and the run's final test loads that file.

    Args:
        trainer: the :class:`~ssmd.engine.trainer.Trainer` built from ``config``.
        path: the ``last.pt`` to continue from.
        config: the resolved config of the resuming run.
        log: where to say that ``best.pt`` was copied (default: nowhere).

    Raises:
        CheckpointError: not a training checkpoint, a config that differs in a key outside
            :data:`SAFE_TO_CHANGE` (or ``train.max_iters`` downward), or a state that does
            not fit the model, optimiser or streams built from ``config``; each names the file.
    """
    p = Path(path)
    state = load_checkpoint(p)
    if state.get("kind") != "ssmd-train":
        hint = " (best.pt holds weights only: resume from last.pt)" if state.get("kind") else ""
        raise CheckpointError(
            f"{p}: field 'kind' = {state.get('kind')!r}: not a resumable training checkpoint{hint}"
        )
    _check_config(state.get("config"), copy.deepcopy(config), p)
    del state
    out = Path(config["output_dir"])
    best = p.parent / "best.pt"
    if best.is_file() and not (out / "best.pt").exists() and p.parent.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(best, out / "best.pt")
        if log is not None:
            log(f"copied {best} to {out / 'best.pt'} (the resumed run's best model so far)")
    try:
        trainer.resume(p)
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{p}: cannot resume: the checkpoint's state does not fit the model, optimiser or "
            f"data built from the current config ({_load_error_detail(exc)})"
        ) from exc
