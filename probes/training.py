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
from probes.policies.tensors import redraw_padding
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

    The batch is drawn once, on the device (milliseconds on a GPU even at batch 1,000), and handed
    over as lerobot-train's DataLoader hands it: on CUDA in pinned host memory (:func:`loader_batch`).
    Every step then copies it to the device and normalises it there (:func:`prepare_batch`), as the
    real training does at every step, so the device holds what it holds in training: the normalised
    float frames, the uint8 copy only while it is converted. The copy and the normalisation stay
    outside the timed step, as in lerobot-train 0.6.1, which counts them in ``data_s``, not
    ``updt_s``. The soak (``vary_padding``) draws only new episode boundaries at each step
    (:func:`~probes.policies.tensors.redraw_padding`), never the frames again.
    """
    trainer = build(request, on_exceed)
    device, meter, module, cfg, step = (
        trainer.device,
        trainer.meter,
        trainer.model_module,
        trainer.cfg,
        trainer.step,
    )
    generator = torch.Generator(device=device).manual_seed(request.seed + distributed.rank())
    batch = loader_batch(module.synthetic_batch(cfg, request.batch_size, generator), device)

    def prepared(taken: int) -> Any:
        nonlocal batch
        if request.vary_padding and taken > 0:
            batch = redraw_padding(batch, generator)
        return prepare_batch(batch, device)

    return {**timed_steps(request, device, meter, step, prepared, warm_up), **trainer.param_counts()}


def loader_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``batch`` (drawn on ``device``) where lerobot-train's DataLoader hands it to the step.

    On CUDA that is pinned host memory (the DataLoader's ``pin_memory=True``): each tensor is
    copied there once, and the device copies go when the caller drops ``batch``. Their memory, a
    byte a pixel, stays below what preparing the batch takes at every step (four bytes a pixel as
    float), so drawing on the device adds nothing to a probe's peak. Elsewhere the batch already is
    where the loader leaves it (on the CPU the loader's batch and the step share the memory).
    """
    if device.type != "cuda":
        return batch
    host: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            pinned = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            pinned.copy_(value)
            value = pinned
        host[key] = value
    return host


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
