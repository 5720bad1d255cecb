"""Stopping the tuner from outside: SIGTERM is handled like Ctrl-C, and after SIGKILL the probe
child takes itself, its workers and its files down. Nothing keeps running, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from probes.memory import children_of
from tests.cli import ROOT, SMALL_ACT, set_flags
from tests.e2e.shared import sharing

pytestmark = pytest.mark.slow

RUN = [
    "run", "--policy", "act", "--device", "cpu", "--memory-limit", "1GiB", "--image-size", "48x64",
    "--trials", "1", "--trainer-only", "--no-estimate", *set_flags(SMALL_ACT),
]  # fmt: skip


def start(cwd: Path, datasets: Path) -> subprocess.Popen:
    sharing(datasets, cwd)  # the synthetic dataset is written once, by whichever run comes first
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd / "tmp")}
    (cwd / "tmp").mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", *RUN], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_probe(tuner: subprocess.Popen, timeout_s: float = 240) -> list[int]:
    """The tuner's descendants once a batch probe child is training."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in children_of(tuner.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                request = (
                    json.loads(Path(cmdline.split()[3]).read_text()) if "probes.child" in cmdline else {}
                )
            except (OSError, IndexError, ValueError):
                continue
            if request.get("kind") == "batch":
                time.sleep(1.0)  # let it start training
                return children_of(tuner.pid)
        time.sleep(0.2)
    raise AssertionError("no probe child started")


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
        except OSError:
            return False

    return [p for p in pids if running(p)]


def test_sigterm_stops_the_run_like_ctrl_c(tmp_path: Path, datasets: Path) -> None:
    tuner = start(tmp_path, datasets)
    descendants = wait_for_probe(tuner)
    tuner.send_signal(signal.SIGTERM)
    out, err = tuner.communicate(timeout=60)
    assert tuner.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "autotune: terminated; earlier results are intact"
    assert "Traceback" not in err
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert runs.status.tolist() == ["failed"]
    time.sleep(1.0)
    assert not alive(descendants)
    assert not list((tmp_path / "tmp").glob("autotune-probe-*"))


def test_after_sigkill_the_probe_child_takes_itself_and_its_files_down(
    tmp_path: Path, datasets: Path
) -> None:
    tuner = start(tmp_path, datasets)
    descendants = wait_for_probe(tuner)
    tuner.send_signal(signal.SIGKILL)
    tuner.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(descendants)
    assert not list((tmp_path / "tmp").glob("autotune-probe-*"))


def test_a_later_run_removes_probe_folders_whose_tuner_is_gone(tmp_path: Path, monkeypatch) -> None:
    from autotune.run import probe_client

    monkeypatch.setattr(probe_client.tempfile, "gettempdir", lambda: str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphaned = tmp_path / f"{probe_client.FOLDER_PREFIX}{gone.pid}-x1y2"
    ours = tmp_path / f"{probe_client.FOLDER_PREFIX}{os.getpid()}-a3b4"
    for folder in (orphaned, ours):
        (folder / "request.json").parent.mkdir()
        (folder / "request.json").write_text("{}")
    probe_client.remove_orphaned_folders()
    assert not orphaned.exists()
    assert (ours / "request.json").exists()  # a tuner still running keeps its folder
