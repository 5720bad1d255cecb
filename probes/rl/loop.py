"""What every RL probe shares: the device and its memory meter, the warm-up until every optimizer
holds its state, timed steps, and the result's fields (as :mod:`probes.training` reports them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probes.device import MemoryMeter, measured_fields, resolve_device, synchronize
from probes.protocol import ProbeRequest
from probes.train_step import MAX_WARMUP_STEPS

log = logging.getLogger("probes.child")


@dataclass
class Harness:
    """The device, its meter and the optimizers whose state the warm-up waits for."""

    device: torch.device
    meter: MemoryMeter
    request: ProbeRequest
    optimizers: Sequence[torch.optim.Optimizer] = ()
    scaler: torch.amp.GradScaler | None = None


def start(request: ProbeRequest, on_exceed: Any) -> Harness:
    """Seed, resolve the device and start its memory meter (before anything is allocated)."""
    torch.manual_seed(request.seed)
    device = resolve_device(request.device)
    _load_libraries()
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=on_exceed)
    meter.start()
    scaler = torch.amp.GradScaler(device.type, enabled=request.precision == "fp16")
    return Harness(device, meter, request, scaler=scaler)


def _load_libraries() -> None:
    """Load what torch loads on first use, before the baseline: the first optimizer built imports
    about 150 MiB of modules (torch 2.14, measured on the CPU), and autograd starts its engine on
    the first backward. The RL trainers' networks are small: counted, that one-time cost would be
    most of a CPU probe's peak, and on CUDA the allocator never sees it."""
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([weight])
    (weight * 2).sum().backward()
    optimizer.step()


def optimizers_ready(optimizers: Sequence[torch.optim.Optimizer]) -> bool:
    """Whether every optimizer holds state for every parameter that has a gradient (the steps
    clear gradients before their backward, not after, so the last step's are still there)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and p not in optimizer.state:
                    return False
    return True


def timed_steps(harness: Harness, step: Callable[[], None], measured: int) -> tuple[list[float], int]:
    """Warm up (the request's steps, more until every optimizer holds state; fp16's scaler skips
    steps while it calibrates), end the warm-up on the meter, then time ``measured`` steps.
    Returns the measured step times and the warm-up steps taken."""
    device, meter = harness.device, harness.meter

    def one(phase: str, index: int) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        elapsed = time.perf_counter() - t0
        meter.check()
        log.info("%s %s step %d: %.4f s", harness.request.kind, phase, index, elapsed)
        return elapsed

    warmup = 0
    while warmup < harness.request.warmup_steps or not optimizers_ready(harness.optimizers):
        if warmup >= max(harness.request.warmup_steps, MAX_WARMUP_STEPS):
            raise RuntimeError(
                f"the optimizers hold no state after {warmup} warm-up steps at "
                f"{harness.request.precision}: every step was skipped (gradients not finite)"
            )
        one("warm-up", warmup)
        warmup += 1
    meter.end_warmup()
    return [one("measured", i) for i in range(measured)], warmup


def param_counts(modules: Sequence[torch.nn.Module]) -> dict[str, int]:
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    return {
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
    }


def result_fields(
    harness: Harness, times: list[float], warmup_steps: int, samples_per_step: int
) -> dict[str, Any]:
    """The ``ProbeResult`` fields of a finished probe: status (over the budget is out of memory on
    a CPU), peaks, the median step time and samples per second."""
    return measured_fields(harness.meter.peak(), times, warmup_steps, samples_per_step)
