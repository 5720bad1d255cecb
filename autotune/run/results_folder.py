"""The results folder, checked before a run writes to it: every folder the run writes into can be
written and its disk has room, and the worker study there (or the shared ``--storage``) opens.

Each refusal is one line naming the folder and what to do; nothing is written before it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.errors import UserError
from autotune.units import format_bytes

if TYPE_CHECKING:
    from autotune.run.config import RunConfig

# Every folder a run writes into, checked before the first probe.
RESULT_FOLDERS = (".", "profiles", "profiles/history", "studies", "plots", "datasets")
MIN_FREE_BYTES = 256 * 1024**2  # for the synthetic dataset, the studies, plots and rows


def check_results_unwritten(results: Path, policy: str, storage: str | None) -> None:
    """What :func:`ensure_writable` and :func:`check_study_storage` would refuse and can be told
    without writing anything, checked before torch starts (seconds sooner): a file where the results
    folder (or one above it) should be, and a worker study there that is not a database at all."""
    _refuse_blocked(results, results)
    studies = results / "studies"
    _refuse_blocked(results, studies)
    study = studies / f"{policy}.db"
    if storage is None and study.is_file() and not _sqlite_or_empty(study):
        from autotune.tuning.study_storage import open_storage

        open_storage(study)  # not a database at all: the one line it gives under the run's lock, now


def _sqlite_or_empty(path: Path) -> bool:
    """Whether ``path`` starts as an SQLite database does (or is empty, which SQLite opens as a new
    one): such a file is opened under the run's lock, where another run may be writing to it."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return True  # unreadable: said under the lock, with the rest of the folder's checks
    return not head or head == b"SQLite format 3\x00"


def _refuse_blocked(results: Path, folder: Path) -> None:
    """One line if a file stands where ``folder`` (in ``results``), or a folder above it, should be."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None and folder != results:
        raise UserError(
            f"folder {folder} cannot be written: {'it' if blocker == folder else blocker} is a file, "
            "not a folder; move it aside or pass --results DIR"
        )
    if blocker is not None:
        raise UserError(
            f"results folder {results} cannot be written: {'it' if blocker == results else blocker} is a "
            "file, not a folder; pass --results DIR"
        )


def ensure_writable(results: Path, synthetic: bool = True) -> None:
    """Fail early, with one line, if the results folder (or one it writes into) cannot be
    written, or its disk is nearly full. A run on the user's own data creates no ``datasets``
    folder up front (only an input-bound diagnosis writes there, below the checked results folder)."""
    for name in RESULT_FOLDERS:
        folder = results / name
        if name == "datasets" and not synthetic and not folder.exists():
            continue
        _refuse_blocked(results, folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
        except OSError as exc:
            reason = exc.strerror or str(exc)
            where = "results folder" if name == "." else "folder"
            raise UserError(f"{where} {folder} cannot be written ({reason}); pass --results DIR") from exc
    free = shutil.disk_usage(results).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"results folder {results} has only {format_bytes(free)} free (a run needs "
            f"{format_bytes(MIN_FREE_BYTES)}); free some space or pass --results on another disk"
        )


def check_study_storage(cfg: RunConfig) -> None:
    """Open the worker studies' storage (``studies/<policy>.db``, or the shared ``--storage``) once,
    before the first probe: a file there that is not an Optuna storage is one line now, not after the
    batch search has written its rows. Opening creates Optuna's tables in a new one, nothing else."""
    from autotune.tuning.study_storage import open_storage

    open_storage(cfg.results / "studies" / f"{cfg.policy}.db", cfg.storage)
