"""The probe child: ``python -m probes.child REQUEST.json RESULT.json``.

Runs one isolated measurement in its own process, so that running out of memory, a crash or a
hang never takes the tuner down, and writes a :class:`~probes.protocol.ProbeResult`. The tuner
starts it with a fresh interpreter (spawn semantics) in its own process group, and kills the
group (with any DataLoader workers) if it outlives its timeout.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger("probes.child")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build(request: Any, on_exceed: Any, enforce: bool = True) -> tuple[Any, Any, Any, Any, Any]:
    """The device, memory meter, policy module, config and training step for ``request``.

    ``enforce=False`` measures a CPU probe's memory without treating the budget as a limit.
    """
    import torch

    from probes.device import MemoryMeter, resolve_device
    from probes.policy import policy_module
    from probes.train_step import TrainStep

    torch.manual_seed(request.seed)
    device = resolve_device(request.device)
    meter = MemoryMeter(device, request.memory_limit_bytes, on_exceed=on_exceed if enforce else None)
    meter.start()
    spec = request.model
    module = policy_module(spec.policy)
    cfg = module.Config(
        cameras=spec.cameras,
        image_size=tuple(spec.image_size),
        state_dim=spec.state_dim,
        action_dim=spec.action_dim,
        gradient_checkpointing=spec.gradient_checkpointing,
        **spec.overrides,
    )
    model = module.Model(cfg).to(device)
    model.set_gradient_checkpointing(spec.gradient_checkpointing)
    step = TrainStep(model, cfg, device, request.precision)
    return device, meter, module, cfg, step


def run_batch_probe(request: Any, on_exceed: Any) -> dict[str, Any]:
    """Train on synthetic tensors of the real shapes; measure peak memory and step time."""
    import torch

    from probes.device import synchronize
    from probes.train_step import prepare_batch

    device, meter, module, cfg, step = build(request, on_exceed)
    generator = torch.Generator().manual_seed(request.seed)
    batch = module.synthetic_batch(cfg, request.batch_size, generator)
    times: list[float] = []
    for i in range(request.warmup_steps + request.measure_steps):
        if request.vary_padding and i > 0:
            batch = module.synthetic_batch(cfg, request.batch_size, generator)
        prepared = prepare_batch(batch, device)
        synchronize(device)
        t0 = time.perf_counter()
        step(prepared)  # ends with loss.item(), which synchronises
        synchronize(device)
        elapsed = time.perf_counter() - t0
        meter.check()
        if i >= request.warmup_steps:
            times.append(elapsed)
        log.info("batch %d step %d: %.3f s", request.batch_size, i, elapsed)
    peak = meter.peak()
    median = statistics.median(times)
    over = peak.reserved_bytes > peak.limit_bytes
    return {
        "status": "oom" if over else "ok",
        "message": f"measured peak {peak.reserved_bytes} B passed the {peak.limit_bytes} B budget"
        if over
        else "",
        "peak_allocated_bytes": peak.allocated_bytes,
        "peak_reserved_bytes": peak.reserved_bytes,
        "alloc_retries": peak.alloc_retries,
        "device_overhead_bytes": peak.overhead_bytes,
        "step_time_s": median,
        "samples_per_s": request.batch_size / median,
        "steps": len(times),
        "updt_s": median,
        "step_times_s": times,
    }


def time_samples(dataset: Any, seed: int, samples: int = 6) -> float:
    """Seconds one process takes to read one sample (decode every camera, read the chunk)."""
    import random

    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(samples + 1)]
    dataset[indices[0]]  # open the parquet data once, as a worker's first sample does
    t0 = time.perf_counter()
    for i in indices[1:]:
        dataset[i]
    return (time.perf_counter() - t0) / samples


def run_decode_probe(request: Any, on_exceed: Any) -> dict[str, Any]:
    """How long one process takes to read one sample: a DataLoader worker's production rate."""
    from probes.dataset import FrameDataset
    from probes.policy import policy_module

    module = policy_module(request.model.policy)
    chunk = request.model.overrides.get("chunk_size", module.DATASET_NEEDS["chunk_size"])
    dataset = FrameDataset(
        request.dataset_root, chunk_size=chunk, with_task=bool(module.DATASET_NEEDS.get("task"))
    )
    decode_s = time_samples(dataset, request.seed, samples=max(4, request.measure_steps))
    return {"status": "ok", "decode_s_per_sample": decode_s, "steps": request.measure_steps}


