"""Cell claims: how workers that share an experiment's ``output_dir`` divide its cells.

Any number of processes, on one or several machines sharing ``output_dir``, may run the same
experiment: a cell is claimed by creating ``<output_dir>/locks/<cell>.lock`` with
``O_CREAT | O_EXCL`` (atomic, also on NFS v3+), refreshed every minute while the cell runs
(:func:`held`). A lock is stale when its process is gone (same host) or it was not refreshed
for ``stale_after`` seconds (another host); a stale lock is broken under a second exclusive
``.break`` lock, so two workers cannot both take it over (:func:`claim`). Files that other
workers read (``result.json``, the report) are written whole (:func:`write_atomic`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["HEARTBEAT_SECONDS", "claim", "held", "is_stale", "lock_owner", "write_atomic"]

HEARTBEAT_SECONDS = 60.0


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and ``os.replace``, so a
    reader (another worker) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(lock: Path) -> dict[str, Any]:
    """What ``lock`` says about its owner (``host``, ``pid``, ``started``); ``{}`` if unreadable."""
    try:
        return dict(json.loads(lock.read_text() or "{}"))
    except (OSError, ValueError):
        return {}


def is_stale(lock: Path, stale_after: float) -> bool:
    """Whether ``lock``'s owner is gone (same host, dead pid) or silent for ``stale_after`` s."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    owner = lock_owner(lock)
    same_host = owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
    if same_host and not _pid_alive(owner["pid"]):
        return True
    return age > stale_after


def _create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}, fh)
    return True


def claim(lock: Path, stale_after: float = 1800.0) -> bool:
    """Create ``lock`` exclusively; break it first if it is stale. True if this process owns it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    if _create(lock):
        return True
    if not is_stale(lock, stale_after):
        return False
    breaker = lock.with_name(lock.name + ".break")
    if breaker.exists() and time.time() - breaker.stat().st_mtime > 60:
        breaker.unlink(missing_ok=True)  # a breaker that died while breaking
    if not _create(breaker):
        return False
    try:
        if is_stale(lock, stale_after):  # re-check under the breaker lock
            lock.unlink(missing_ok=True)
        return _create(lock)
    finally:
        breaker.unlink(missing_ok=True)


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """Refresh ``lock``'s mtime every minute while the body runs; remove it afterwards."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(lock)
            except OSError:
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        owner = lock_owner(lock)
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            lock.unlink(missing_ok=True)
