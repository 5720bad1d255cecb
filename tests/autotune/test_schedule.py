"""Nightly, as pasted: the systemd timer and service, the cron line, and the history they build."""

from __future__ import annotations

import pandas as pd
import pytest

from autotune.cli.schedule import schedule
from autotune.errors import UserError
from autotune.nightly.history import lines, plot, runs_of
from autotune.outputs.results import RUN_COLUMNS
from tests.cli import autotune


def test_the_printed_units_run_the_same_command_nightly_with_a_log(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    schedule("act", "02:30", tmp_path / "results", ["--device", "cpu"], install=False)
    out = capsys.readouterr().out
    assert "OnCalendar=*-*-* 02:30:00" in out and "Persistent=true" in out
    assert f"run --policy act --results {tmp_path / 'results'} --device cpu" in out
    assert f">> {tmp_path / 'results' / 'nightly-act.log'} 2>&1" in out
    assert "\n30 2 * * * cd " in out
    assert "exit 4 means a regression" in out


def test_install_writes_the_units_where_systemd_looks(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    schedule("smolvla", "03:00", tmp_path / "results", [], install=True)
    folder = tmp_path / "config" / "systemd" / "user"
    assert sorted(p.name for p in folder.iterdir()) == ["autotune-smolvla.service", "autotune-smolvla.timer"]
    assert "ExecStart=/bin/sh -c " in (folder / "autotune-smolvla.service").read_text()


def test_a_time_that_is_not_one_is_one_line(tmp_path) -> None:
    proc = autotune("schedule", "--policy", "act", "--at", "25:00", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "autotune: error: --at '25:00': use HH:MM on a 24-hour clock, e.g. 03:00"
    )


def test_history_names_what_changed_between_runs_and_draws_them(tmp_path) -> None:
    row = {c: "" for c in RUN_COLUMNS} | {
        "policy": "act",
        "device": "cpu",
        "status": "ok",
        "torch_version": "2.14.1",
    }
    pd.DataFrame(
        [
            row
            | {
                "run_id": "a",
                "timestamp": "2026-11-20T03:00:00+00:00",
                "samples_per_s": 410,
                "max_batch_size": 113,
                "driver_version": "580.65",
            },
            row
            | {
                "run_id": "b",
                "timestamp": "2026-11-21T03:00:00+00:00",
                "samples_per_s": 371,
                "max_batch_size": 113,
                "driver_version": "590.12",
                "status": "checked",
            },
            row | {"run_id": "c", "timestamp": "2026-11-22T03:00:00+00:00", "status": "failed"},
        ]
    ).to_csv(tmp_path / "runs.csv", index=False)
    frame = runs_of(tmp_path, "act")
    text = lines(frame)
    assert len(text) == 2 and text[1].endswith("[driver 580.65 -> 590.12]")
    png = plot(frame, tmp_path / "h.png", "act")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="no finished smolvla runs"):
        runs_of(tmp_path, "smolvla")
