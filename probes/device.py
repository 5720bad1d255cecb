"""Everything that touches ``torch.cuda``: device selection, memory caps, peaks and OOM detection.

The rest of autotune never calls ``torch.cuda`` directly, and only probe children import this. What
an error says it is (out of memory, perhaps out of memory, a kernel's limit) is read in
:mod:`probes.device_errors`, which calls nothing on the device; its checks are re-exported here.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from probes.device_errors import HostMemoryExceeded, error_kind, is_out_of_memory  # noqa: F401 - re-exported
from probes.memory import PeakWatcher, peak_rss_bytes, rss_bytes

log = logging.getLogger("probes.child")

MiB = 1024**2
# The allocator's cap leaves free what this process holds outside it (the CUDA context, cuBLAS and
# cuDNN handles, the kernels loaded so far) and this much more, for kernels that load lazily in
# later steps (a shape the warm-up did not see).
LAZY_LOAD_SLACK_BYTES = 128 * MiB


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a usable device; ``ValueError`` if it is not there."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
        note_memory_before_context(index)  # set_device creates the context (CUDA 12 and newer)
        torch.cuda.set_device(index)
        # What LeRobot's training script turns on.
        torch.backends.cudnn.benchmark = True
        enable_tf32()
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


def enable_tf32() -> None:
    """TF32 for float32 matrix products and convolutions, as lerobot-train trains (0.6.1 sets
    ``torch.backends.cuda.matmul.allow_tf32``; cuDNN's convolutions use TF32 by default): through
    ``fp32_precision`` where torch has it (2.9 and newer), since its deprecated ``allow_tf32``
    setters raise when mixed with it; through those setters on an older torch."""
    matmul = torch.backends.cuda.matmul
    try:
        matmul.fp32_precision  # noqa: B018 - present from torch 2.9
    except AttributeError:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return
    matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def create_context(device: torch.device) -> None:
    """Create the CUDA context on ``device`` (one tiny allocation), so free memory can be read."""
    torch.cuda.init()
    torch.empty(1, device=device)


# NVML's count of the memory in use on each device before this process created its context there
# (None: NVML could not tell, or the context already existed).
_used_before_context: dict[int, int | None] = {}


def device_memory_used(index: int) -> int | None:
    """The memory in use on CUDA device ``index`` as NVML counts it (every process, this one
    included), read without creating a CUDA context; None where NVML cannot tell (not installed,
    no driver, a device it cannot map, such as MIG devices named by UUID)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            # torch's own mapping of a CUDA index to NVML's (CUDA_VISIBLE_DEVICES honoured); the
            # children run with CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML's order.
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(index))
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - NVML's errors are its own types; any means "unknown"
        log.debug("NVML cannot read the memory used on cuda:%d: %s", index, exc)
        return None


def note_memory_before_context(index: int) -> None:
    """Remember what is in use on device ``index`` before this process's context exists, so the
    meter can tell this process's memory outside the allocator from other processes'."""
    if index in _used_before_context:
        return
    _used_before_context[index] = None if torch.cuda.is_initialized() else device_memory_used(index)


@dataclass
class MemoryPeak:
    allocated_bytes: int
    reserved_bytes: int
    alloc_retries: int
    limit_bytes: int  # the cap the measured steps ran under
    overhead_bytes: int = 0
    warmup_reserved_bytes: int = 0  # the warm-up's own peak (cuDNN's algorithm search included)
    cap_bound: str = ""  # CUDA: "limit" or "device", which bound set the cap


