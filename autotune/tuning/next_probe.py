"""Where the batch search probes next: the first size, the guided jumps, and the guards.

How it saves probes: peak memory grows almost linearly with the batch (a fixed cost for weights,
gradients, optimiser state and workspace, plus activations per sample). After two small probes the
search fits that line to the measured peaks and jumps towards the predicted limit: 85% of the way
while the jump is long, and less the further the line is stretched past the sizes it was measured
over, since a line fitted at small sizes underestimates a curve that bends upwards. Next to the
limit it aims at the crossing itself, following the curvature through the three largest fitting
sizes where there are enough of them, and rounds to the nearer size: the maximum or the size above
it, either of which leaves one probe to certify. A long jump that ran out of memory usually missed
by little, so the next probe goes most of the way back up rather than to the middle. A probe aimed
at the crossing that ran out of memory most likely missed by the measurement's noise (on CPU a
fraction of a MiB between fresh children, as much as a sample's memory for a small model), so
where the bracket is narrow the next probe is the size just below it. Guards keep the worst case
logarithmic: bisection when guided probes keep failing to halve the bracket, galloping when the
size creeps one at a time (up where memory stays flat, down where the limit sits lower than the
models say).

Started from an estimate (``estimate=``, the line ``autotune estimate`` counts on the meta device),
the first probe goes straight to the maximum the estimate predicts, and the estimate's slope, anchored
at the measured peaks, aims the next ones until the probes span enough sizes to measure their own:
with an estimate within 5% of a straight curve, 3 or 4 probes certify it. Noise larger than a sample
(on a loaded CPU a peak repeated 2% of the budget apart) makes misses next to the limit common:
after the one retry just below a narrow miss, every further probe in that bracket stays where the
worst case needs no more probes than bisecting the bracket would (:func:`_bisection_safe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.tuning.memory_fit import MemoryFit, fit_memory

SECOND_PROBE = 4

# Far from the limit, a line fitted at small sizes is uncertain (memory curves bend upwards as the
# batch grows, on CPU more than on CUDA): aim this fraction of the way to its prediction, so the
# probe most likely fits and becomes a precise anchor next to the limit ...
APPROACH = 0.85
# ... and less far the more the line is stretched beyond the sizes it was measured over: the
# fraction is divided by (jump / span of the line) ** STRETCH_DAMPING (0.85 at 1x, 0.75 at 3.5x).
STRETCH_DAMPING = 0.1
# When such a jump still ran out of memory, it usually missed by little: try this fraction of the
# way up the bracket it left, rather than its middle.
RECOVER = 0.85
# Never jump more than this factor past the largest size that fitted: at tiny sizes memory can
# look flat (allocator chunks hide the activations), and a near-zero slope predicts thousands.
MAX_GROWTH = 16
# Guided probes that fail to halve a bounded bracket this many times in a row give way to bisection.
MAX_STALLS = 3
# A parabola is trusted where it predicts the next size down within this fraction of the peaks' span.
CURVE_CHECK = 0.01
# Next to the limit, measurement noise (on CPU a few tenths of a MiB between fresh children) can be
# as large as a sample's memory. Where the bracket is narrow, at most this fraction of the largest
# size that fitted, a probe aimed at the limit that ran out of memory is taken to have missed by
# that noise: the size just below is tried next, and then again the size below that.
NOISE_BRACKET = 1 / 3
# Started from an estimate whose maximum ran out of memory: step down by this share of it, doubled
# at every further miss (an estimate within 5% is then found below in one probe).
ESTIMATE_STEP = 0.05
# The estimate's slope is used while the fitting sizes span less than this share of the largest.
PRIOR_SPAN = 1 / 4
# A miss that leaves a bracket at most this share of the largest fitting size wide is taken for
# noise (2% of the budget is a few percent of the batch): once the retry just below a miss has
# been spent, every probe in such a bracket is kept bisection-safe (:func:`_bisection_safe`). Wider
# brackets, where the limit sits lower than the models said, keep galloping down from the miss.
GUARD_BRACKET = 1 / 8


@dataclass
class Bracket:
    """What the probes so far have bounded, and the guards that steer the next one."""

    lo: int  # largest size known to fit (0: none known yet)
    hi: int  # smallest size known not to fit (max_batch + 1: none seen yet)
    seen_oom: bool = False
    overshot: bool = False  # the last probe ran out of memory where the model predicted a fit
    overshoots: int = 0
    jumped: bool = False  # the last probe was a long jump, aimed short of the prediction
    near: bool = False  # the last probe aimed at the crossing next to the limit
    stalls: int = 0  # consecutive probes that did not halve a bounded bracket
    creeps: int = 0  # consecutive probes at lo + 1 that fitted
    sinks: int = 0  # consecutive probes at hi - 1 that ran out of memory
    prior_slope: float = 0.0  # bytes per sample an estimate predicts (0: none)
    from_estimate: bool = False  # the first probe went to the estimate's maximum
    narrow_misses: int = 0  # probes that ran out of memory in a narrow bracket
    low_misses: int = 0  # probes below the estimate's maximum that ran out of memory, none fitting yet
    retried: bool = False  # the one retry just below a narrow miss was taken
    retrying: bool = False  # the candidate now is that retry
    oom_hi: int = 0  # the smallest size that ran out of memory (0: none yet)
    hi_by_limit: bool = False  # hi is a size past a kernel's limit, not one that ran out of memory
    prior_max: int = 0  # the maximum the estimate predicts (0: no estimate)

    def after_probe(self, before: tuple[int, int], bounded: bool, candidate: int, fits: bool) -> None:
        """Count the guards after a probe at ``candidate``, the bracket having been ``before`` (and
        ``bounded`` where an out-of-memory had been seen)."""
        # Progress guards: a bounded bracket that guided probes fail to halve, or a fitting size
        # that creeps up one at a time, switches to bisection or galloping (see _next_candidate).
        halved = 2 * (self.hi - self.lo) <= before[1] - before[0]
        self.stalls = self.stalls + 1 if bounded and not halved else 0
        self.creeps = self.creeps + 1 if fits and candidate == before[0] + 1 else 0
        self.sinks = self.sinks + 1 if not fits and candidate == before[1] - 1 else 0
        self.overshot = not fits and self.lo > 0
        self.overshoots += self.overshot
        if not fits and self.lo > 0 and self.hi - self.lo <= GUARD_BRACKET * self.lo:
            self.narrow_misses += 1


def start_bracket(
    budget_bytes: int, start: int, max_batch: int, estimate: MemoryFit | None
) -> tuple[Bracket, int]:
    """The bracket before any probe, and the first size to probe: ``start``, or where ``start`` is 1
    the maximum ``estimate`` predicts."""
    state = Bracket(lo=0, hi=max_batch + 1)
    if estimate is not None and estimate.per_sample_bytes > 0:
        state.prior_slope = estimate.per_sample_bytes
        state.prior_max = estimate.max_batch_under(budget_bytes)
        if start == 1:
            start = min(max(1, estimate.max_batch_under(budget_bytes)), max_batch)
            state.from_estimate = True
    return state, start


def next_size(state: Bracket, fit_points: list[tuple[int, float]], budget_bytes: int) -> int:
    """The next size to probe, strictly inside ``(lo, hi)``: the guided candidate, kept
    bisection-safe after a narrow miss (all but the one retry just below it)."""
    candidate = _next_candidate(state, fit_points, budget_bytes)
    if state.narrow_misses and not state.retrying:
        candidate = _bisection_safe(candidate, state.lo, state.hi)
    state.retrying = False
    return candidate


def _local_line(points: list[tuple[int, float]]) -> tuple[float, float, int] | None:
    """Slope near the limit, the peak at the largest fitting size, and the sizes the slope spans.

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
        return fit.per_sample_bytes, fit.predict(b2), b2 - window[0][0]
    return slope, p2, b2 - b1


