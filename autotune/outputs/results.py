"""Append-only CSV results: ``batch_probes.csv``, ``worker_trials.csv`` and ``runs.csv``.

Rows are appended, never rewritten, and every row of one run shares its ``run_id``. Each append is
a single write of whole lines followed by fsync, so an interrupted run never leaves half a row,
and a new file appears with its header atomically.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import UserError
from autotune.files import append_whole, write_atomic
from autotune.outputs.columns import (  # noqa: F401  (re-exported: the files' columns)
    ALERT_COLUMNS,
    BATCH_PROBE_COLUMNS,
    FILES,
    RL_PROBE_COLUMNS,
    RUN_COLUMNS,
    RUN_KEY_COLUMNS,
    TRAIN_RUN_COLUMNS,
    VERIFY_COLUMNS,
    WORKER_TRIAL_COLUMNS,
)
from autotune.tuning.feed_model import data_fraction
from autotune.units import format_bytes
from probes.protocol import ProbeResult

if TYPE_CHECKING:
    from autotune.outputs.profile import Profile
    from autotune.tuning.study import TrialRecord

log = logging.getLogger(__name__)


def _render(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _is_subsequence(old: Sequence[str], new: Sequence[str]) -> bool:
    remaining = iter(new)
    return all(any(column == candidate for candidate in remaining) for column in old)


def repair_torn_row(path: Path) -> None:
    """A last row a crash cut short (no line end) is moved aside to ``<file>.torn-<time>`` and the
    file cut back to its last whole row; never glued to."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    aside = path.with_name(f"{path.name}.torn-{dt.datetime.now():%Y%m%d-%H%M%S}")
    aside.write_bytes(data[keep:])
    write_atomic(path, data[:keep].decode())
    log.warning("%s ended in a torn row (a crash mid-write); moved it aside to %s", path, aside)


def check_header(path: Path, columns: Sequence[str]) -> None:
    """Make the file at ``path`` take rows of ``columns``.

    A file written by an older autotune, whose columns are these less some added since (in the
    same order), is upgraded: rewritten atomically with the new header, every old row kept and the
    new columns left empty. A file with other columns is refused, untouched. A torn last row is
    moved aside first.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not a CSV autotune wrote (bytes that are not UTF-8 at offset {exc.start}); "
            "move it aside and run again"
        ) from None
    repair_torn_row(path)
    with open(path, newline="") as f:
        existing = next(csv.reader(f), [])
    if existing == list(columns):
        return
    if not existing or not _is_subsequence(existing, columns):
        raise UserError(
            f"{path} has columns from another autotune version; move it aside and run again "
            "(nothing was appended)"
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    replace_csv(path, columns, rows)


def append_rows(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append ``rows`` to the CSV at ``path``, creating it with its header if needed."""
    rows = list(rows)
    if not rows:
        return
    if path.exists() and path.stat().st_size > 0:
        check_header(path, columns)
        append_whole(path, _render(columns, rows, header=False))
        return
    write_atomic(path, _render(columns, rows, header=True))


def replace_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a whole CSV at ``path`` atomically: a temporary file beside it, then a rename."""
    write_atomic(path, _render(columns, rows, header=True))


class ResultsWriter:
    """Writes one run's rows into the results folder's CSV files."""

    def __init__(self, folder: Path, key: Mapping[str, Any]) -> None:
        self.folder = folder
        self.key = dict(key)
        for name, columns in FILES.items():
            check_header(folder / name, columns)

    def add(self, name: str, row: Mapping[str, Any]) -> None:
        """Append ``row`` (the run key and a timestamp added) to the CSV file ``name``."""
        append_rows(self.folder / name, FILES[name], [stamped({**self.key, **row})])


def profile_run_key(profile: Profile, run_id: str) -> dict[str, Any]:
    """The run key of a row about ``profile`` (verify, train): its policy, device and conditions."""
    cond = profile.conditions
    return {
        "run_id": run_id,
        "timestamp": "",
        "policy": profile.policy,
        "device": cond.device,
        "gpu_name": profile.fingerprint.get("gpu_name", ""),
        "precision": profile.precision,
        "grad_checkpointing": profile.grad_checkpointing,
        "cameras": cond.cameras,
        "image_h": cond.image_size[0],
        "image_w": cond.image_size[1],
        "memory_limit_bytes": cond.memory_limit_bytes,
    }


def stamped(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with the ``timestamp`` column set to now (UTC)."""
    return {**row, "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def describe_probe(r: ProbeResult, *, step_digits: int = 3, say_reserved: bool = True) -> str:
    """A probe's log line: ``fits: peak 1.2 GiB reserved, 0.412 s/step, 58.3 samples/s (9 s)``, or
    its status and message. ``autotune rl`` prints four digits of its short steps and no "reserved"."""
    if r.status == "ok":
        return (
            f"fits: peak {format_bytes(r.peak_reserved_bytes)}{' reserved' if say_reserved else ''}, "
            f"{r.step_time_s:.{step_digits}f} s/step, {r.samples_per_s:.1f} samples/s ({r.wall_s:.0f} s)"
        )
    return f"{r.status}: {r.message} ({r.wall_s:.0f} s)"


def probe_row(r: ProbeResult, phase: str, repeat: int = 0) -> dict[str, Any]:
    """A ``batch_probes.csv`` row for one batch probe (without the run key)."""
    return {
        "phase": phase,
        "repeat": repeat,
        "batch_size": r.batch_size,
        "status": r.status,
        "peak_allocated_bytes": r.peak_allocated_bytes,
        "peak_reserved_bytes": r.peak_reserved_bytes,
        "alloc_retries": r.alloc_retries,
        "step_time_s": round(r.step_time_s, 6),
        "samples_per_s": round(r.samples_per_s, 4),
        "steps": r.steps,
        "wall_s": round(r.wall_s, 3),
        "memory_cap_bytes": r.memory_cap_bytes,
        "warmup_peak_reserved_bytes": r.warmup_peak_reserved_bytes,
        "warmup_steps": r.warmup_steps,
        "message": r.message,
    }


def trial_row(t: TrialRecord) -> dict[str, Any]:
    """A ``worker_trials.csv`` row for one worker trial (without the run key)."""
    r = t.result
    fraction = data_fraction(r.data_s, r.updt_s)
    return {
        "trial": t.number,
        "repeat": t.repeat,
        "batch_size": r.batch_size,
        "num_workers": t.num_workers,
        "prefetch_factor": t.prefetch_factor,
        "is_lerobot_default": t.is_lerobot_default,
        "status": r.status,
        "data_s": round(r.data_s, 6),
        "updt_s": round(r.updt_s, 6),
        "samples_per_s": round(r.samples_per_s, 4),
        "data_fraction": round(fraction, 4) if fraction is not None else None,
        "loader_rss_bytes": r.loader_rss_bytes,
        "decode_s_per_sample": round(r.decode_s_per_sample, 6),
        "drained": r.drained,
        "steps": r.steps,
        "wall_s": round(r.wall_s, 3),
        "message": r.message,
    }
