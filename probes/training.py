"""A batch probe: build the policy on the device and train it on synthetic tensors of the real shapes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from probes import catalogue, distributed
from probes.device import MemoryMeter, measured_fields, resolve_device, synchronize
from probes.policies.common import count_params
from probes.protocol import ProbeRequest
from probes.train_step import TrainStep, prepare_batch, warm_up

log = logging.getLogger("probes.child")


@dataclass
class Trainer:
    """What a probe trains with: the device, its memory meter, the policy's code, config and step."""

    device: torch.device
    meter: MemoryMeter
    model_module: Any
    cfg: Any
    step: TrainStep

    def param_counts(self) -> dict[str, int]:
        params = list(self.step.model.parameters())
        return {
            "total_params": count_params(params),
            "trainable_params": count_params(p for p in params if p.requires_grad),
        }


def build(request: ProbeRequest, on_exceed: Any, enforce: bool = True) -> Trainer:
    """The device, memory meter, policy, config and training step for ``request``.

    ``enforce=False`` measures a CPU probe's memory without treating the budget as a limit.
    """
    assert request.model is not None
    torch.manual_seed(request.seed)
    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=on_exceed if enforce else None)
    meter.start()
    cfg = catalogue.build_config(request.model)
    module = catalogue.model_module(request.model.policy)
    model = module.Model(cfg).to(device)
    model.set_gradient_checkpointing(request.model.gradient_checkpointing)
    step = TrainStep(model, cfg, device, request.precision)
    if distributed.active():
        step.model = distributed.wrap(model, device)  # the optimizer holds the same parameters
    return Trainer(device, meter, module, cfg, step)


def run_batch_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Train on synthetic tensors of the real shapes; measure peak memory and step time.

    The warm-up takes ``request.warmup_steps`` steps, more until the optimizer holds its state
    (fp16's scaler skips the first steps); its peak is reported apart. An out-of-memory in any
    step, warm-up included, is an out-of-memory: the real training's first step does the same.
    """
    trainer = build(request, on_exceed)
    device, meter, module, cfg, step = (
        trainer.device,
        trainer.meter,
        trainer.model_module,
        trainer.cfg,
        trainer.step,
    )
    generator = torch.Generator().manual_seed(request.seed + distributed.rank())
    batch = module.synthetic_batch(cfg, request.batch_size, generator)

    def prepared(taken: int) -> Any:
        nonlocal batch
        if request.vary_padding and taken > 0:
            batch = module.synthetic_batch(cfg, request.batch_size, generator)
        return prepare_batch(batch, device)

    return {**timed_steps(request, device, meter, step, prepared, warm_up), **trainer.param_counts()}


def timed_steps(
    request: ProbeRequest,
    device: torch.device,
    meter: MemoryMeter,
    step: Any,
    prepared: Callable[[int], Any],
    warm: Callable[[Any, Callable[[int], object], int], int],
) -> dict[str, Any]:
    """Warm up with ``warm`` (until the optimizer holds its state), then time
    ``request.measure_steps`` steps of ``step`` on ``prepared(i)`` (the i-th step's batch, on the
    device): a batch probe's result fields, its peak memory and step time."""
    taken = 0

    def timed_step(phase: str) -> float:
        nonlocal taken
        batch = prepared(taken)
        synchronize(device)
        t0 = time.perf_counter()
        step(batch)  # ends with loss.item(), which synchronises
        synchronize(device)
        elapsed = time.perf_counter() - t0
        meter.check()
        log.info("batch %d %s step %d: %.3f s", request.batch_size, phase, taken, elapsed)
        taken += 1
        return elapsed

    warmup_steps = warm(step, lambda _: timed_step("warm-up"), request.warmup_steps)
    meter.end_warmup()
    times = [timed_step("measured") for _ in range(request.measure_steps)]
    fields = measured_fields(meter.peak(), times, warmup_steps, request.batch_size)
    return {**fields, "updt_s": fields["step_time_s"]}
