"""Several GPUs (--gpus N), the pure parts: one result from a DDP job's ranks, the launch command
each LeRobot version takes, and the checks before the first probe."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autotune.errors import UserError
from autotune.run import context
from autotune.run.config import RunConfig
from autotune.run.probe_client import combine
from autotune.trainer.command import command
from autotune.trainer.versions import Trainer
from probes.protocol import GpuFacts, ProbeRequest, ProbeResult
from tests.autotune.test_lerobot import setting


def _ok(peak: int, step: float, data: float = 0.0) -> ProbeResult:
    return ProbeResult("ok", 8, peak_reserved_bytes=peak, step_time_s=step, updt_s=step, data_s=data,
                       trainable_params=10, loader_rss_bytes=100)  # fmt: skip


def test_a_job_fits_when_every_rank_fits_at_the_largest_peak_and_the_slowest_step() -> None:
    job = combine(ProbeRequest("batch", batch_size=8, world_size=2), [_ok(300, 0.5), _ok(320, 0.4)])
    assert job is not None and job.fits and job.world_size == 2
    assert job.peak_reserved_bytes == 320 and job.rank_peaks_bytes == [300, 320]
    assert job.step_time_s == 0.5 and job.samples_per_s == pytest.approx(2 * 8 / 0.5)
    workers = combine(
        ProbeRequest("workers", batch_size=8, world_size=2), [_ok(1, 0.5, 0.1), _ok(1, 0.4, 0.3)]
    )
    assert workers.samples_per_s == pytest.approx(16 / (0.3 + 0.5)) and workers.loader_rss_bytes == 200


def test_one_rank_out_of_memory_is_the_jobs_and_says_which() -> None:
    oom = ProbeResult("oom", 8, message="CUDA out of memory")
    job = combine(
        ProbeRequest("batch", batch_size=8, world_size=2),
        [ProbeResult("error", 8, message="gloo timeout"), oom],
    )
    assert job.status == "oom" and job.message == "rank 1 of 2: CUDA out of memory"
    assert combine(ProbeRequest("batch", batch_size=8, world_size=2), [None, None]) is None
    missing = combine(ProbeRequest("batch", batch_size=8, world_size=2), [_ok(1, 1.0), None])
    assert missing.status == "error" and "rank(s) 1 of 2 gave no answer" in missing.message


@pytest.mark.parametrize(
    ("version", "start"),
    [
        # accelerate launch overrides ACCELERATE_MIXED_PRECISION with its own flag (default no).
        (
            "0.6.1",
            "accelerate launch --mixed_precision=bf16 --num_processes=4 $(which lerobot-train) --dataset.repo_id=",
        ),
        ("0.6.2.dev0", "torchrun --nproc-per-node=4 $(which lerobot-train) --dataset.repo_id="),
    ],
)
def test_several_gpus_are_launched_the_way_the_version_launches_them(version: str, start: str) -> None:
    out = command(Trainer(version, "flag"), setting(device="cuda:2", gpus=4))
    assert out.text.startswith("CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=2,3,4,5 " + start), out.text
    assert "--batch_size=96" in out.text and out.reproduces  # the batch is per GPU
    assert "ACCELERATE_MIXED_PRECISION" not in out.env


def test_lerobot_0_3_trains_on_one_gpu_and_the_command_says_so() -> None:
    out = command(Trainer("0.3.3", "flag"), setting(gpus=2, dataset_format="v2.1", precision="fp16"))
    assert not out.launcher and any("trains on one GPU only" in c for c in out.caveats)


def _environment(gpus: int) -> SimpleNamespace:
    return SimpleNamespace(devices=[GpuFacts(i, "H100", (9, 0), 80 * 1024**3) for i in range(gpus)])


def test_more_gpus_than_visible_is_one_line_before_any_probe(monkeypatch) -> None:
    cfg = RunConfig(policy="act", device="cuda:1", precision="bf16", gpus=4)
    with pytest.raises(UserError, match=r"--gpus 4 from cuda:1: torch sees 4 GPU\(s\).*at most --gpus 3"):
        context.check_ranks(cfg, _environment(4))
    context.check_ranks(RunConfig(policy="act", device="cuda:1", precision="bf16", gpus=3), _environment(4))
    monkeypatch.setattr(context.os, "cpu_count", lambda: 2)
    with pytest.raises(UserError, match="each rank needs a core, and this machine has 2"):
        context.check_ranks(RunConfig(policy="act", device="cpu", precision="fp32", gpus=3), _environment(0))
    with pytest.raises(UserError, match="LeRobot backend measures one process"):
        context.check_ranks(
            RunConfig(policy="act", device="cpu", precision="fp32", gpus=2, backend="lerobot"),
            _environment(0),
        )
    with pytest.raises(ValueError, match="--gpus must be at least 1"):
        RunConfig(policy="act", device="cpu", precision="fp32", gpus=0)
