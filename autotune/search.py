"""Find the largest batch that trains within a memory budget, with few probes.

The search is a pure function over "try this batch size" (:data:`ProbeFn`), so it is tested with
fakes and runs unchanged against real probe children. Only an out-of-memory outcome steers it;
any other failure raises :class:`~autotune.errors.ProbeError`. Memory here is a probe's peak
*reserved* memory: what the budget counts (on CUDA the caching allocator's reserve, which is what
runs out; on CPU the growth of the probe's resident set).

How it saves probes: peak memory grows almost linearly with the batch (a fixed cost for weights,
gradients, optimiser state and workspace, plus activations per sample). After two small probes the
search fits that line to the measured peaks and jumps straight to the predicted limit, then
certifies it with the next size up. Each new fitting probe, being closer to the limit, sharpens the
fit. Where the curve bends (allocator rounding, attention's quadratic terms), a guard falls back to
bisection whenever a guided probe failed to halve the bracket, so the worst case stays
logarithmic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from autotune.errors import ProbeError
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

ProbeFn = Callable[[int], ProbeResult]

DEFAULT_MAX_BATCH = 8192
SECOND_PROBE = 4


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


@dataclass
class SearchOutcome:
    """The largest fitting batch, and the evidence for it."""

    max_batch: int  # 0 when even batch 1 does not fit
    certified: bool  # a probe at max_batch fitted and one at max_batch + 1 did not
    capped: bool  # stopped at the search's upper bound without running out of memory
    budget_bytes: int
    probes: list[ProbeResult] = field(default_factory=list)
    fit: MemoryFit | None = None

    @property
    def fitting(self) -> list[ProbeResult]:
        return [p for p in self.probes if p.fits]

    def result_at(self, batch_size: int) -> ProbeResult | None:
        for p in reversed(self.probes):
            if p.batch_size == batch_size:
                return p
        return None


def _local_line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Slope near the limit, and the peak at the largest fitting size.

    The slope runs from the largest fitting size to the smallest one at least half as large (or
    the next one below): local enough to follow a bending curve, long enough that allocator
    rounding between neighbouring sizes does not swamp it. If measurement noise makes that slope
    vanish, a least-squares line over the same window takes over.
    """
    by_size = sorted(dict(points).items())
    if len(by_size) < 2:
        return None
    b2, p2 = by_size[-1]
    window = [(b, p) for b, p in by_size if b * 2 >= b2]
    b1, p1 = window[0] if len(window) >= 2 else by_size[-2]
    slope = (p2 - p1) / (b2 - b1)
    if slope <= 0 and len(window) >= 3:
        fit = fit_memory(window)
        assert fit is not None
        return fit.per_sample_bytes, fit.predict(b2)
    return slope, p2


def _parabola_crossing(points: list[tuple[int, float]], budget_bytes: int, lo: int) -> int | None:
    """Where the parabola through the three largest fitting sizes reaches the budget (floor)."""
    by_size = sorted(dict(points).items())[-3:]
    if len(by_size) < 3:
        return None
    (x0, y0), (x1, y1), (x2, y2) = by_size
    # Newton's divided differences: y = y0 + d1 (x - x0) + d2 (x - x0)(x - x1).
    d01 = (y1 - y0) / (x1 - x0)
    d12 = (y2 - y1) / (x2 - x1)
    d2 = (d12 - d01) / (x2 - x0)
    a = d2
    b = d01 - d2 * (x0 + x1)
    c = y0 - d01 * x0 + d2 * x0 * x1 - budget_bytes
    if abs(a) < 1e-12:
        return None
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    roots = [(-b + sign * math.sqrt(disc)) / (2 * a) for sign in (1, -1)]
    above = [r for r in roots if r > lo]
    if not above:
        return None
    return math.floor(min(above))


