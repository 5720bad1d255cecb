"""Everything that touches ``torch.cuda``: device selection, memory caps, peaks and OOM detection.

The rest of autotune never calls ``torch.cuda`` directly, and only probe children import this.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

import torch

from probes.memory import PeakWatcher, rss_bytes


class HostMemoryExceeded(MemoryError):
    """A CPU probe's measured peak memory went over its budget: the CPU's out-of-memory."""


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a usable device; ``ValueError`` if it is not there."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(index)
        # What LeRobot's training script turns on.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the allocator's out-of-memory errors (typed, not matched on message alone)."""
    if isinstance(exc, (torch.OutOfMemoryError, HostMemoryExceeded)):
        return True
    # cuDNN and cuBLAS report running out of workspace as a RuntimeError.
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "CUDNN_STATUS_ALLOC_FAILED" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class MemoryPeak:
    allocated_bytes: int
    reserved_bytes: int
    alloc_retries: int
    limit_bytes: int
    overhead_bytes: int = 0


class MemoryMeter:
    """Holds a probe to ``limit_bytes`` and measures its peak.

    CUDA: the caching allocator is capped at ``limit_bytes`` (or the free memory, if smaller) with
    ``set_per_process_memory_fraction``, so a smaller limit behaves like a smaller card; peaks come
    from the allocator's statistics. CPU: the growth of the resident set over the baseline taken at
    ``start`` is sampled; going over ``limit_bytes`` calls ``on_exceed`` (the CPU's OOM).
    """

    def __init__(
        self,
        device: torch.device,
        limit_bytes: int,
        on_exceed: Callable[[int], None] | None = None,
    ) -> None:
        self.device = device
        self.limit_bytes = limit_bytes
        self.on_exceed = on_exceed
        self.baseline_bytes = 0
        self.overhead_bytes = 0
        self.watcher: PeakWatcher | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.init()
            torch.empty(1, device=self.device)  # create the context before reading free memory
            free, total = torch.cuda.mem_get_info(self.device)
            self.overhead_bytes = total - free - torch.cuda.memory_reserved(self.device)
            self.limit_bytes = min(self.limit_bytes, free)
            torch.cuda.set_per_process_memory_fraction(self.limit_bytes / total, self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.baseline_bytes = rss_bytes()
        self.watcher = PeakWatcher(
            lambda: rss_bytes() - self.baseline_bytes,
            limit_bytes=self.limit_bytes if self.on_exceed is not None else None,
            on_exceed=self.on_exceed,
        )
        self.watcher.start()

    def check(self) -> None:
        """Take a sample now (CPU); raises nothing itself, the watcher's callback decides."""
        if self.watcher is not None:
            self.watcher.sample()

    def peak(self) -> MemoryPeak:
        if self.device.type == "cuda":
            stats = torch.cuda.memory_stats(self.device)
            return MemoryPeak(
                allocated_bytes=int(stats.get("allocated_bytes.all.peak", 0)),
                reserved_bytes=int(stats.get("reserved_bytes.all.peak", 0)),
                alloc_retries=int(stats.get("num_alloc_retries", 0)),
                limit_bytes=self.limit_bytes,
                overhead_bytes=self.overhead_bytes,
            )
        sampled = self.watcher.stop() if self.watcher is not None else 0
        # ru_maxrss is the kernel's exact high-water mark (KiB on Linux); it catches spikes
        # between samples.
        high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.baseline_bytes
        peak = max(sampled, high_water)
        return MemoryPeak(
            allocated_bytes=peak, reserved_bytes=peak, alloc_retries=0, limit_bytes=self.limit_bytes
        )