def _parabola_crossing(points: list[tuple[int, float]], budget_bytes: int, lo: int) -> float | None:
    """Where the parabola through the three largest fitting sizes reaches the budget."""
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
    return min(above)


def _parabola_checks_out(points: list[tuple[int, float]]) -> bool:
    """Whether the parabola through the three largest sizes also predicts the size below them.

    It fails where the smallest of the three sits on a flat stretch (allocator chunks at tiny
    sizes), which exaggerates the curvature. With only three sizes there is nothing to check.
    """
    by_size = sorted(dict(points).items())
    if len(by_size) < 4:
        return True
    (xm, ym), (x0, y0), (x1, y1), (x2, y2) = by_size[-4:]
    d01 = (y1 - y0) / (x1 - x0)
    d12 = (y2 - y1) / (x2 - x1)
    d2 = (d12 - d01) / (x2 - x0)
    predicted = y0 + d01 * (xm - x0) + d2 * (xm - x0) * (xm - x1)
    return abs(predicted - ym) <= CURVE_CHECK * (y2 - ym)


def _curved_crossing(
    points: list[tuple[int, float]], budget_bytes: int, lo: int, hi: int, line_crossing: float
) -> float | None:
    """Where the budget is crossed, following the curvature; None without a usable parabola.

    A parabola that does not check out exaggerates the bend while the line ignores it: the limit
    lies between them, so take their middle.
    """
    curved = _parabola_crossing(points, budget_bytes, lo)
    if curved is None or not lo < curved < hi:
        return None
    if _parabola_checks_out(points):
        return curved
    return (curved + min(line_crossing, hi - 0.5)) / 2


