"""Probes that measure no memory are forked from the warm server, and are as isolated as a fresh
interpreter: their own process and session, their answer, their death reported as a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune.run import probe_start
from autotune.run.probe_client import run_probe
from probes.protocol import ProbeRequest, ProbeResult
from tests.cli import ROOT

pytestmark = pytest.mark.slow

ENVIRONMENT = ProbeRequest(kind="environment")


def _session_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[3])


def _own_session(pid: int) -> bool:
    """Whether the child ``pid`` leads a session of its own, once it has made it (a forked child
    makes it first thing)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _session_of(pid) == pid:
            return True
        time.sleep(0.002)
    return False


def test_a_forked_probe_answers_as_a_fresh_interpreter_does_in_a_session_of_its_own() -> None:
    own: list[bool] = []
    forked = run_probe(ENVIRONMENT, 120, on_start=lambda pid: own.append(_own_session(pid)))
    server = probe_start._server
    assert server is not None and server.proc.poll() is None  # it went through the server
    assert own == [True]
    code = (
        "import os, json; os.environ['AUTOTUNE_PROBE_START'] = 'spawn'\n"
        "from autotune.run.probe_client import run_probe\n"
        "from probes.protocol import ProbeRequest\n"
        "print(run_probe(ProbeRequest(kind='environment'), 120).to_json())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    fresh = ProbeResult.from_json(out.stdout.strip().splitlines()[-1])
    assert forked.status == fresh.status == "ok", (forked.message, fresh.message)
    assert forked.environment == fresh.environment


def test_a_forked_probe_killed_from_outside_is_an_error_tried_once_more() -> None:
    started: list[int] = []

    def kill_the_first(pid: int) -> None:
        started.append(pid)
        if len(started) == 1:
            os.kill(pid, signal.SIGKILL)

    result = run_probe(ENVIRONMENT, 120, on_start=kill_the_first)
    assert len(started) == 2 and result.status == "ok", result.message

    result = run_probe(ENVIRONMENT, 120, on_start=lambda pid: os.kill(pid, signal.SIGKILL))
    assert result.status == "error" and "SIGKILL (not by the out-of-memory killer)" in result.message


def test_a_stopped_server_is_started_again_by_the_next_probe_and_a_dead_one_is_not_waited_for() -> None:
    assert run_probe(ENVIRONMENT, 120).status == "ok"
    first = probe_start._server
    assert first is not None
    probe_start.stop_server()
    assert first.proc.poll() is not None  # the server left, torch with it
    assert run_probe(ENVIRONMENT, 120).status == "ok"
    second = probe_start._server
    assert second is not None and second is not first
    second.proc.kill()  # a server that dies: the next probe starts as a fresh interpreter
    second.proc.wait()
    assert run_probe(ENVIRONMENT, 120).status == "ok"
    probe_start.stop_server()


def test_a_server_that_does_not_answer_in_time_is_given_up_and_the_probe_starts_fresh(monkeypatch) -> None:
    probe_start.stop_server()
    monkeypatch.setattr(probe_start, "SERVER_ANSWER_S", 0.01)  # its imports alone take longer
    result = run_probe(ENVIRONMENT, 120)
    assert result.status == "ok", result.message  # from a fresh interpreter
    server = probe_start._server
    assert server is not None and not server.alive
    assert server.proc.wait(timeout=10) is not None  # killed, not left running
    probe_start.stop_server()


def test_an_unknown_way_to_start_probes_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOTUNE_PROBE_START": "thread"}
    proc = subprocess.run(
        [sys.executable, "-m", "autotune", "run", "--policy", "act", "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "autotune: error: AUTOTUNE_PROBE_START='thread' is not a way to start probes: use spawn "
        "(each probe a fresh interpreter) or fork (the default)"
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / "results").exists()
