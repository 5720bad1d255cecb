"""Peak memory as a line in the batch size, and the budget the probes really had."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from probes.protocol import ProbeResult

# The search's upper bound unless told otherwise; also the maximum a line that does not grow predicts.
DEFAULT_MAX_BATCH = 8192


@dataclass
class MemoryFit:
    """Peak memory as ``fixed_bytes + per_sample_bytes * batch``, fitted to fitting probes."""

    fixed_bytes: float
    per_sample_bytes: float
    points: int
    max_rel_error: float = 0.0

    def predict(self, batch_size: float) -> float:
        return self.fixed_bytes + self.per_sample_bytes * batch_size

    def max_batch_under(self, budget_bytes: float) -> int:
        """The largest batch whose predicted peak stays within ``budget_bytes`` (0 if none)."""
        if self.per_sample_bytes <= 0:
            return DEFAULT_MAX_BATCH
        return max(0, math.floor((budget_bytes - self.fixed_bytes) / self.per_sample_bytes))


def fit_memory(points: Sequence[tuple[int, float]]) -> MemoryFit | None:
    """Least-squares line through ``(batch_size, peak_bytes)``; None with fewer than two sizes."""
    sizes = {b for b, _ in points}
    if len(sizes) < 2:
        return None
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_p = sum(p for _, p in points) / n
    var = sum((b - mean_b) ** 2 for b, _ in points)
    cov = sum((b - mean_b) * (p - mean_p) for b, p in points)
    slope = cov / var
    fixed = mean_p - slope * mean_b
    fit = MemoryFit(fixed_bytes=fixed, per_sample_bytes=slope, points=n)
    fit.max_rel_error = max(abs(fit.predict(b) - p) / p for b, p in points if p > 0)
    return fit


def effective_budget(probes: Sequence[ProbeResult], asked_bytes: int) -> int:
    """The budget the probes really had: the smallest allocator cap they reported, where less than
    ``asked_bytes`` (a probe that reports none, 0, leaves it as asked)."""
    caps = [p.memory_cap_bytes for p in probes if p.memory_cap_bytes > 0]
    return min([asked_bytes, *caps])
