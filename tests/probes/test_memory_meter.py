"""The CUDA memory meter, driven by a fake of the device and its caching allocator: a limit behaves
like a card of that size (what this process holds outside the allocator comes off it, measured at
the start and after warm-up, with room for kernels that load later), the default budget (the card's
free memory) is not counted twice, other processes are told apart by NVML's count before the
context, the child reports the cap it really had and which bound set it, and the measured peak and
retry count leave out the warm-up's one-time transients."""

from __future__ import annotations

import mmap

import pytest
import torch

from probes import device as device_module
from probes.device import LAZY_LOAD_SLACK_BYTES, MemoryMeter

GiB = 1024**3
MiB = 1024**2
CUDA = torch.device("cuda", 0)
CONTEXT = 512 * MiB  # the CUDA context, once created
LIBRARIES = 900 * MiB  # cuBLAS and cuDNN, loaded in the first step
DRIVER = 300 * MiB  # what NVML counts as used on an idle card (and CUDA's total leaves out)


class FakeCuda:
    """A device of ``total`` bytes and its caching allocator, as ``torch.cuda`` and NVML report them.

    ``outside`` is what this process holds outside the allocator (context, libraries), ``others``
    what other processes hold; ``cached`` what the allocator holds beyond what is allocated, which
    ``empty_cache`` returns. ``nvml`` False: NVML cannot tell (not installed, a MIG set-up).
    """

    def __init__(self, total: int, others: int = 0, nvml: bool = True) -> None:
        self.total, self.others, self.nvml = total, others, nvml
        self.outside = 0
        self.allocated = self.cached = 0
        self.peak_allocated = self.peak_reserved = self.retries = 0
        self.fractions: list[float] = []

    @property
    def reserved(self) -> int:
        return self.allocated + self.cached

    def create_context(self, device: object = None) -> None:
        if not self.outside:
            self.outside = CONTEXT

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

    def free(self) -> int:
        return self.total - self.others - self.outside - self.reserved

    # What probes.device calls.
    def device_memory_used(self, index: int) -> int | None:
        return DRIVER + self.others + self.outside + self.reserved if self.nvml else None

    def mem_get_info(self, device: object = None) -> tuple[int, int]:
        return self.free(), self.total

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

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
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
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: self.outside > 0)
        monkeypatch.setattr(device_module, "create_context", self.create_context)
        monkeypatch.setattr(device_module, "device_memory_used", self.device_memory_used, raising=False)
        monkeypatch.setattr(device_module, "_used_before_context", {}, raising=False)
        return self


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    return FakeCuda(total=80 * GiB).install(monkeypatch)


def warm_up(fake: FakeCuda) -> None:
    """The first step: cuBLAS and cuDNN load outside the allocator, cuDNN's algorithm search takes
    30 GiB of scratch, sized from the free memory, and retries twice; AdamW's state and the weights
    stay."""
    fake.step(transient=30 * GiB, keep=2 * GiB, retries=2, libraries=LIBRARIES)


def test_without_a_limit_the_cap_leaves_what_runs_outside_the_allocator_measured_after_warm_up(
    fake_cuda: FakeCuda,
) -> None:
    asked = 80 * GiB  # the card's free memory before the child started (the default budget)
    meter = MemoryMeter(CUDA, asked)
    meter.start()
    # The first step runs with every free byte less the slack, so that the allocator's own typed
    # out-of-memory comes before a library's allocation fails.
    assert meter.limit_bytes == 80 * GiB - CONTEXT - LAZY_LOAD_SLACK_BYTES
    warm_up(fake_cuda)
    meter.end_warmup()

    outside = CONTEXT + LIBRARIES
    assert meter.overhead_bytes == outside
    assert meter.limit_bytes == 80 * GiB - outside - LAZY_LOAD_SLACK_BYTES
    assert fake_cuda.fractions[-1] == pytest.approx(meter.limit_bytes / (80 * GiB))


def test_the_warm_up_is_capped_at_the_free_memory_less_the_slack(fake_cuda: FakeCuda) -> None:
    # Asked for more than the device has free: the warm-up's cap is what is free, less the slack
    # (today's code capped it at the free memory itself, leaving libraries nothing).
    fake_cuda.others = 20 * GiB
    meter = MemoryMeter(CUDA, 80 * GiB)
    meter.start()
    assert meter.limit_bytes == fake_cuda.free() - LAZY_LOAD_SLACK_BYTES
    assert meter.cap_bound == "device"


def test_a_limit_behaves_like_a_card_of_that_size(fake_cuda: FakeCuda) -> None:
    meter = MemoryMeter(CUDA, 24 * GiB)
    meter.start()
    assert meter.limit_bytes == 24 * GiB - CONTEXT - LAZY_LOAD_SLACK_BYTES
    warm_up(fake_cuda)
    meter.end_warmup()
    # A 24 GiB card holds the context and the libraries too: they come off the allocator's cap.
    assert meter.limit_bytes == 24 * GiB - CONTEXT - LIBRARIES - LAZY_LOAD_SLACK_BYTES
    assert meter.peak().cap_bound == "limit"
    assert fake_cuda.fractions[-1] == pytest.approx(meter.limit_bytes / (80 * GiB))


def test_other_processes_on_the_card_do_not_come_off_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda(total=80 * GiB, others=30 * GiB).install(monkeypatch)  # a colleague's job
    meter = MemoryMeter(CUDA, 24 * GiB)
    meter.start()
    warm_up(fake)
    meter.end_warmup()
    assert meter.overhead_bytes == CONTEXT + LIBRARIES  # this process's own, told apart by NVML
    assert meter.limit_bytes == 24 * GiB - CONTEXT - LIBRARIES - LAZY_LOAD_SLACK_BYTES


def test_the_default_budget_is_not_counted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda(total=80 * GiB, others=10 * GiB).install(monkeypatch)
    asked = fake.free()  # the default budget: the card's free memory before the child started
    meter = MemoryMeter(CUDA, asked)
    meter.start()
    warm_up(fake)
    meter.end_warmup()
    # The free memory already leaves out the other processes: only this process's own outside
    # memory comes off, once.
    assert meter.limit_bytes == asked - CONTEXT - LIBRARIES - LAZY_LOAD_SLACK_BYTES
    assert meter.limit_bytes == fake.free() + fake.reserved - LAZY_LOAD_SLACK_BYTES


def test_without_nvml_everything_outside_the_allocator_counts_as_the_processs_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCuda(total=80 * GiB, others=10 * GiB, nvml=False).install(monkeypatch)
    meter = MemoryMeter(CUDA, 24 * GiB)
    meter.start()
    warm_up(fake)
    meter.end_warmup()
    assert meter.overhead_bytes == 10 * GiB + CONTEXT + LIBRARIES
    assert meter.limit_bytes == 24 * GiB - meter.overhead_bytes - LAZY_LOAD_SLACK_BYTES


def test_a_limit_above_what_the_device_has_reports_the_cap_it_really_had(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCuda(total=80 * GiB, others=40 * GiB).install(monkeypatch)  # or a MIG slice of half
    meter = MemoryMeter(CUDA, 80 * GiB)
    meter.start()
    warm_up(fake)
    meter.end_warmup()
    fake.step(transient=10 * GiB)
    peak = meter.peak()
    assert peak.limit_bytes == 80 * GiB - 40 * GiB - CONTEXT - LIBRARIES - LAZY_LOAD_SLACK_BYTES
    assert peak.overhead_bytes == CONTEXT + LIBRARIES
    assert peak.cap_bound == "device"


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
