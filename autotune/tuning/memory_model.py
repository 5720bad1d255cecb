"""Peak memory against batch size, fitted from the probes, and predictions for other budgets.

The model is ``peak = fixed_bytes + per_sample_bytes x batch`` (least squares over the probes that
fitted), with standard errors from the residuals. Near the limit the allocator cannot use every
byte (fragmentation, rounding, cuDNN workspaces): the search's certified maximum measures how much
of the budget was unusable, and predictions subtract the same. The budget is the allocator cap the
probes reported (``SearchOutcome.budget_bytes``), so what the allocator never sees is not in it. On
CUDA that memory (the CUDA context, cuBLAS, cuDNN and loaded kernels, other processes) is measured
after each probe's warm-up and subtracted, once, from a card's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autotune.tuning.memory_fit import MemoryFit, fit_memory
from autotune.tuning.search import SearchOutcome


@dataclass
class MemoryModel:
    fixed_bytes: float
    per_sample_bytes: float
    fixed_stderr_bytes: float
    per_sample_stderr_bytes: float
    points: int
    budget_bytes: int  # the allocator cap it was measured under
    measured_max_batch: int
    near_limit_unusable_bytes: float  # budget the allocator could not use at the maximum
    device_overhead_bytes: int  # CUDA context, libraries, other processes: outside the allocator's cap
    raw_prediction_error: float  # (fit-only prediction - measured max) / measured max, at the budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryModel:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class Prediction:
    memory_bytes: int
    usable_bytes: float
    max_batch: int
    max_batch_low: int
    max_batch_high: int
    recommended_batch: int


def _stderrs(points: list[tuple[int, float]], fit: MemoryFit) -> tuple[float, float]:
    """Standard errors of the fitted fixed cost and per-sample cost (0 with two points)."""
    n = len(points)
    if n <= 2:
        return 0.0, 0.0
    mean_b = sum(b for b, _ in points) / n
    sxx = sum((b - mean_b) ** 2 for b, _ in points)
    ssr = sum((p - fit.predict(b)) ** 2 for b, p in points)
    s = math.sqrt(ssr / (n - 2))
    return s * math.sqrt(1 / n + mean_b**2 / sxx), s / math.sqrt(sxx)


def fit_model(
    search: SearchOutcome, device_overhead_bytes: int = 0, more: Sequence[tuple[int, float]] = ()
) -> MemoryModel | None:
    """The memory model from a search's fitting probes and ``more`` (batch size, peak) points of
    the same variant (the throughput probes: a search started from the estimate may certify its
    maximum having fitted at one size only); None with fewer than two sizes."""
    points = [
        (p.batch_size, float(p.peak_reserved_bytes)) for p in search.fitting if p.peak_reserved_bytes > 0
    ] + [(b, float(peak)) for b, peak in more if peak > 0]
    if len({b for b, _ in points}) < 2 or search.max_batch < 1:
        return None
    fit = fit_memory(points)
    if fit is None or fit.per_sample_bytes <= 0:
        return None
    fixed, slope = fit.fixed_bytes, fit.per_sample_bytes
    se_fixed, se_slope = _stderrs(points, fit)
    budget = search.budget_bytes
    raw_max = math.floor((budget - fixed) / slope)
    # At the certified maximum the next sample did not fit: the limit lies between max and max+1. A
    # maximum bounded otherwise (--max-batch, a kernel's limit) says nothing of the memory left.
    unusable = max(0.0, budget - (fixed + slope * (search.max_batch + 0.5))) if search.certified else 0.0
    return MemoryModel(
        fixed_bytes=fixed,
        per_sample_bytes=slope,
        fixed_stderr_bytes=se_fixed,
        per_sample_stderr_bytes=se_slope,
        points=len(points),
        budget_bytes=budget,
        measured_max_batch=search.max_batch,
        near_limit_unusable_bytes=unusable,
        device_overhead_bytes=device_overhead_bytes,
        raw_prediction_error=(raw_max - search.max_batch) / search.max_batch,
    )


def predict(model: MemoryModel, memory_bytes: int, headroom: float, *, card: bool) -> Prediction:
    """Predicted maximum and recommended batch for ``memory_bytes``.

    ``card=True`` reads ``memory_bytes`` as a GPU's total memory (the CUDA context comes off it);
    ``card=False`` as an allocator budget, like ``--memory-limit``.
    """
    usable = float(memory_bytes) - (model.device_overhead_bytes if card else 0)
    effective = usable - model.near_limit_unusable_bytes

    def at(fixed: float, slope: float, budget: float) -> int:
        return max(0, math.floor((budget - fixed) / slope)) if slope > 0 else 0

    best = at(model.fixed_bytes, model.per_sample_bytes, effective)
    spread_fixed = 2 * model.fixed_stderr_bytes
    spread_slope = 2 * model.per_sample_stderr_bytes
    low = at(model.fixed_bytes + spread_fixed, model.per_sample_bytes + spread_slope, effective)
    high = at(model.fixed_bytes - spread_fixed, max(model.per_sample_bytes - spread_slope, 1e-9), effective)
    recommended = at(model.fixed_bytes, model.per_sample_bytes, (1 - headroom) * usable)
    return Prediction(
        memory_bytes=memory_bytes,
        usable_bytes=usable,
        max_batch=best,
        max_batch_low=min(low, best),
        max_batch_high=max(high, best),
        recommended_batch=min(recommended, best),
    )
