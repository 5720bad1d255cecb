"""Writing results so that nothing is ever half-written: whole files by rename, rows by one append.

A write that fails (a full disk, a read-only folder) is one line naming the file and what to do,
and leaves the file as it was: no temporary file behind, no half row appended.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from autotune.errors import UserError


def _problem(path: Path, exc: OSError) -> UserError:
    if exc.errno == errno.ENOSPC:
        what = "the disk is full; free some space (or pass --results on another disk) and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "it is not writable; fix its permissions or pass --results DIR"
    else:
        what = "fix that and run again"
    return UserError(f"{path} cannot be written ({exc.strerror or exc}); {what}")


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole: a temporary file beside it, synced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _problem(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def append_whole(path: Path, text: str) -> None:
    """Append ``text`` (whole lines) to ``path`` in one write, synced; on failure cut the file
    back to where it was, so no part of a row stays."""
    size = path.stat().st_size
    try:
        with open(path, "a", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise _problem(path, exc) from None
