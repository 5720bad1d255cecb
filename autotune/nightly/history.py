"""``autotune history``: a policy's runs over time, from ``runs.csv``, and a plot of them.

One line per tune or check, oldest first, with the fingerprint fields that changed since the run
before; the PNG draws samples/s and the largest batch against the date, a dashed line where the
machine's software or hardware changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.errors import UserError
from autotune.nightly.alarm import FINGERPRINT_NAMES
from autotune.nightly.runs import read_runs
from autotune.outputs.plots import _pyplot

log = logging.getLogger(__name__)


def runs_of(results: Path, policy: str) -> pd.DataFrame:
    """The finished runs (tuned or checked) of ``policy``, oldest first; rows that cannot be shown
    are skipped, and said so on stderr."""
    path = results / "runs.csv"
    if not path.exists():
        raise UserError(f"no runs in {path}; run: autotune run --policy {policy}")
    frame, skipped = read_runs(path)
    if skipped:
        log.warning(
            "skipped %d row(s) of %s that cannot be shown: %s",
            len(skipped),
            path,
            "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else ""),
        )
    frame = frame[(frame.policy == policy) & frame.status.isin(["ok", "checked"])]
    if frame.empty:
        raise UserError(f"no finished {policy} runs in {path}; run: autotune run --policy {policy}")
    return frame.sort_values("timestamp").reset_index(drop=True)


def changes(previous: dict[str, Any] | None, row: dict[str, Any]) -> str:
    if previous is None:
        return ""
    return ", ".join(
        f"{name} {previous.get(column)} -> {row.get(column)}"
        for column, name in FINGERPRINT_NAMES.items()
        if str(previous.get(column, "")) != str(row.get(column, ""))
        and previous.get(column) not in (None, "")
    )


def lines(frame: pd.DataFrame) -> list[str]:
    out = []
    previous = None
    for row in frame.to_dict("records"):
        changed = changes(previous, row)
        samples = f"{float(row['samples_per_s']):.2f}" if row.get("samples_per_s") else "-"
        out.append(
            f"{row['timestamp'][:16].replace('T', ' ')}  {row['status']:<7}  max batch {row['max_batch_size'] or '-':>5}  "
            f"batch {row['batch_size'] or '-':>5}  workers {row['num_workers'] or '-':>2}  samples/s {samples:>8}  "
            f"{row['device']} torch {row['torch_version']} LeRobot {row.get('lerobot_version') or '?'}"
            + (f"  [{changed}]" if changed else "")
        )
        previous = row
    return out


def plot(frame: pd.DataFrame, path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, speed_ax = plt.subplots(figsize=(8, 4.2))
    when = pd.to_datetime(frame.timestamp, errors="coerce", utc=True)
    samples = pd.to_numeric(frame.samples_per_s, errors="coerce")
    largest = pd.to_numeric(frame.max_batch_size, errors="coerce")
    speed_ax.plot(when, samples, marker="o", color="tab:purple", label="samples/s")
    speed_ax.set_ylabel("samples/s")
    batch_ax = speed_ax.twinx()
    batch_ax.plot(when, largest, marker="s", linestyle=":", color="tab:blue", label="max batch")
    batch_ax.set_ylabel("max batch")
    previous = None
    for moment, row in zip(when, frame.to_dict("records"), strict=True):
        if changes(previous, row):
            speed_ax.axvline(moment, color="tab:red", linestyle="--", linewidth=1)
            speed_ax.annotate(changes(previous, row), (moment, 0), xycoords=("data", "axes fraction"),
                              rotation=90, fontsize=7, color="tab:red", xytext=(3, 4), textcoords="offset points")  # fmt: skip
        previous = row
    handles = speed_ax.get_legend_handles_labels()
    more = batch_ax.get_legend_handles_labels()
    speed_ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    speed_ax.set_title(title, fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, dpi=110, format="png")
            os.replace(tmp, path)  # whole, or the earlier plot left as it was
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    except OSError as exc:
        raise UserError(
            f"the plot {path} cannot be written ({exc.strerror or exc}); the runs above are complete: "
            "fix that folder or pass --results DIR"
        ) from None
    finally:
        plt.close(fig)
    return path


def show_history(results: Path, policy: str) -> int:
    frame = runs_of(results, policy)
    for line in lines(frame):
        print(line, flush=True)
    png = plot(frame, results / "plots" / f"{policy}-history.png", f"{policy}: runs over time")
    print(f"plot: {png}")
    return 0
