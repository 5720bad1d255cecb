"""A probe that runs out of memory, crashes or hangs never takes the tuner down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autotune.run.probe_client import run_probe
from probes.memory import children_of
from probes.protocol import ModelSpec, ProbeRequest
from tests.cli import SMALL_ACT

pytestmark = pytest.mark.slow

MiB = 1024**2


def request(batch_size: int, limit_bytes: int, **overrides: object) -> ProbeRequest:
    return ProbeRequest(
        kind="batch",
        model=ModelSpec("act", 2, (48, 64), 6, 6, True, {**SMALL_ACT, **overrides}),
        device="cpu",
        precision="fp32",
        batch_size=batch_size,
        memory_limit_bytes=limit_bytes,
    )


def test_a_fitting_probe_reports_memory_and_three_timed_steps() -> None:
    result = run_probe(request(4, 2048 * MiB), timeout_s=300)
    assert result.status == "ok", result.message
    assert result.steps == 3 and len(result.step_times_s) == 3
    assert 50 * MiB < result.peak_reserved_bytes < 2048 * MiB
    assert result.samples_per_s > 0 and result.step_time_s > 0


def test_a_probe_over_its_cpu_budget_is_out_of_memory() -> None:
    result = run_probe(request(4, 64 * MiB), timeout_s=300)
    assert result.status == "oom"
    assert result.peak_reserved_bytes > 64 * MiB
    assert "budget" in result.message


def test_a_probe_that_fails_reports_the_childs_error() -> None:
    result = run_probe(request(2, 2048 * MiB, dim_model=30), timeout_s=300)
    assert result.status == "error"
    assert "dim_model=30" in result.message


def test_a_hung_probe_is_killed_at_its_timeout_with_its_whole_group() -> None:
    started = time.perf_counter()
    pids: list[int] = []
    result = run_probe(request(8, 2048 * MiB), timeout_s=1.5, on_start=pids.append)
    assert result.status == "timeout"
    assert time.perf_counter() - started < 30
    assert "killed after" in result.message
    (pid,) = pids
    assert not Path(f"/proc/{pid}").exists()
    assert not [p for p in children_of(1) if _group_of(p) == pid]


def _group_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[2])


def test_a_probe_killed_from_outside_is_an_error_tried_once_more_never_out_of_memory() -> None:
    import os
    import signal

    started: list[int] = []

    def kill_the_first(pid: int) -> None:
        started.append(pid)
        if len(started) == 1:
            os.kill(pid, signal.SIGKILL)  # not the kernel's OOM killer: somebody else

    result = run_probe(request(2, 2048 * MiB), timeout_s=300, on_start=kill_the_first)
    assert len(started) == 2 and result.status == "ok", result.message  # the fresh child measured

    def kill_every(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    result = run_probe(request(2, 2048 * MiB), timeout_s=300, on_start=kill_every)
    assert result.status == "error"
    assert "SIGKILL (not by the out-of-memory killer)" in result.message
