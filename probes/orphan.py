"""A probe child that outlives its tuner takes itself down: its process group and its files.

The tuner kills its probes when it is interrupted or terminated, but not when it is killed
(SIGKILL, or the machine's OOM killer choosing it). Then the child notices, through the kernel
(``PR_SET_PDEATHSIG``: SIGTERM when the parent dies) and through a thread that watches its parent
(should the signal be missed), removes the tuner's temporary folder it was given and kills its
own process group: itself and its DataLoader workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def _dead(pid: int) -> bool:
    """Whether ``pid`` is no more, or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _parent_gone(parent: int, tuner: int) -> bool:
    """Whether the tuner has died: this process was handed to another parent than ``parent`` (its
    own at start: the tuner, torchrun or the fork server), or (when the kernel's parent-death
    signal comes before that, as it can) the tuner is a zombie or no more."""
    return os.getppid() != parent or _dead(tuner) or _dead(parent)


def _take_down(folder: Path, parent: int, tuner: int) -> None:
    if _parent_gone(parent, tuner):  # the tuner is gone: nobody else will remove its folder
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)


def leave_with_parent(folder: Path, launched: bool = False) -> None:
    """When the parent (the tuner) is gone, remove ``folder`` and kill this process group.

    The tuner's pid comes from ``AUTOTUNE_PARENT_PID``: a child whose tuner died while it was still
    starting (before this runs) has already been handed to another parent, and must see that. A
    child forked by the fork server (probes/warm.py) watches both the server, its parent, and the
    tuner. A rank ``launched`` by torchrun watches torchrun, its own parent, instead.
    """
    parent = os.getppid()
    tuner = (0 if launched else int(os.environ.get("AUTOTUNE_PARENT_PID", "0"))) or parent
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: _take_down(folder, parent, tuner))

    def watch() -> None:
        while True:
            if _parent_gone(parent, tuner):
                _take_down(folder, parent, tuner)
            threading.Event().wait(POLL_S)

    if _parent_gone(parent, tuner):
        _take_down(folder, parent, tuner)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
