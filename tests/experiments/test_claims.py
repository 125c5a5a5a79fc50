"""Cell claims: a lock is exclusive, and a stale one (dead process, silent host) is taken over."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ssmd import experiments as ex


def test_claim_is_exclusive_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "cell.lock"
    assert ex.claim(lock) and not ex.claim(lock)  # held by a live process (this one)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 12345}))
    assert ex.is_stale(lock, 1e9)  # same host, process gone
    assert ex.claim(lock) and json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert not ex.claim(lock, stale_after=3600)  # another host, recently refreshed
    old = time.time() - 7200
    os.utime(lock, (old, old))
    assert ex.claim(lock, stale_after=3600)  # silent for 2 h: taken over