class MemoryMeter:
    """Holds a probe to ``limit_bytes`` and measures its peak, the warm-up's apart.

    CUDA: the caching allocator is capped with ``set_per_process_memory_fraction``, so that the
    limit behaves like a card of that size: the cap is the limit less what this process holds
    outside the allocator (context, cuBLAS, cuDNN, loaded kernels, NCCL), or what the device has
    left beside that if less (other processes, a MIG slice), in both cases less
    :data:`LAZY_LOAD_SLACK_BYTES`. Where the limit is the card's free memory (the default budget)
    the two agree, and nothing is counted twice. :meth:`start` caps the warm-up so (with the bare
    context measured), so that the allocator's typed out-of-memory comes before a library's own
    allocation fails; :meth:`end_warmup` measures again, sets the cap for the measured steps, and
    resets the peaks and the retry count, so one-time transients (cuDNN's algorithm search sizes its
    scratch from the device's free memory) stay in the warm-up peak. What runs outside the
    allocator is told apart from other processes by NVML's count before this process's context
    (:func:`note_memory_before_context`); where NVML cannot tell, all of it counts as this
    process's. CPU: the growth of the resident set over the baseline taken at ``start`` is sampled
    for the whole probe; going over ``limit_bytes`` calls ``on_exceed`` (the CPU's OOM).
    """

    def __init__(
        self,
        device: torch.device,
        limit_bytes: int,
        on_exceed: Callable[[int], None] | None = None,
    ) -> None:
        self.device = device
        self.requested_bytes = limit_bytes
        self.limit_bytes = limit_bytes  # the cap in force
        self.cap_bound = "limit"
        self.on_exceed = on_exceed
        self.baseline_bytes = 0
        self.overhead_bytes = 0
        self.total_bytes = 0
        self.warmup_reserved_bytes = 0
        self.watcher: PeakWatcher | None = None

    def start(self) -> None:
        global _current
        _current = self
        if self.device.type == "cuda":
            index = self.device.index or 0
            note_memory_before_context(index)
            create_context(self.device)
            self._cap_beside_outside()
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

    def _cap(self, limit_bytes: int) -> None:
        self.limit_bytes = max(0, int(limit_bytes))
        torch.cuda.set_per_process_memory_fraction(min(1.0, self.limit_bytes / self.total_bytes), self.device)

    def _outside_bytes(self, free: int, total: int, reserved: int) -> int:
        """What this process holds on the device outside the allocator (all of what is in use
        outside it where NVML cannot tell this process from others)."""
        outside = total - free - reserved
        before = _used_before_context.get(self.device.index or 0)
        now = device_memory_used(self.device.index or 0) if before is not None else None
        if before is None or now is None:
            return outside
        return max(0, min(outside, now - before - reserved))

    def _cap_beside_outside(self) -> None:
        """Measure what runs outside the allocator and cap it: the limit less this process's share
        of that, or what the device has left, whichever is smaller, less the slack."""
        free, total = torch.cuda.mem_get_info(self.device)
        reserved = torch.cuda.memory_reserved(self.device)
        self.total_bytes = total
        self.overhead_bytes = self._outside_bytes(free, total, reserved)
        as_card = self.requested_bytes - self.overhead_bytes
        on_device = free + reserved
        self.cap_bound = "limit" if as_card <= on_device else "device"
        self._cap(min(as_card, on_device) - LAZY_LOAD_SLACK_BYTES)

    def end_warmup(self) -> None:
        """The warm-up is over: keep its peak, set the cap for the measured steps, reset the stats."""
        if self.device.type != "cuda":
            self.warmup_reserved_bytes = max(
                self.watcher.peak_bytes if self.watcher else 0, self._high_water()
            )
            return
        torch.cuda.synchronize(self.device)
        self.warmup_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
        torch.cuda.empty_cache()  # the algorithm search's scratch, and what the warm-up cached
        self._cap_beside_outside()
        torch.cuda.reset_peak_memory_stats(self.device)
        torch.cuda.reset_accumulated_memory_stats(self.device)

    def check(self) -> None:
        """Take a sample now (CPU); raises nothing itself, the watcher's callback decides."""
        if self.watcher is not None:
            self.watcher.sample()

    def _high_water(self) -> int:
        # The kernel's exact high-water mark of this process's memory (VmHWM); it catches spikes
        # between samples.
        return peak_rss_bytes() - self.baseline_bytes

    def peak(self) -> MemoryPeak:
        """The peak since the warm-up ended (CUDA) or since ``start`` (CPU, where the warm-up,
        without optimizer state yet, never peaks above the measured steps)."""
        if self.device.type == "cuda":
            stats = torch.cuda.memory_stats(self.device)
            return MemoryPeak(
                allocated_bytes=int(stats.get("allocated_bytes.all.peak", 0)),
                reserved_bytes=int(stats.get("reserved_bytes.all.peak", 0)),
                alloc_retries=int(stats.get("num_alloc_retries", 0)),
                limit_bytes=self.limit_bytes,
                overhead_bytes=self.overhead_bytes,
                warmup_reserved_bytes=self.warmup_reserved_bytes,
                cap_bound=self.cap_bound,
            )
        sampled = self.watcher.stop() if self.watcher is not None else 0
        peak = max(sampled, self._high_water())
        return MemoryPeak(
            allocated_bytes=peak,
            reserved_bytes=peak,
            alloc_retries=0,
            limit_bytes=self.limit_bytes,
            warmup_reserved_bytes=self.warmup_reserved_bytes,
        )


_current: MemoryMeter | None = None  # the meter of this probe child, once started


def current_cap() -> dict[str, Any]:
    """The cap and the overhead of this child's meter, for a result that an error cut short."""
    if _current is None:
        return {}
    return {
        "memory_cap_bytes": _current.limit_bytes,
        "device_overhead_bytes": _current.overhead_bytes,
        "memory_cap_bound": _current.cap_bound if _current.device.type == "cuda" else "",
    }


def measured_fields(peak: MemoryPeak, times: list[float], warmup_steps: int, samples_per_step: int) -> dict:
    """A finished probe's ``ProbeResult`` fields from its meter's peak and its measured step times:
    over the budget is out of memory (a CPU's budget is checked here, CUDA's by the allocator)."""
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
        "memory_cap_bytes": peak.limit_bytes,
        "memory_cap_bound": peak.cap_bound,
        "warmup_peak_reserved_bytes": peak.warmup_reserved_bytes,
        "warmup_steps": warmup_steps,
        "step_time_s": median,
        "samples_per_s": samples_per_step / median if median > 0 else 0.0,
        "steps": len(times),
        "step_times_s": times,
    }
