"""``runs.csv`` read back: every row that can be shown, and why the others were skipped.

The alarm (the history of the same conditions) and ``autotune history`` read it through here; the
file is never changed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pandas as pd

from autotune.errors import UserError
from autotune.outputs.results import RUN_COLUMNS

# What history reads of a row: without these it is not a runs.csv autotune wrote.
NEEDED_COLUMNS = ("timestamp", "policy", "status")
NUMERIC_COLUMNS = ("max_batch_size", "batch_size", "num_workers", "samples_per_s")


def _problem(row: dict[str, str]) -> str | None:
    """Why a row of runs.csv cannot be shown (a value no run writes), or None."""
    for column in NUMERIC_COLUMNS:
        value = row.get(column, "")
        try:
            if value != "" and float(value) != float(value):  # nan
                return f"{column} {value!r} is not a number"
        except ValueError:
            return f"{column} {value!r} is not a number"
    try:
        if row["timestamp"]:
            dt.datetime.fromisoformat(row["timestamp"])
    except ValueError:
        return f"timestamp {row['timestamp']!r} is not a time"
    return None


def read_runs(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every row of ``runs.csv`` that can be shown, and why the others were skipped (a row a crash
    cut short, a value no run writes). A file that is not a runs.csv autotune wrote (not UTF-8,
    empty, other columns) is a UserError in one line; the file is never changed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror or exc}); fix its permissions") from None
    advice = "move it aside (the next autotune run starts a new one)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not a CSV autotune wrote (bytes that are not UTF-8 at offset {exc.start}); {advice}"
        ) from None
    if not text.strip():
        raise UserError(f"{path} is empty ({len(data)} bytes, no header); {advice}")
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UserError(f"{path} is not a CSV autotune wrote ({exc}); {advice}") from None
    header = table[0] if table else []
    foreign = [c for c in header if c not in RUN_COLUMNS]
    if foreign or not all(c in header for c in NEEDED_COLUMNS) or len(set(header)) != len(header):
        what = (
            f"columns autotune does not write ({', '.join(foreign[:3])})"
            if foreign
            else "not the columns of runs.csv"
        )
        raise UserError(f"{path} has {what}; {advice}")
    rows, skipped = [], []
    torn_last = not text.endswith("\n")
    body = [(n, r) for n, r in enumerate(table[1:], start=2) if r]
    for i, (line, fields) in enumerate(body):
        if len(fields) != len(header) or (torn_last and i == len(body) - 1):
            skipped.append(f"line {line} was cut short (a crash mid-write)")
            continue
        row = dict(zip(header, fields, strict=True))
        if (why := _problem(row)) is not None:
            skipped.append(f"line {line}: {why}")
            continue
        rows.append(row)
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    for column in RUN_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame, skipped
