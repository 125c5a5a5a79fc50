"""Checks on output paths, made before any slow work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ssmd.config import ConfigError

__all__ = ["prepare_output_dir"]


def prepare_output_dir(path: str | Path, key: str = "output_dir") -> Path:
    """Create the folder ``path`` (with parents) and check that files can be written in it.

    Called at the start of a run, before data loading, so that a folder that cannot be
    created (a path under a regular file, a read-only parent) fails in seconds with the key
    and the path, not with an ``OSError`` traceback after the dataset was read.

    Args:
        path: the folder.
        key: the config key (or option) it came from, for messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` (or a parent) is a file, or the folder cannot be created or
            written.
    """
    p = Path(path)
    parent = p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        what = "is a file" if parent == p else f"is under {parent}, which is a file"
        raise ConfigError(f"{key} = {str(p)!r}: {what}, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(p) else ""
        raise ConfigError(f"{key} = {str(p)!r}: cannot create the folder: {reason}{where}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".ssmd-write-check-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{key} = {str(p)!r}: the folder is not writable: {reason}") from exc
    return p
