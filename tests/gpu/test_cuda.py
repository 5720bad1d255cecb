"""Every CUDA and NVML call autotune makes, for real, on the first GPU (``-m gpu``; skipped, with the
reason, where torch sees none). What changes a process's CUDA state runs in a child process.

``scripts/gpu-check.sh`` runs these first, then autotune itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autotune.probe_client import run_probe
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult
from tests.cli import SMALL_ACT

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"no CUDA GPU: torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}) sees none",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024**2
GiB = 1024**3
SMALL = ModelSpec("act", 2, (96, 128), 6, 6, True, dict(SMALL_ACT))
FULL = ModelSpec("act", 2, (480, 640), 6, 6, True)  # LeRobot's ACT on two SO-101 cameras


def python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (its own CUDA context); it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def batch(spec: ModelSpec, precision: str, size: int, limit_bytes: int, **kwargs: object) -> ProbeResult:
    request = ProbeRequest(
        kind="batch", model=spec, device="cuda:0", precision=precision, batch_size=size,
        memory_limit_bytes=limit_bytes, **kwargs,
    )  # fmt: skip
    return run_probe(request, timeout_s=600)


def test_nvml_and_torch_agree_on_the_device_and_torch_runs_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.devices import probe_environment, resolve_device, resolve_precision
    from autotune.fingerprint import gpu_info

    environment = probe_environment()
    gpu = gpu_info(0)
    assert gpu is not None and environment.cuda_available
    facts = environment.devices[0]
    assert gpu.name == facts.name
    assert gpu.compute_capability == facts.capability
    assert abs(gpu.memory_total_bytes - facts.total_memory_bytes) < 0.03 * gpu.memory_total_bytes
    assert 0 < gpu.memory_free_bytes <= gpu.memory_total_bytes
    assert gpu.cuda_driver_version and gpu.driver_version
    assert resolve_device(None, environment) == "cuda:0"
    expected = "bf16" if facts.capability >= (8, 0) else "fp16"
    assert resolve_precision(None, "cuda:0", environment) == expected
    # The same GPU named by an abbreviated UUID, as CUDA accepts it.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu.uuid[:12])
    assert gpu_info(0).uuid == gpu.uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_info(0) is None


ALLOCATOR = """
import json, torch
from probes.device import MemoryMeter, is_out_of_memory
meter = MemoryMeter(torch.device("cuda", 0), 1024 * 2**20)
meter.start()
transient = torch.empty(600 * 2**20, dtype=torch.uint8, device="cuda")  # the warm-up's scratch
del transient
meter.end_warmup()
cap_after_warmup = meter.limit_bytes
blocks = [torch.empty(100 * 2**20, dtype=torch.uint8, device="cuda") for _ in range(8)]
del blocks[::2]  # 400 MiB cached in 100 MiB segments that a 300 MiB block cannot use
big = torch.empty(300 * 2**20, dtype=torch.uint8, device="cuda")  # over the cap: free the cache, retry
torch.cuda.synchronize()
peak = meter.peak()
try:
    torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    oom = None
except Exception as exc:
    oom = {"type": type(exc).__name__, "recognised": is_out_of_memory(exc), "message": str(exc)[:300]}
print(json.dumps({"cap": cap_after_warmup, "reserved": peak.reserved_bytes, "retries": peak.alloc_retries,
                  "warmup": peak.warmup_reserved_bytes, "overhead": peak.overhead_bytes, "oom": oom}))
"""


def test_the_allocator_cap_peak_and_retry_statistics() -> None:
    seen = python(ALLOCATOR)
    assert seen["cap"] == 1024 * MiB
    assert seen["warmup"] >= 600 * MiB  # kept apart ...
    assert seen["reserved"] <= 1024 * MiB  # ... from the measured peak, which stays under the cap
    assert seen["retries"] >= 1  # the cache was freed and the allocation retried
    assert seen["overhead"] > 0  # the CUDA context, outside the allocator
    assert seen["oom"] is not None and seen["oom"]["recognised"], seen["oom"]


def test_a_probe_past_its_cap_is_out_of_memory_and_reports_its_cap() -> None:
    result = batch(FULL, "fp32", 64, 1 * GiB)
    assert result.status == "oom", result.message
    assert result.memory_cap_bytes == 1 * GiB


CUBLAS = """
import json, torch
from probes.device import is_out_of_memory
a = torch.randn(256, 256, device="cuda")  # the context and two small blocks, before memory runs out
b = torch.randn(256, 256, device="cuda")
hold = []
for size in (2**30, 2**26, 2**21):  # fill the device: 1 GiB, then 64 MiB, then 2 MiB blocks
    while True:
        try:
            hold.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
        except torch.OutOfMemoryError:
            break
