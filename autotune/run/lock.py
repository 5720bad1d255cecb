"""One run at a time per results folder and policy: an exclusive lock, and who holds it.

The lock is ``fcntl.flock`` on ``<results>/.autotune-<policy>.lock``: the kernel releases it when
its process dies, however it dies, so a lock left by a killed run is simply taken over. The file
says who holds it (pid, start time, command), for the one line a second run prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from autotune.errors import UserError
from autotune.redact import hide_secrets

log = logging.getLogger(__name__)


def lock_path(results: Path, policy: str) -> Path:
    return results / f".autotune-{policy}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another autotune run"
    return f"autotune run {info.get('pid', '?')} (started {info.get('started_at', '?')} on {info.get('host', '?')})"


@contextlib.contextmanager
def run_lock(results: Path, policy: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold the lock of ``policy`` in ``results`` for the block; without ``wait``, a held lock is a
    UserError naming its holder."""
    path = lock_path(results, policy)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise UserError(
                    f"{holder} is tuning {policy} into {results}; wait for it (--wait) or use another --results"
                ) from None
            log.info("waiting for %s to finish", holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "started_at": dt.datetime.now().isoformat(timespec="seconds"),
                    "host": socket.gethostname(),
                    "command": hide_secrets(" ".join(sys.argv)),  # a --storage password stays out
                }
            )
        )
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
