"""Worker and decode probes: the real DataLoader over a real dataset into the real training step."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from probes import catalogue, distributed
from probes.dataset import DatasetError, FrameDataset
from probes.dataset.decode import decode_probe_fields
from probes.device import synchronize
from probes.memory import PeakWatcher, children_of, pss_bytes
from probes.protocol import ProbeRequest
from probes.train_step import FeatureStats, prepare_batch, warm_up
from probes.training import build

log = logging.getLogger("probes.child")


def open_dataset(request: ProbeRequest, chunk_size: int) -> FrameDataset:
    assert request.model is not None and request.dataset_root is not None
    return FrameDataset(
        request.dataset_root,
        chunk_size=chunk_size,
        with_task=catalogue.entry(request.model.policy).reads_task,
        video_backend=request.video_backend,
    )


def time_samples(dataset: Any, seed: int, samples: int = 6) -> float:
    """Seconds one process takes to read one sample (decode every camera, read the chunk)."""
    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(samples + 1)]
    dataset[indices[0]]  # open the parquet data once, as a worker's first sample does
    t0 = time.perf_counter()
    for i in indices[1:]:
        dataset[i]
    return (time.perf_counter() - t0) / samples


def run_decode_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """How long one process takes to read one sample (a DataLoader worker's production rate), with
    the request's video backend and with every other one that loads here."""
    assert request.model is not None
    chunk = catalogue.build_config(request.model).chunk_size

    def read_s(backend: str) -> float | None:
        dataset = open_dataset(dataclasses.replace(request, video_backend=backend), chunk)
        if backend != request.video_backend and not dataset.meta.video_keys:
            return None  # no videos: every backend reads the same
        return time_samples(dataset, request.seed, samples=max(4, request.measure_steps))

    return {
        **decode_probe_fields(request.video_backend, read_s, (DatasetError,)),
        "steps": request.measure_steps,
    }


def run_worker_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Drive the real DataLoader into the real training step; measure data_s and updt_s per step.

    As in LeRobot's training loop (v0.4 to v0.6.1), ``data_s`` is the time to get the next batch
    from the loader and put it on the device, and ``updt_s`` the optimisation step ending with
    ``loss.item()``.
    """
    # On CPU the loader's imports, prefetched batches and pinned buffers live in this process
    # too; the batch was chosen with headroom, so here memory is measured, not enforced (on CUDA
    # the allocator's cap still holds).
    trainer = build(request, on_exceed, enforce=False)
    device, meter, step = trainer.device, trainer.meter, trainer.step
    dataset = open_dataset(request, trainer.cfg.chunk_size)
    stats = {key: FeatureStats(mean=value.mean, std=value.std) for key, value in dataset.stats.items()}
    workers = request.num_workers
    decode_s = time_samples(dataset, request.seed)
    # Under DDP each rank reads its own shard, as accelerate shards lerobot-train's sampler.
    sampler = (
        torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=request.seed)
        if distributed.active()
        else None
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=request.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=request.prefetch_factor if workers > 0 else None,
        persistent_workers=workers > 0 and request.persistent_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        multiprocessing_context=request.multiprocessing_context if workers > 0 else None,
        generator=torch.Generator().manual_seed(request.seed) if sampler is None else None,
    )
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # LeRobot's cycled iterator
    fields = drive(
        request, device, meter, step, batches, lambda b: prepare_batch(b, device, stats), decode_s, warm_up
    )
    return {**fields, **trainer.param_counts()}


def rows(batch: Any) -> int:
    """The batch dimension of a loader batch: its first tensor's first size (0 if it has none)."""
    values = batch.values() if isinstance(batch, dict) else batch
    return next((int(v.shape[0]) for v in values if isinstance(v, torch.Tensor) and v.dim() > 0), 0)


def drive(
    request: ProbeRequest,
    device: torch.device,
    meter: Any,
    step: Any,
    batches: Iterator[Any],
    prepare: Callable[[Any], Any],
    decode_s: float,
    warm: Callable[[Any, Callable[[int], object], int], int],
) -> dict[str, Any]:
    """Fetch, prepare and train on ``batches`` until the steady state; the probe's result fields.

    Warms up with ``warm`` (until the optimizer holds its state), then steps until the batches the
    workers prefetched meanwhile are used up (or the workers keep up, or ``drain_budget_s`` passed),
    and reports the last ``measure_steps`` full batches (a short last batch of an epoch is trained
    on but not measured).
    """
    me = os.getpid()
    loader_memory = PeakWatcher(lambda: sum(pss_bytes(pid) for pid in children_of(me)), interval_s=0.25)
    loader_memory.start()
    one_step = _TimedStep(request, device, meter, step, batches, prepare)
    # Until the optimizer holds its state (fp16's scaler skips the first steps), as a batch probe.
    warmup_steps = warm(step, lambda _: one_step(), request.warmup_steps)
    meter.end_warmup()
    data_times, step_times, drained = _until_steady(request, one_step, decode_s)
    # The steady state: the last measure_steps steps.
    data_times = data_times[-request.measure_steps :]
    step_times = step_times[-request.measure_steps :]
    loader_rss = loader_memory.stop()
    peak = meter.peak()
    data_s = statistics.fmean(data_times)
    updt_s = statistics.fmean(step_times)
    return {
        "status": "ok",
        "peak_allocated_bytes": peak.allocated_bytes,
        "peak_reserved_bytes": peak.reserved_bytes,
        "alloc_retries": peak.alloc_retries,
        "step_time_s": updt_s,
        "data_s": data_s,
        "updt_s": updt_s,
        "samples_per_s": request.batch_size / (data_s + updt_s),
        "steps": len(step_times),
        "loader_rss_bytes": loader_rss,
        "drained": drained,
        "decode_s_per_sample": decode_s,
        "warmup_steps": warmup_steps,
        "step_times_s": step_times,
        "data_times_s": data_times,
    }


class _TimedStep:
    """Fetches a batch and trains on it, one step a call, counting the steps and noting whether a
    full batch has been seen."""

    def __init__(
        self,
        request: ProbeRequest,
        device: torch.device,
        meter: Any,
        step: Any,
        batches: Iterator[Any],
        prepare: Callable[[Any], Any],
    ) -> None:
        self.request, self.device, self.meter = request, device, meter
        self.step, self.batches, self.prepare = step, batches, prepare
        self.index = 0
        self.seen_full = False

    def __call__(self) -> tuple[float, float, float, bool]:
        """Fetch a batch and train on it: its start time, data_s, updt_s, and whether it was full."""
        t0 = time.perf_counter()
        batch = next(self.batches)
        prepared = self.prepare(batch)
        synchronize(self.device)
        t1 = time.perf_counter()
        self.step(prepared)
        synchronize(self.device)
        t2 = time.perf_counter()
        self.meter.check()
        full = rows(batch) == self.request.batch_size
        self.seen_full = self.seen_full or full
        log.info(
            "workers %d step %d: data %.3f s, update %.3f s%s",
            self.request.num_workers, self.index, t1 - t0, t2 - t1,
            "" if full else f" (a short batch of {rows(batch)})",
        )  # fmt: skip
        self.index += 1
        return t0, t1 - t0, t2 - t1, full


def _until_steady(
    request: ProbeRequest, one_step: _TimedStep, decode_s: float
) -> tuple[list[float], list[float], bool]:
    """Step after the warm-up until the steady state: the data_s and updt_s of every measured step,
    and whether the prefetched batches were used up within ``drain_budget_s``."""
    workers = request.num_workers
    buffered = workers * (request.prefetch_factor or 0)
    data_times: list[float] = []
    step_times: list[float] = []
    drain_started = None
    while True:
        t0, data_step_s, updt_step_s, full = one_step()
        t2 = t0 + data_step_s + updt_step_s
        drain_started = drain_started or t0
        if not full and one_step.seen_full:
            # The epoch's short last batch (the loader keeps it, as lerobot-train's does) is a new
            # shape: cuDNN's benchmark searches its algorithms again, in the middle of the timing.
            # It is trained on, as the trainer does, but not measured. (A dataset smaller than a
            # batch makes every batch short, all of one shape: those are measured.)
            continue
        data_times.append(data_step_s)
        step_times.append(updt_step_s)
        after_warmup = len(step_times)
        if after_warmup < request.measure_steps:
            continue
        if after_warmup >= buffered + request.measure_steps:
            return data_times, step_times, True
        # Workers that produce a batch faster than the step consumes one keep the buffer full:
        # the steady state is already here, with nothing to drain.
        produce_s = request.batch_size * decode_s / workers if workers else float("inf")
        if produce_s <= statistics.fmean(step_times):
            return data_times, step_times, True
        if t2 - drain_started >= request.drain_budget_s:
            return data_times, step_times, False