def _long_secant(points: list[tuple[int, float]], lo: int, anchor: float) -> tuple[float, float, int] | None:
    """The slope from the largest fitting size at most half of ``lo`` to ``lo`` (peak ``anchor``)."""
    below = [(b, p) for b, p in sorted(dict(points).items()) if 2 * b <= lo]
    if not below:
        return None
    b1, p1 = below[-1]
    return (anchor - p1) / (lo - b1), anchor, lo - b1


def _bisection_safe(candidate: int, lo: int, hi: int) -> int:
    """The size nearest ``candidate`` inside ``(lo, hi)`` after which, fit or not, the bracket left
    is at most half the power of two that bisection would need for ``(lo, hi)``: from there on the
    worst case takes no more probes than bisecting."""
    width = hi - lo
    if width <= 2:
        return candidate
    half = 1 << (math.ceil(math.log2(width)) - 1)
    return min(max(candidate, hi - half), lo + half)


def _next_candidate(state: Bracket, fit_points: list[tuple[int, float]], budget_bytes: int) -> int:
    """The next size to probe, strictly inside ``(lo, hi)``."""
    lo, hi = state.lo, state.hi
    last_jumped, state.jumped = state.jumped, False
    last_near, state.near = state.near, False

    def inside(size: int) -> int:
        return min(max(size, lo + 1), lo * MAX_GROWTH, hi - 1)

    if lo == 0 and state.from_estimate and ESTIMATE_STEP * 2**state.low_misses < 1 / 2:
        # The estimate's maximum did not fit: step down by its likely error, then by twice that.
        step = ESTIMATE_STEP * 2**state.low_misses
        state.low_misses += 1
        return max(1, min(hi - 1, math.floor(hi * (1 - step))))
    if lo == 0:
        # Even the start size did not fit: halve towards 1.
        return max(1, hi // 2)
    bounded = state.seen_oom
    if bounded and state.stalls >= MAX_STALLS and hi - lo > 2:
        return (lo + hi) // 2  # the models keep missing: bisect, so the worst case stays logarithmic
    if state.creeps >= 2:
        return inside(lo + 2**state.creeps)  # flat memory (coarse allocator blocks): gallop
    narrow = hi - lo <= NOISE_BRACKET * lo
    if state.sinks and hi - lo > 2:
        # The crossing sits lower than the models say: gallop down from the last miss (-2, -4,
        # -8, ...; in a narrow bracket -1, -2, -4, ..., as noise makes misses by one or two common).
        return inside(hi - 2 ** (state.sinks - 1 if narrow else state.sinks))
    if state.overshot and last_jumped and hi - lo > 2:
        return lo + max(1, math.floor(RECOVER * (hi - lo)))
    if state.overshot and last_near and narrow and hi - lo > 2 and not state.retried:
        # A probe aimed at the crossing missed it narrowly: by measurement noise more likely than
        # by a bend the models missed, so the size just below is the likeliest maximum.
        state.retried = state.retrying = True
        return hi - 1
    line = _local_line(fit_points)
    anchor = dict(fit_points).get(lo)
    if (
        state.prior_slope
        and anchor is not None
        and (line is None or line[0] <= 0 or line[2] < PRIOR_SPAN * lo)
    ):
        # Too few or too close sizes to measure a slope: the estimate's, through the largest fit.
        line = (state.prior_slope, anchor, math.inf)
    elif line is not None and anchor is not None:
        longer = _long_secant(fit_points, lo, anchor)
        if longer is not None and line[0] < longer[0] / 2:
            # Memory never bends down as the batch grows: a local slope far below the longer one
            # is measurement noise over too short a span (it would aim far past the limit).
            line = longer
    if line is None:
        guess = (lo + hi) // 2 if bounded else max(SECOND_PROBE, lo * 4)
        return inside(guess)
    if line[0] <= 0:
        # Memory did not grow with the batch yet (allocator chunks, noise at tiny sizes): grow as
        # far as a near-flat line would.
        return inside((lo + hi) // 2 if bounded else lo * MAX_GROWTH)
    slope, anchor_peak, span = line
    crossing = lo + (budget_bytes - anchor_peak) / slope
    if state.overshoots:
        # The curve has bent away from the line once: follow its curvature from now on.
        curved = _curved_crossing(fit_points, budget_bytes, lo, hi, crossing)
        if curved is not None:
            return inside(math.floor(curved + 0.5))
    if bounded and crossing >= hi and hi - lo > 2:
        return (lo + hi) // 2  # the model contradicts a measured out-of-memory: bisect
    distance = crossing - lo
    if distance > max(16, lo // 3):
        # A long jump: approach from below.
        state.jumped = True
        stretch = max(1.0, distance / span)
        return inside(lo + max(1, math.floor(APPROACH / stretch**STRETCH_DAMPING * distance)))
    # Next to the limit: the size the curve (or the line) says is the maximum or the one above;
    # either, once probed, leaves one probe to certify.
    curved = _curved_crossing(fit_points, budget_bytes, lo, hi, crossing)
    state.near = True
    return inside(math.floor((curved if curved is not None else crossing) + 0.5))