try:
    (a @ b).sum().item()  # the first matrix product creates the cuBLAS handle
    print(json.dumps({"raised": False}))
except Exception as exc:
    print(json.dumps({"raised": True, "type": type(exc).__name__, "message": str(exc)[:300],
                      "recognised": is_out_of_memory(exc)}))
"""


def test_a_cublas_handle_created_with_no_memory_left_is_out_of_memory() -> None:
    seen = python(CUBLAS)
    if not seen["raised"]:
        pytest.skip("cuBLAS created its handle in the memory that was left: could not be provoked here")
    assert seen["recognised"], seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_steps_at_reduced_precision_carry_the_optimizers_state(precision: str) -> None:
    if precision == "bf16" and torch.cuda.get_device_capability(0) < (8, 0):
        pytest.skip("bf16 needs compute capability 8.0 (this card computes it only by emulation)")
    result = batch(SMALL, precision, 8, 4 * GiB)
    assert result.status == "ok", result.message
    assert result.warmup_steps >= 1 and result.steps == 3
    assert result.memory_cap_bytes == 4 * GiB
    assert 0 < result.peak_reserved_bytes <= result.memory_cap_bytes
    assert result.warmup_peak_reserved_bytes > 0 and result.device_overhead_bytes > 0


def test_the_default_budget_leaves_room_outside_the_allocator() -> None:
    from autotune.fingerprint import gpu_info
    from probes.device import LAZY_LOAD_SLACK_BYTES

    free = gpu_info(0).memory_free_bytes  # what autotune asks for without --memory-limit
    result = batch(SMALL, "fp32", 8, free)
    assert result.status == "ok", result.message
    assert result.device_overhead_bytes > 0  # the context, cuBLAS, cuDNN, kernels
    assert result.memory_cap_bytes <= free - LAZY_LOAD_SLACK_BYTES  # room left, as measured


def test_a_worker_trial_with_pinned_memory(tmp_path: Path) -> None:
    from probes.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(
        tmp_path / "ds", cameras=2, image_size=(96, 128), episodes=2, episode_length=30, seed=0
    )
    request = ProbeRequest(
        kind="workers", model=SMALL, device="cuda:0", precision="bf16" if torch.cuda.get_device_capability(0) >= (8, 0) else "fp16",
        batch_size=8, memory_limit_bytes=4 * GiB, warmup_steps=1, measure_steps=3, dataset_root=str(root),
        num_workers=2, prefetch_factor=2,
    )  # fmt: skip
    result = run_probe(request, timeout_s=600)
    assert result.status == "ok", result.message
    assert result.data_s > 0 and result.updt_s > 0 and result.samples_per_s > 0
    assert result.warmup_steps >= 1


def test_an_fp16_step_creates_adamws_state_on_the_device() -> None:
    from probes import catalogue
    from probes.train_step import TrainStep, prepare_batch, warm_up

    cfg = catalogue.build_config(SMALL)
    module = catalogue.model_module("act")
    device = torch.device("cuda", 0)
    step = TrainStep(module.Model(cfg).to(device), cfg, device, "fp16")
    batch_ = prepare_batch(module.synthetic_batch(cfg, 4, torch.Generator().manual_seed(0)), device)
    taken = warm_up(step, lambda _: step(batch_), 1)
    state = list(step.optimizer.state.values())
    assert taken >= 1 and len(state) == len(step.optimized)
    assert all(s["exp_avg"].is_cuda and s["exp_avg"].dtype == torch.float32 for s in state)
