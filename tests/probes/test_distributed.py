"""A probe as a DDP job of two gloo ranks on the CPU, started by torch's own launcher: each rank
holds DDP's gradient buckets on top of what one process needs, and one rank's out of memory ends
the job at once instead of leaving the other waiting in a collective."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune.run.probe_client import child_environment, combine, launcher, run_probe
from probes import distributed
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult
from tests.cli import ROOT, SMALL_ACT

pytestmark = pytest.mark.slow

SPEC = ModelSpec("act", 2, (48, 64), 6, 6, gradient_checkpointing=False, overrides=dict(SMALL_ACT))
MiB = 1024**2


def request(world_size: int, budget: int = 4 * 1024 * MiB) -> ProbeRequest:
    return ProbeRequest(
        kind="batch", model=SPEC, device="cpu", precision="fp32", batch_size=8, memory_limit_bytes=budget,
        warmup_steps=1, measure_steps=3, world_size=world_size,
    )  # fmt: skip


@pytest.fixture(scope="module")
def single() -> ProbeResult:
    """The same probe as one process, which both tests below compare a job with."""
    return run_probe(request(1), 300)


def test_each_rank_holds_the_gradient_buckets_on_top_of_one_process(single: ProbeResult) -> None:
    job = run_probe(request(2), 300)
    assert single.fits and job.fits, (single.message, job.message)
    assert job.world_size == 2 and len(job.rank_peaks_bytes) == 2
    assert job.peak_reserved_bytes == max(job.rank_peaks_bytes)
    assert job.trainable_params == single.trainable_params > 0
    # gradient_as_bucket_view off: the buckets are a second copy of the fp32 gradients, 4 bytes per
    # trainable parameter (43.2 MiB for this ACT; measured: 45.3 MiB more per rank).
    buckets = 4 * single.trainable_params
    for peak in job.rank_peaks_bytes:
        extra = peak - single.peak_reserved_bytes
        assert 0.75 * buckets <= extra <= 1.5 * buckets + 16 * MiB, (extra / MiB, buckets / MiB)
    assert job.samples_per_s == pytest.approx(2 * 8 / job.step_time_s)


def test_a_budget_every_rank_passes_is_the_jobs_out_of_memory(single: ProbeResult) -> None:
    assert single.fits, single.message
    # Room for one process's peak but not for the buckets on top.
    job = run_probe(request(2, budget=single.peak_reserved_bytes + 8 * MiB), 300)
    assert job.status == "oom" and job.message.startswith("rank "), job.message


def test_one_rank_out_of_memory_ends_the_job_without_waiting_on_the_others(tmp_path: Path) -> None:
    req_path, result_path = tmp_path / "request.json", tmp_path / "result.json"
    req = request(2)
    req_path.write_text(req.to_json())
    command = [*launcher(2), "tests.probes.inject", str(req_path), str(result_path), "OutOfMemoryError", "2"]
    command += ["CUDA out of memory. Tried to allocate 2.00 GiB"]
    started = time.perf_counter()
    proc = subprocess.run(
        command, cwd=ROOT, env={**child_environment(), "INJECT_RANK": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    took = time.perf_counter() - started
    assert proc.returncode != 0  # torchrun saw a rank fail
    assert took < distributed.TIMEOUT_S, f"the job waited {took:.0f} s: the healthy rank hung in a collective"
    ranks = [tmp_path / f"result.rank{r}.json" for r in range(2)]
    assert ranks[1].exists(), proc.stderr[-2000:]
    job = combine(req, [ProbeResult.from_json(p.read_text()) if p.exists() else None for p in ranks])
    assert job is not None and job.status == "oom", job
    assert job.message.startswith("rank 1 of 2: ") and "CUDA out of memory" in job.message


def test_the_launcher_is_torchrun_for_several_ranks_and_python_for_one() -> None:
    assert launcher(1) == [sys.executable, "-m"]
    assert launcher(2)[:3] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
    ] and "--nproc-per-node=2" in launcher(2)
