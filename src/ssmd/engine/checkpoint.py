"""Atomic, resumable checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it
can be read without unpickling arbitrary objects: a file that carries a pickled
payload (any class outside torch's safe list) is refused with :class:`CheckpointError`.
Files are written to a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "network_weights",
    "restore_rng_state",
    "save_checkpoint",
]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe or of the wrong kind."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# first bytes of files people hand over instead of a checkpoint
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5?)"),
    (b"%PDF", "a PDF document"),
)


def _is_pickle(head: bytes) -> bool:
    # protocol 2+ pickles (torch's legacy format too) start with PROTO (0x80) and its number
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _as_text(head: bytes) -> str | None:
    """The start of ``head`` as text if it looks like a text file (UTF-8, printable), else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not text or any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    return text


def _describe_foreign(head: bytes) -> str | None:
    """What a file that is neither a torch zip nor a pickle is (``None`` for those two)."""
    if head.startswith(b"PK\x03\x04") or _is_pickle(head):
        return None
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    text = _as_text(head)
    if text is not None:
        first = text.lstrip()[:40].splitlines()[0] if text.strip() else ""
        kind = "a JSON file" if first[:1] in ("{", "[") else "a text file"
        return f"{kind} (it starts with {first!r})"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file (ssmd checkpoints are torch files)"
    return f"unrecognised binary data (first bytes: {head[:8].hex(' ')})"


def _weights_only_detail(exc: BaseException) -> str:
    """The line of torch's ``weights_only`` error that says what it could not read."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "")
    return lines[0] if lines else type(exc).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    The file is identified before torch reads it, so the message says what it actually is:
    missing, a folder (naming any ``best.pt`` / ``last.pt`` inside), empty, a JSON or other
    text file, an image or archive, or unrecognised bytes; a torch zip or pickle that torch
    cannot read is reported as damaged or truncated, and one that holds an object outside
    torch's safe list (which full unpickling would have to execute) as refused, naming the
    object.

    Raises:
        CheckpointError: the file is missing, is not a checkpoint, is damaged, or carries a
            pickled object that ``weights_only`` refuses (it could run code).
    """
    p = Path(path)
    if p.is_dir():
        inside = [n for n in ("best.pt", "last.pt") if (p / n).is_file()]
        hint = f" (it holds {' and '.join(inside)}: pass one of those)" if inside else ""
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file{hint}")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint file not found")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a regular file, not a checkpoint")
    try:
        with p.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot be read: {exc.strerror or exc}") from exc
    if not head:
        raise CheckpointError(
            f"{p}: empty file (0 bytes), not a checkpoint (an interrupted copy or save?)"
        )
    foreign = _describe_foreign(head)
    if foreign is not None:
        raise CheckpointError(f"{p}: {foreign}, not an ssmd checkpoint (best.pt or last.pt)")
    fmt = "pickle file"
    if head.startswith(b"PK\x03\x04"):
        fmt = "torch zip checkpoint"
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"{p}: a damaged or truncated zip file (an interrupted copy or save?): {exc}"
            ) from exc
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise CheckpointError(
                f"{p}: a zip archive that is not a torch checkpoint (it holds {listed or 'nothing'})"
            )
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _weights_only_detail(exc)
        if "Unsupported global" in detail or "not an allowed global" in detail:
            name = re.search(r"GLOBAL (\S+)", detail)
            what = f"an object of type {name.group(1)}" if name else "a pickled object"
            raise CheckpointError(
                f"{p}: refused to load: the file carries {what} that weights_only loading does "
                f"not allow (a pickled payload could run code); ssmd checkpoints hold only "
                f"tensors, numbers, strings, lists and dicts"
            ) from exc
        raise CheckpointError(
            f"{p}: a {fmt} that weights_only loading cannot read (damaged, truncated, or "
            f"written by pickle rather than torch.save): {detail}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = lines[0].split(". ")[0] if lines else type(exc).__name__
        if isinstance(exc, EOFError):
            detail = f"the file ends early ({detail})"
        raise CheckpointError(f"{p}: a damaged or truncated {fmt}: {detail}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: field '<root>' = {type(state).__name__}: expected a dict")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-safe values."""
    np_state: Any = np.random.get_state(legacy=True)
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])


def network_weights(
    state: dict[str, Any], which: str = "student", source: str | Path = "<checkpoint>"
) -> dict[str, Any]:
    """The state dict of one network of a run's checkpoint, whatever the task.

    A model checkpoint (``kind: ssmd-model``, ``best.pt``) holds ``model`` (the student) and,
    for methods with an EMA teacher, ``teacher``; a training checkpoint (``kind: ssmd-train``,
    ``last.pt``) holds the method's state, whose keys start with ``model.`` / ``teacher.``.

    Args:
        state: the loaded checkpoint (:func:`load_checkpoint`).
        which: ``student`` or ``teacher``.
        source: the checkpoint's path, for messages.

    Raises:
        CheckpointError: no ``which`` network in it, or not a run checkpoint.
    """
    if state.get("kind") == "ssmd-model":
        key = "model" if which == "student" else "teacher"
        if key not in state:
            raise CheckpointError(
                f"{source}: field {key!r} missing: this run has no {which} network"
            )
        return dict(state[key])
    if state.get("kind") == "ssmd-train":
        prefix = "model." if which == "student" else "teacher."
        weights = {k[len(prefix) :]: v for k, v in state["method"].items() if k.startswith(prefix)}
        if not weights:
            raise CheckpointError(f"{source}: no {which} weights in field 'method'")
        return weights
    raise CheckpointError(f"{source}: field 'kind' = {state.get('kind')!r}: not an ssmd checkpoint")
