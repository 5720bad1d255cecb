"""Other tools' batch-size searches, re-implemented over the same probe for comparison.

- Lightning's ``binsearch`` mode: start at 2, double until out of memory, then bisect.
- Accelerate's ``find_executable_batch_size``: start high, halve on every out of memory, and take
  the first size that runs (not the largest that fits).
"""

from __future__ import annotations

from autotune.errors import ProbeError
from autotune.tuning.search import DEFAULT_MAX_BATCH, ProbeFn, SearchOutcome
from probes.protocol import ProbeResult


def _checked(probe: ProbeFn, size: int, log: list[ProbeResult]) -> bool:
    result = probe(size)
    log.append(result)
    if result.status not in ("ok", "oom"):
        raise ProbeError(f"probe at batch {size} ended with {result.status}: {result.message}")
    return result.fits


def lightning_binsearch(
    probe: ProbeFn, budget_bytes: int, *, start: int = 2, max_batch: int = DEFAULT_MAX_BATCH
) -> SearchOutcome:
    """Double from ``start`` until a probe runs out of memory, then bisect to the exact maximum."""
    log: list[ProbeResult] = []
    low, high = 0, None
    size = start
    while True:
        if _checked(probe, size, log):
            low = size
            if high is None:
                if size >= max_batch:
                    break
                size = min(size * 2, max_batch)
                continue
        else:
            high = size
        if high - low <= 1:
            break
        size = (low + high) // 2
    # Doubling from 2 never looks below 2: if 2 ran out of memory, walk down to 1 as Lightning's
    # caller would have to.
    if low == 0 and high == start and start > 1:
        if _checked(probe, 1, log):
            low = 1
        high = min(high, 2) if low == 1 else 1
    return SearchOutcome(
        max_batch=low,
        certified=high is not None and high == low + 1,
        capped=high is None,
        budget_bytes=budget_bytes,
        probes=log,
    )


def accelerate_shrink(probe: ProbeFn, budget_bytes: int, *, start: int = 128) -> SearchOutcome:
    """Halve from ``start`` on every out of memory; the first size that runs is the answer."""
    log: list[ProbeResult] = []
    size = start
    while size >= 1:
        if _checked(probe, size, log):
            return SearchOutcome(
                max_batch=size,
                certified=False,
                capped=size == start,
                budget_bytes=budget_bytes,
                probes=log,
            )
        size //= 2
    return SearchOutcome(max_batch=0, certified=False, capped=False, budget_bytes=budget_bytes, probes=log)
