"""One run at a time per results folder and policy; a lock left by a killed run is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from autotune.errors import UserError
from autotune.run.lock import lock_path, run_lock
from tests.cli import ROOT

HOLD = """
import sys, time
from pathlib import Path
from autotune.run.lock import run_lock
with run_lock(Path(sys.argv[1]), "act"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(results, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(results), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_told_who_holds_the_lock(tmp_path) -> None:
    proc = holder(tmp_path, 30)
    try:
        expected = rf"autotune run {proc.pid} \(started .*\) is tuning act into"
        with pytest.raises(UserError, match=expected), run_lock(tmp_path, "act"):
            pass
        with run_lock(tmp_path, "smolvla"):  # another policy is another lock
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_of_a_killed_run_is_taken_over(tmp_path) -> None:
    proc = holder(tmp_path, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert str(proc.pid) in lock_path(tmp_path, "act").read_text()  # it never cleaned up
    with run_lock(tmp_path, "act"):
        assert f'"pid": {os.getpid()}' in lock_path(tmp_path, "act").read_text()


def test_with_wait_the_second_run_waits_for_the_first(tmp_path) -> None:
    proc = holder(tmp_path, 1.5)
    started = time.perf_counter()
    acquired = threading.Event()
    with run_lock(tmp_path, "act", wait=True):
        acquired.set()
        waited = time.perf_counter() - started
    proc.wait()
    assert acquired.is_set() and waited > 0.5
