"""Everything that touches ``torch.cuda``: device selection, memory caps, peaks and OOM detection.

The rest of autotune never calls ``torch.cuda`` directly, and only probe children import this.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from probes.memory import PeakWatcher, peak_rss_bytes, rss_bytes

MiB = 1024**2
# After warm-up the allocator's cap leaves free what was measured outside it (the CUDA context,
# cuBLAS and cuDNN handles, the kernels loaded so far, other processes) and this much more, for
# kernels that load lazily in later steps (a shape the warm-up did not see).
LAZY_LOAD_SLACK_BYTES = 128 * MiB

# Where CUDA's libraries say, as a RuntimeError's text, that the device ran out of memory. Only an
# error of a known type or one of these texts counts: any other error stops the run.
OOM_TEXTS = (
    # The CUDA runtime's cudaErrorMemoryAllocation ("out of memory"), raised by PyTorch's
    # C10_CUDA_CHECK as torch.AcceleratorError (a RuntimeError before torch 2.8): a kernel module
    # that loads lazily, a stream, an event or a library's own cudaMalloc found no memory.
    "CUDA error: out of memory",
    # cuBLAS could not allocate its scratch (cublasStatus_t, via PyTorch's TORCH_CUDABLAS_CHECK).
    "CUBLAS_STATUS_ALLOC_FAILED",
    # cuDNN 9's statuses for a failed device or host allocation (cuDNN 8's CUDNN_STATUS_ALLOC_FAILED
    # no longer exists), via PyTorch's AT_CUDNN_CHECK ("cuDNN error: ...").
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    # PyTorch's cuDNN convolution (aten/src/ATen/native/cudnn/Conv_v8.cpp) once every candidate
    # plan failed, which near the limit means every plan's workspace failed to allocate: FIND with
    # cudnn.benchmark (what LeRobot turns on), GET without.
    "FIND was unable to find an engine",
    "GET was unable to find an engine",
)
# cuBLAS handle creation with no memory left (cublasCreate / cublasLtCreate, on the first matrix
# product of a stream): PyTorch's TORCH_CUDABLAS_CHECK says "CUBLAS_STATUS_NOT_INITIALIZED when
# calling `cublasCreate(handle)`".
CUBLAS_CREATE_FAILED = re.compile(r"CUBLAS_STATUS_NOT_INITIALIZED when calling `?cublas(Lt)?Create\(")
CUDA_ERROR_MEMORY_ALLOCATION = 2  # cudaErrorMemoryAllocation, torch.AcceleratorError.error_code


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
    """True for every form an out-of-memory takes: the allocator's typed error first, then the
    CUDA runtime's, cuBLAS's and cuDNN's (see :data:`OOM_TEXTS`)."""
    if isinstance(exc, (torch.OutOfMemoryError, HostMemoryExceeded)):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch 2.8 and newer
    if (
        accelerator_error is not None
        and isinstance(exc, accelerator_error)
        and getattr(exc, "error_code", None) == CUDA_ERROR_MEMORY_ALLOCATION
    ):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(t in text for t in OOM_TEXTS) or CUBLAS_CREATE_FAILED.search(text) is not None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def create_context(device: torch.device) -> None:
    """Create the CUDA context on ``device`` (one tiny allocation), so free memory can be read."""
    torch.cuda.init()
    torch.empty(1, device=device)


@dataclass
class MemoryPeak:
    allocated_bytes: int
    reserved_bytes: int
    alloc_retries: int
    limit_bytes: int  # the cap the measured steps ran under
    overhead_bytes: int = 0
    warmup_reserved_bytes: int = 0  # the warm-up's own peak (cuDNN's algorithm search included)


class MemoryMeter:
    """Holds a probe to ``limit_bytes`` and measures its peak, the warm-up's apart.

    CUDA: the caching allocator is capped with ``set_per_process_memory_fraction``, so a smaller
    limit behaves like a smaller card. The warm-up runs as the real training's first steps do,
    with at most the free memory; :meth:`end_warmup` then measures what runs outside the allocator
    (context, cuBLAS, cuDNN, loaded kernels, other processes), caps the allocator at the limit or at
    what is left beside that (less :data:`LAZY_LOAD_SLACK_BYTES`), whichever is smaller, and resets
    the peaks and the retry count, so one-time transients (cuDNN's algorithm search sizes its
    scratch from the device's free memory) stay in the warm-up peak. CPU: the growth of the
    resident set over the baseline taken at ``start`` is sampled for the whole probe; going over
    ``limit_bytes`` calls ``on_exceed`` (the CPU's OOM).
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
            create_context(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            self.total_bytes = total
            self.overhead_bytes = total - free - torch.cuda.memory_reserved(self.device)
            self._cap(min(self.requested_bytes, free))
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
        free, total = torch.cuda.mem_get_info(self.device)
        reserved = torch.cuda.memory_reserved(self.device)
        self.overhead_bytes = total - free - reserved
        self._cap(min(self.requested_bytes, free + reserved - LAZY_LOAD_SLACK_BYTES))
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


def current_cap() -> dict[str, int]:
    """The cap and the overhead of this child's meter, for a result that an error cut short."""
    if _current is None:
        return {}
    return {"memory_cap_bytes": _current.limit_bytes, "device_overhead_bytes": _current.overhead_bytes}


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
        "warmup_peak_reserved_bytes": peak.warmup_reserved_bytes,
        "warmup_steps": warmup_steps,
        "step_time_s": median,
        "samples_per_s": samples_per_step / median if median > 0 else 0.0,
        "steps": len(times),
        "step_times_s": times,
    }
