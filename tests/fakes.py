"""Fake probes with known memory curves, for testing the search's logic without a model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from probes.protocol import ProbeResult

MiB = 1024**2
GiB = 1024**3


@dataclass
class FakeProbe:
    """Answers ``ok`` below the budget and ``oom`` above, from a memory curve; counts calls.

    Also the probe of benchmarks/search_strategies.py, which gives it ``steps`` and ``startup_s`` to
    simulate the time a real probe takes (``wall_s``)."""

    curve: Callable[[int], float]
    budget_bytes: int
    calls: list[int] = field(default_factory=list)
    step_time: Callable[[int], float] = lambda b: 0.01 + 0.001 * b
    # Simulated wall time: a child's start-up, then ``steps`` steps for a size that fits (warm-up
    # included); an out-of-memory ends during the first step. 0 steps: no time (wall_s 0).
    steps: int = 0
    startup_s: float = 0.0

    def __call__(self, batch_size: int) -> ProbeResult:
        self.calls.append(batch_size)
        peak = self.curve(batch_size)
        step = self.step_time(batch_size)
        if peak > self.budget_bytes:
            return ProbeResult(
                status="oom",
                batch_size=batch_size,
                wall_s=self._wall_s(step, 1),
                message="fake out of memory",
            )
        return ProbeResult(
            status="ok",
            batch_size=batch_size,
            peak_allocated_bytes=int(peak),
            peak_reserved_bytes=int(peak),
            step_time_s=step,
            samples_per_s=batch_size / step,
            wall_s=self._wall_s(step, self.steps),
        )

    def _wall_s(self, step_s: float, steps: int) -> float:
        return self.startup_s + steps * step_s if self.steps else 0.0

    def true_max(self, upper: int = 100_000) -> int:
        best = 0
        for b in range(1, upper + 1):
            if self.curve(b) <= self.budget_bytes:
                best = b
            else:
                break
        return best


def linear(fixed: float, per_sample: float) -> Callable[[int], float]:
    return lambda b: fixed + per_sample * b


def stepped(fixed: float, per_sample: float, block: float) -> Callable[[int], float]:
    """A caching allocator's rounding: the line rounded up to whole blocks."""
    return lambda b: math.ceil((fixed + per_sample * b) / block) * block


def quadratic(fixed: float, per_sample: float, per_sample_sq: float) -> Callable[[int], float]:
    """Attention-like growth: a term in the square of the batch."""
    return lambda b: fixed + per_sample * b + per_sample_sq * b * b
