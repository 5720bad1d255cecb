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
from autotune.tuning.feed_model import data_fraction
from autotune.units import format_bytes
from probes.protocol import ProbeResult

if TYPE_CHECKING:
    from autotune.tuning.study import TrialRecord

log = logging.getLogger(__name__)

# Shared by every file: which run, and under what conditions.
RUN_KEY_COLUMNS = [
    "run_id",
    "timestamp",
    "policy",
    "device",
    "gpu_name",
    "precision",
    "grad_checkpointing",
    "cameras",
    "image_h",
    "image_w",
    "memory_limit_bytes",
]

BATCH_PROBE_COLUMNS = RUN_KEY_COLUMNS + [
    "phase",  # search, throughput, soak or check
    "repeat",  # earlier probes of this variant at this batch size in the run (0: the first)
    "batch_size",
    "status",  # ok, oom, error or timeout
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "alloc_retries",
    "step_time_s",
    "samples_per_s",
    "steps",
    "wall_s",
    "memory_cap_bytes",  # the allocator cap the probe ran under (CUDA: may be less than asked)
    "warmup_peak_reserved_bytes",  # the warm-up's own peak, apart from the measured one
    "warmup_steps",
    "message",
]

WORKER_TRIAL_COLUMNS = RUN_KEY_COLUMNS + [
    "trial",
    "repeat",  # 0: the study's trial; 1, 2, ...: the same setting measured again to decide
    "batch_size",
    "num_workers",
    "prefetch_factor",
    "video_backend",  # the decoder the workers read the videos with: torchcodec or pyav
    "is_lerobot_default",
    "status",
    "data_s",
    "updt_s",
    "samples_per_s",
    "data_fraction",
    "loader_rss_bytes",
    "decode_s_per_sample",
    "drained",
    "steps",
    "wall_s",
    "message",
]

RUN_COLUMNS = RUN_KEY_COLUMNS + [
    "status",  # ok, checked (an up-to-date profile checked again) or failed
    "dataset",
    "max_batch_size",
    "certified",
    "batch_size",
    "grad_accum_steps",
    "lowered_by_soak",
    "num_workers",
    "prefetch_factor",
    "data_s",
    "updt_s",
    "samples_per_s",
    "peak_reserved_bytes",
    "default_samples_per_s",
    "speedup_vs_default",
    "probes",
    "trials",
    "gpu_uuid",
    "driver_version",
    "cuda_driver_version",
    "torch_version",
    "cpu_model",
    "cpu_cores",
    "wall_s",
    "profile",
    "message",
    "lerobot_version",  # the lerobot-train the printed command is made for
]

VERIFY_COLUMNS = RUN_KEY_COLUMNS + [
    "profile_run_id",  # the profile that was verified
    "lerobot_version",
    "status",  # verified, differs or failed
    "batch_size",
    "steps",  # lerobot-train steps timed (the first is set apart)
    "learnable_params",  # as lerobot-train logged them
    "trainable_params",  # as autotune's probes counted them
    "promised_bytes",  # the budget less the headroom
    "peak_bytes",  # lerobot-train's peak: CPU resident-set growth, CUDA allocator reserve after step 1
    "warmup_peak_bytes",  # its peak up to the first optimizer step (cuDNN's algorithm search), apart
    "profile_peak_bytes",
    "workers_pss_bytes",  # lerobot-train's DataLoader workers
    "updt_s",
    "data_s",
    "samples_per_s",
    "profile_updt_s",
    "profile_data_s",
    "profile_samples_per_s",
    "wall_s",
    "message",
]

ALERT_COLUMNS = RUN_KEY_COLUMNS + [
    "kind",  # regression or improvement
    "metric",  # max_batch_size, samples_per_s, data_s or updt_s
    "before",  # the median of the last runs under the same conditions
    "after",
    "change",  # relative
    "noise",  # relative: the spread the change was judged against
    "changed",  # fingerprint fields that changed since the last run
    "message",
]

# autotune rl (autotune/rl/records.py): one row per PPO or RRD probe.
RL_PROBE_COLUMNS = RUN_KEY_COLUMNS + [
    "algo",  # ppo or rrd
    "phase",  # search, throughput or soak
    "searched",  # the size the probe varied: minibatch_size, batch_size or rrd_batch_size
    "status",
    "batch_size",  # PPO: rl_games's batch (num_envs x horizon_length); RRD: BATCH_SIZE
    "minibatch_size",
    "valid",  # the probed size is one the trainer accepts (PPO: it divides the batch)
    "num_envs",
    "horizon_length",
    "mini_epochs",
    "rrd_batch_size",
    "rrd_sample_size",
    "obs_shape",
    "obs_dtype",
    "act_dim",
    "hidden",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "step_time_s",
    "updt_s",
    "samples_per_s",
    "steps",
    "wall_s",
    "memory_cap_bytes",
    "message",
]

FILES: dict[str, list[str]] = {
    "batch_probes.csv": BATCH_PROBE_COLUMNS,
    "worker_trials.csv": WORKER_TRIAL_COLUMNS,
    "runs.csv": RUN_COLUMNS,
    "verify.csv": VERIFY_COLUMNS,
    "alerts.csv": ALERT_COLUMNS,
    "rl_probes.csv": RL_PROBE_COLUMNS,
}


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