def find_max_batch(
    probe: ProbeFn,
    budget_bytes: int,
    *,
    start: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_probe: Callable[[ProbeResult], None] | None = None,
) -> SearchOutcome:
    """Search the largest batch in ``[1, max_batch]`` whose probe fits ``budget_bytes``.

    Returns a certified answer (``max_batch`` fits, ``max_batch + 1`` does not) unless the
    search reached ``max_batch`` without an out-of-memory, in which case ``capped`` is set.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget must be positive, got {budget_bytes}")
    if not 1 <= start <= max_batch:
        raise ValueError(f"start batch {start} must lie in [1, {max_batch}]")

    outcome = SearchOutcome(max_batch=0, certified=False, capped=False, budget_bytes=budget_bytes)
    state = _Bracket(lo=0, hi=max_batch + 1)
    fit_points: list[tuple[int, float]] = []

    def run(size: int) -> ProbeResult:
        result = probe(size)
        outcome.probes.append(result)
        if on_probe is not None:
            on_probe(result)
        if result.status == "ok":
            state.lo = max(state.lo, size)
            if result.peak_reserved_bytes > 0:
                fit_points.append((size, float(result.peak_reserved_bytes)))
        elif result.status == "oom":
            state.hi = min(state.hi, size)
            state.seen_oom = True
        else:
            raise ProbeError(
                f"probe at batch {size} ended with {result.status}: {result.message or 'no message'}"
            )
        if state.lo >= state.hi:
            raise ProbeError(
                f"memory is not monotonic in batch size: batch {state.lo} fit but batch {state.hi} "
                "ran out of memory; another process may be using the memory"
            )
        return result

    run(start)
    while state.hi - state.lo > 1:
        candidate = _next_candidate(state, fit_points, budget_bytes)
        result = run(candidate)
        # The model overshot: it predicted a fit where memory ran out. Bisect next, so a curve
        # that bends away from the line costs at most a logarithmic number of extra probes.
        state.overshot = not result.fits and state.lo > 0
        state.overshoots += state.overshot
        log.debug("bracket [%d, %d) after probing %d", state.lo, state.hi, candidate)

    outcome.max_batch = state.lo
    outcome.capped = not state.seen_oom
    outcome.certified = state.seen_oom and state.hi == state.lo + 1
    outcome.fit = fit_memory(fit_points)
    return outcome


@dataclass
class _Bracket:
    lo: int  # largest size known to fit (0: none known yet)
    hi: int  # smallest size known not to fit (max_batch + 1: none seen yet)
    seen_oom: bool = False
    overshot: bool = False  # the last probe ran out of memory where the model predicted a fit
    overshoots: int = 0


# Far from the limit, a line fitted at small sizes is uncertain (memory curves bend upwards as the
# batch grows, on CPU more than on CUDA): aim this fraction of the way to
# its prediction, so the probe most likely fits and becomes a precise anchor next to the limit.
APPROACH = 0.8
# Never jump more than this factor past the largest size that fitted: at tiny sizes memory can
# look flat (allocator chunks hide the activations), and a near-zero slope predicts thousands.
MAX_GROWTH = 16


def _next_candidate(state: _Bracket, fit_points: list[tuple[int, float]], budget_bytes: int) -> int:
    """The next size to probe, strictly inside ``(lo, hi)``."""
    lo, hi = state.lo, state.hi
    if lo == 0:
        # Even the start size did not fit: halve towards 1.
        return max(1, hi // 2)
    bounded = state.seen_oom
    if state.overshot and hi - lo > 2:
        return (lo + hi) // 2
    line = _local_line(fit_points)
    if line is None:
        guess = (lo + hi) // 2 if bounded else max(SECOND_PROBE, lo * 4)
        return min(max(guess, lo + 1), hi - 1)
    if line[0] <= 0:
        # Memory did not grow with the batch yet (allocator chunks, noise at tiny sizes): grow as
        # far as a near-flat line would.
        guess = (lo + hi) // 2 if bounded else lo * MAX_GROWTH
        return min(max(guess, lo + 1), hi - 1)
    slope, anchor_peak = line
    predicted = lo + math.floor((budget_bytes - anchor_peak) / slope)
    if state.overshoots:
        # The curve bends away from the line: follow its curvature through the three largest
        # fitting sizes instead.
        curved = _parabola_crossing(fit_points, budget_bytes, lo)
        if curved is not None and lo < curved < hi:
            return curved
    if predicted <= lo:
        return lo + 1  # the model says lo is the maximum: certify with the next size up
    if bounded and predicted >= hi and hi - lo > 2:
        return (lo + hi) // 2  # the model contradicts a measured out-of-memory: bisect
    distance = predicted - lo
    # Approach from below when the jump is long, or once the curve has bent away from the line.
    if distance > max(16, lo // 5) or (state.overshoots and distance > 2):
        predicted = lo + max(1, math.floor(APPROACH * distance))
    return min(predicted, lo * MAX_GROWTH, hi - 1)


def recommend_batch(outcome: SearchOutcome, headroom: float) -> int:
    """The largest batch at most ``outcome.max_batch`` whose peak keeps ``headroom`` of the budget.

    Uses the measured peak where a probe ran at that size, else the fitted line.
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    if outcome.max_batch == 0:
        return 0
    limit = (1.0 - headroom) * outcome.budget_bytes
    measured = {p.batch_size: p.peak_reserved_bytes for p in outcome.fitting}
    best = 0
    for size in range(1, outcome.max_batch + 1):
        if size in measured:
            peak = float(measured[size])
        elif outcome.fit is not None:
            peak = outcome.fit.predict(size)
        else:
            continue
        if peak <= limit:
            best = size
    return max(best, 1)