def run_worker_probe(request: Any, on_exceed: Any) -> dict[str, Any]:
    """Drive the real DataLoader into the real training step; measure data_s and updt_s per step.

    As in LeRobot's training loop (v0.4 to v0.6.1), ``data_s`` is the time to get the next batch
    from the loader and put it on the device, and ``updt_s`` the optimisation step ending with
    ``loss.item()``.
    """
    import torch

    from probes.dataset import FrameDataset
    from probes.device import synchronize
    from probes.memory import PeakWatcher, children_of, pss_bytes
    from probes.train_step import FeatureStats, prepare_batch

    # On CPU the loader's imports, prefetched batches and pinned buffers live in this process
    # too; the batch was chosen with headroom, so here memory is measured, not enforced (on CUDA
    # the allocator's cap still holds).
    device, meter, module, cfg, step = build(request, on_exceed, enforce=False)
    dataset = FrameDataset(
        request.dataset_root,
        chunk_size=cfg.chunk_size,
        with_task=bool(module.DATASET_NEEDS.get("task")),
    )
    stats = {key: FeatureStats(mean=value.mean, std=value.std) for key, value in dataset.stats.items()}
    workers = request.num_workers
    decode_s = time_samples(dataset, request.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=request.batch_size,
        shuffle=True,
        num_workers=workers,
        prefetch_factor=request.prefetch_factor if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=False,
        multiprocessing_context="spawn" if workers > 0 else None,
        generator=torch.Generator().manual_seed(request.seed),
    )
    me = os.getpid()
    loader_memory = PeakWatcher(lambda: sum(pss_bytes(pid) for pid in children_of(me)), interval_s=0.25)
    loader_memory.start()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # LeRobot's cycled iterator
    buffered = workers * (request.prefetch_factor or 0)
    data_times: list[float] = []
    step_times: list[float] = []
    drain_started = None
    step_index = 0
    drained = True
    while True:
        t0 = time.perf_counter()
        batch = next(batches)
        prepared = prepare_batch(batch, device, stats)
        synchronize(device)
        t1 = time.perf_counter()
        step(prepared)
        synchronize(device)
        t2 = time.perf_counter()
        meter.check()
        log.info("workers %d step %d: data %.3f s, update %.3f s", workers, step_index, t1 - t0, t2 - t1)
        step_index += 1
        if step_index <= request.warmup_steps:
            continue
        data_times.append(t1 - t0)
        step_times.append(t2 - t1)
        drain_started = drain_started or t0
        after_warmup = len(step_times)
        if after_warmup < request.measure_steps:
            continue
        if after_warmup >= buffered + request.measure_steps:
            break
        # Workers that produce a batch faster than the step consumes one keep the buffer full:
        # the steady state is already here, with nothing to drain.
        produce_s = request.batch_size * decode_s / workers if workers else float("inf")
        if produce_s <= statistics.fmean(step_times):
            break
        if t2 - drain_started >= request.drain_budget_s:
            drained = False
            break
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
        "step_times_s": step_times,
        "data_times_s": data_times,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("AUTOTUNE_PROBE_LOG", "WARNING"),
        format="[probe %(process)d] %(message)s",
        stream=sys.stderr,
    )
    from probes.protocol import ProbeRequest, ProbeResult

    request_path, result_path = Path(argv[0]), Path(argv[1])
    request = ProbeRequest.from_json(request_path.read_text())
    started = time.perf_counter()

    def on_exceed(peak_bytes: int) -> None:
        # The CPU's out-of-memory: report at once and leave, from the watcher thread, before the
        # probe can take the host's memory.
        ProbeResult(
            status="oom",
            batch_size=request.batch_size,
            peak_allocated_bytes=peak_bytes,
            peak_reserved_bytes=peak_bytes,
            wall_s=time.perf_counter() - started,
            message=f"measured peak memory passed the {request.memory_limit_bytes} B budget",
        ).write(result_path)
        os._exit(0)

    try:
        runner = {
            "batch": run_batch_probe,
            "workers": run_worker_probe,
            "decode": run_decode_probe,
        }[request.kind]
        fields = runner(request, on_exceed)
        result = ProbeResult(batch_size=request.batch_size, **fields)
    except BaseException as exc:  # every outcome must be reported to the tuner
        from probes.device import is_out_of_memory

        if is_out_of_memory(exc):
            result = ProbeResult(status="oom", batch_size=request.batch_size, message=_one_line(exc))
        else:
            traceback.print_exc(file=sys.stderr)
            result = ProbeResult(status="error", batch_size=request.batch_size, message=_one_line(exc))
        gc.collect()
    result.wall_s = time.perf_counter() - started
    result.write(result_path)
    sys.stderr.flush()
    # Leave without waiting on DataLoader workers or CUDA teardown.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
