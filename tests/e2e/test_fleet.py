"""A fleet on a real PostgreSQL (the distribution's server, a throw-away cluster per module):
machines tuning at once against one --storage lose nothing, `autotune fleet` shows each machine's
answer and the regressions the nightly check flagged, and a storage that cannot be reached or
authenticated is one line before any probe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from autotune import fleet
from tests.cli import ROOT, SMALL_ACT, autotune, set_flags
from tests.e2e.test_cli_errors import assert_one_line_error
from tests.postgres import cluster

pytestmark = pytest.mark.slow

MACHINES = ("lab-a", "lab-b")  # two at once race for the same storage
# One batch probe and no soak (the search's and the soak's own checks are in test_run.py): what the
# machines share is what is checked here.
QUICK = [
    "run", "--policy", "act", "--device", "cpu", "--memory-limit", "1GiB", "--image-size", "32x48",
    "--trials", "1", "--trainer-only", "--throughput-points", "1", "--soak-steps", "0", "--max-batch", "1",
    "--no-estimate", *set_flags(SMALL_ACT),
]  # fmt: skip


@pytest.fixture(scope="module")
def storage() -> Iterator[str]:
    with cluster() as url:
        yield url


@pytest.fixture(scope="module")
def fleet_ran(storage: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    """Two machines tuning at the same moment against the one storage."""
    started = {}
    for name in MACHINES:
        cwd = tmp_path_factory.mktemp(name)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTUNE_MACHINE": name}
        started[name] = (cwd, subprocess.Popen(
            [sys.executable, "-m", "autotune", *QUICK, "--storage", storage], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    done = {}
    for name, (cwd, proc) in started.items():
        _, stderr = proc.communicate(timeout=900)
        done[name] = (cwd, proc.returncode, stderr)
    return done


def test_machines_tuning_at_once_lose_nothing(fleet_ran, storage: str) -> None:
    for name, (_, code, stderr) in fleet_ran.items():
        assert code == 0, f"{name}: {stderr[-3000:]}"
    rows = fleet.runs(storage)
    assert sorted(rows.machine) == sorted(MACHINES) and set(rows.status) == {"ok"}
    for name, (cwd, _, _) in fleet_ran.items():
        local = pd.read_csv(cwd / "results" / "runs.csv").iloc[-1]
        shared = rows[rows.machine == name].iloc[-1]
        assert shared.run_id == local.run_id and shared.batch_size == local.batch_size
        assert '"run_id": "' + local.run_id + '"' in shared.profile  # the profile itself is shared
        # Each machine's worker trials are in the shared study, all of them.
        trials = pd.read_csv(cwd / "results" / "worker_trials.csv")
        study = optuna.load_study(study_name=_study(cwd), storage=storage)
        study_trials = trials[trials.repeat == 0]  # repeats against LeRobot's default stay local
        assert len([t for t in study.trials if t.state.is_finished()]) >= len(study_trials)


def _study(cwd: Path) -> str:
    import json

    return json.loads((cwd / "results" / "profiles" / "act.json").read_text())["study"]["study_name"]


def test_fleet_shows_one_row_per_machine_and_the_regressions_flagged(
    fleet_ran, storage: str, monkeypatch
) -> None:
    proc = autotune("fleet", "--storage", storage, "--csv", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(io.StringIO(proc.stdout))
    assert list(table.columns) == fleet.FLEET_COLUMNS
    assert sorted(table.machine) == sorted(MACHINES) and (table.batch_size >= 1).all()
    assert (table.last_status == "ok").all() and table.last_tuned.notna().all()
    # A nightly check on lab-b flags a regression: the fleet names the machine.
    rows = fleet.runs(storage)
    monkeypatch.setenv("AUTOTUNE_MACHINE", "lab-b")
    checked = {**rows[rows.machine == "lab-b"].iloc[-1].to_dict(), "status": "checked"}
    fleet.record(storage, checked, None, ["regression: samples/s 40 -> 4 (-90%, noise 5%)"])
    text = autotune("fleet", "--storage", storage, cwd=ROOT).stdout
    assert "lab-a" in text
    assert "autotune: lab-b act: regression: samples/s 40 -> 4" in text


@pytest.mark.parametrize("how", ["password", "port", "url"])
def test_a_storage_that_cannot_be_used_is_one_line_before_any_probe(
    storage: str, tmp_path: Path, how: str
) -> None:
    bad = {
        "password": storage.replace(":fleet-secret@", ":wrong@"),
        "port": "postgresql://autotune:x@127.0.0.1:1/postgres",
        "url": "banana",
    }[how]
    proc = autotune(*QUICK, "--storage", bad, cwd=tmp_path)
    words = {
        "password": "password authentication failed",
        "port": "cannot be reached",
        "url": "not a database URL",
    }
    assert_one_line_error(proc, "--storage", words[how])
    assert "wrong" not in proc.stderr and not (tmp_path / "results").exists()
