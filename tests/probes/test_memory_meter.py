"""The CUDA memory meter, driven by a fake of the device and its caching allocator: the cap leaves
room for what the allocator does not count (measured after warm-up), the child reports the cap it
really had, and the measured peak and retry count leave out the warm-up's one-time transients."""

from __future__ import annotations

import mmap

import pytest
import torch

from probes import device as device_module
from probes.device import LAZY_LOAD_SLACK_BYTES, MemoryMeter

GiB = 1024**3
MiB = 1024**2
CUDA = torch.device("cuda", 0)


class FakeCuda:
    """A device of ``total`` bytes and its caching allocator, as ``torch.cuda`` reports them.

    ``outside`` is memory in use outside the allocator (context, libraries, other processes);
    ``cached`` what the allocator holds beyond what is allocated, which ``empty_cache`` returns.
    """

    def __init__(self, total: int, outside: int) -> None:
        self.total, self.outside = total, outside
        self.allocated = self.cached = 0
        self.peak_allocated = self.peak_reserved = self.retries = 0
        self.fractions: list[float] = []

    @property
    def reserved(self) -> int:
        return self.allocated + self.cached

    def step(self, *, transient: int = 0, keep: int = 0, retries: int = 0, libraries: int = 0) -> None:
        """One training step: ``keep`` bytes allocated for good (weights, optimizer state), then
        ``transient`` bytes at its peak (reusing the cache, growing it), freed into the cache;
        ``libraries`` loaded outside the allocator."""
        self.outside += libraries
        self.allocated += keep
        self.cached = max(self.cached, transient)
        self.peak_allocated = max(self.peak_allocated, self.allocated + transient)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.retries += retries

    # What probes.device calls.
    def mem_get_info(self, device: object = None) -> tuple[int, int]:
        return self.total - self.outside - self.reserved, self.total

    def memory_reserved(self, device: object = None) -> int:
        return self.reserved

    def max_memory_reserved(self, device: object = None) -> int:
        return self.peak_reserved

    def set_per_process_memory_fraction(self, fraction: float, device: object = None) -> None:
        self.fractions.append(fraction)

    def empty_cache(self) -> None:
        self.cached = 0

    def reset_peak_memory_stats(self, device: object = None) -> None:
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def reset_accumulated_memory_stats(self, device: object = None) -> None:
        self.retries = 0

    def memory_stats(self, device: object = None) -> dict[str, int]:
        return {
            "allocated_bytes.all.peak": self.peak_allocated,
            "reserved_bytes.all.peak": self.peak_reserved,
            "num_alloc_retries": self.retries,
        }

    def synchronize(self, device: object = None) -> None:
        pass


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda(total=80 * GiB, outside=512 * MiB)  # the CUDA context, once created
    for name in (
        "mem_get_info",
        "memory_reserved",
        "max_memory_reserved",
        "set_per_process_memory_fraction",
        "empty_cache",
        "reset_peak_memory_stats",
        "reset_accumulated_memory_stats",
        "memory_stats",
        "synchronize",
    ):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(device_module, "create_context", lambda device: None)
    return fake


def warm_up(fake: FakeCuda) -> None:
    """The first step: cuBLAS and cuDNN load (900 MiB outside the allocator), cuDNN's algorithm
    search takes 30 GiB of scratch, sized from the free memory, and retries twice; AdamW's state
    and the weights stay."""
    fake.step(transient=30 * GiB, keep=2 * GiB, retries=2, libraries=900 * MiB)


def test_without_a_limit_the_cap_leaves_what_runs_outside_the_allocator_measured_after_warm_up(
    fake_cuda: FakeCuda,
) -> None:
    asked = 80 * GiB  # the card's free memory before the child started (the default budget)
    meter = MemoryMeter(CUDA, asked)
    meter.start()
    assert meter.limit_bytes == 80 * GiB - 512 * MiB  # the first step runs with every free byte
    warm_up(fake_cuda)
    meter.end_warmup()

    outside = 512 * MiB + 900 * MiB  # context, then cuBLAS and cuDNN
    assert meter.overhead_bytes == outside
    assert meter.limit_bytes == 80 * GiB - outside - LAZY_LOAD_SLACK_BYTES
    assert fake_cuda.fractions[-1] == pytest.approx(meter.limit_bytes / (80 * GiB))


def test_an_explicit_limit_below_the_free_memory_is_the_cap(fake_cuda: FakeCuda) -> None:
    meter = MemoryMeter(CUDA, 12 * GiB)
    meter.start()
    warm_up(fake_cuda)
    meter.end_warmup()
    assert meter.limit_bytes == 12 * GiB
    assert fake_cuda.fractions == [12 / 80, 12 / 80]


def test_a_limit_above_what_the_device_has_reports_the_cap_it_really_had(fake_cuda: FakeCuda) -> None:
    fake_cuda.outside += 40 * GiB  # another process (or a MIG slice of half the card)
    meter = MemoryMeter(CUDA, 80 * GiB)
    meter.start()
    warm_up(fake_cuda)
    meter.end_warmup()
    fake_cuda.step(transient=10 * GiB)
    peak = meter.peak()
    assert peak.limit_bytes == 80 * GiB - 40 * GiB - 512 * MiB - 900 * MiB - LAZY_LOAD_SLACK_BYTES
    assert peak.overhead_bytes == 40 * GiB + 512 * MiB + 900 * MiB


def test_the_measured_peak_and_retries_leave_out_the_warm_ups_transients(fake_cuda: FakeCuda) -> None:
    meter = MemoryMeter(CUDA, 24 * GiB)
    meter.start()
    warm_up(fake_cuda)
    meter.end_warmup()
    for _ in range(3):
        fake_cuda.step(transient=6 * GiB)  # activations, freed and cached again each step
    peak = meter.peak()
    assert peak.reserved_bytes == 2 * GiB + 6 * GiB
    assert peak.alloc_retries == 0
    assert peak.warmup_reserved_bytes == 32 * GiB  # kept apart, cuDNN's search included


def test_retries_in_the_measured_steps_still_count(fake_cuda: FakeCuda) -> None:
    meter = MemoryMeter(CUDA, 24 * GiB)
    meter.start()
    warm_up(fake_cuda)
    meter.end_warmup()
    fake_cuda.step(transient=20 * GiB, retries=1)
    assert meter.peak().alloc_retries == 1


def test_a_cpu_probe_keeps_its_warm_up_peak_apart_and_its_budget_as_the_cap() -> None:
    meter = MemoryMeter(torch.device("cpu"), 2 * GiB)
    meter.start()
    held = mmap.mmap(-1, 16 * MiB)  # 16 MiB touched during warm-up, fresh pages whatever malloc holds
    for offset in range(0, 16 * MiB, 4096):
        held[offset] = 1
    meter.check()
    meter.end_warmup()
    held.close()
    peak = meter.peak()
    assert peak.limit_bytes == 2 * GiB
    assert 12 * MiB < peak.warmup_reserved_bytes <= peak.reserved_bytes


def test_a_childs_peak_is_its_own_not_its_large_parents() -> None:
    import subprocess
    import sys

    from probes.memory import peak_rss_bytes

    ballast = bytearray(300 * 1024**2)  # this process now holds 300 MiB more
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run(
        [sys.executable, "-c", "from probes.memory import peak_rss_bytes; print(peak_rss_bytes())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    # ru_maxrss would report at least the parent's size here; VmHWM is the child's own.
    assert int(child.stdout) < 200 * 1024**2 < peak_rss_bytes(), (int(child.stdout), peak_rss_bytes())
    del ballast
