"""How a probe child sets CUDA up, checked on the CPU with torch's CUDA calls faked: TF32 through
``fp32_precision`` (the deprecated setters raise when mixed with it), a DDP rank's GPU made current
before NCCL's group binds to it, and a worker trial that times full batches only."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from probes import device as device_module
from probes import distributed, loading
from probes.protocol import ProbeRequest


@pytest.fixture
def tf32_restored() -> Any:
    """Put torch's TF32 settings back as they were (the defaults: matmul none, convolutions tf32)."""
    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield
    torch.backends.cuda.matmul.fp32_precision = matmul
    torch.backends.cudnn.conv.fp32_precision = conv


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """torch sees one CUDA GPU; what the child calls on it is recorded."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(device_module, "device_memory_used", lambda index: None)
    monkeypatch.setattr(device_module, "_used_before_context", {})
    return calls


def deprecated(*args: object) -> None:
    raise RuntimeError("PyTorch is checking whether allow_tf32_new is enabled for cuBlas matmul")


def test_tf32_is_set_through_fp32_precision_where_torch_has_it(
    fake_gpu: list, tf32_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deprecated setter raises, as it does when mixed with the new API (torch 2.9 and newer).
    monkeypatch.setattr(torch._C, "_set_cublas_allow_tf32", deprecated)
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    assert device_module.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # what lerobot-train turns on
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cudnn.benchmark
    assert fake_gpu == [("set_device", 1)]


def test_a_ddp_rank_makes_its_gpu_current_before_nccl_binds_to_it(
    fake_gpu: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    monkeypatch.setattr(dist, "init_process_group", lambda **kw: fake_gpu.append(("init_process_group", kw)))
    distributed.start("cuda:1")
    assert [name for name, _ in fake_gpu] == ["set_device", "init_process_group"]
    assert fake_gpu[0] == ("set_device", 1)
    group = fake_gpu[1][1]
    assert group["backend"] == "nccl" and group["device_id"] == torch.device("cuda", 1)


def test_a_cpu_rank_joins_gloo_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    seen: list[dict] = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.append(kw))
    distributed.start("cpu")
    assert seen[0]["backend"] == "gloo" and "device_id" not in seen[0]


class Meter:
    def check(self) -> None: ...

    def end_warmup(self) -> None: ...

    def peak(self) -> Any:
        return SimpleNamespace(allocated_bytes=0, reserved_bytes=0, alloc_retries=0)


def test_a_worker_trial_times_full_batches_only() -> None:
    # An epoch of 2 full batches of 8 and a short last one of 4, cycled as lerobot-train cycles its
    # loader; the short one is a new shape, and its step reruns cuDNN's benchmark (slow here).
    epoch = [8, 8, 4]
    sizes = iter(epoch * 10)
    trained: list[int] = []

    def step(batch: dict) -> None:
        trained.append(len(batch["action"]))
        if len(batch["action"]) < 8:
            time.sleep(0.2)

    request = ProbeRequest(kind="workers", batch_size=8, warmup_steps=1, measure_steps=4, num_workers=0)
    fields = loading.drive(
        request,
        torch.device("cpu"),
        Meter(),
        step,
        ({"action": torch.zeros(n, 2), "task": ["pick"] * n} for n in sizes),
        lambda batch: batch,
        0.001,
        lambda step_, one, steps: (one(0), 1)[1],
    )
    assert 4 in trained  # the short batch was trained on, as the trainer does ...
    assert fields["steps"] == 4 and len(fields["step_times_s"]) == 4
    assert max(fields["step_times_s"]) < 0.1  # ... but not timed


def test_a_dataset_smaller_than_a_batch_is_measured_in_its_one_shape() -> None:
    request = ProbeRequest(kind="workers", batch_size=8, warmup_steps=1, measure_steps=3, num_workers=0)
    fields = loading.drive(
        request, torch.device("cpu"), Meter(), lambda batch: None,
        iter([{"action": torch.zeros(5, 2)}] * 10), lambda batch: batch, 0.001,
        lambda step_, one, steps: (one(0), 1)[1],
    )  # fmt: skip
    assert fields["steps"] == 3
