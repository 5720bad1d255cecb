"""How long a run will take, from the probes it has measured so far (pure logic, no clock of its own).

A run's work is a known plan of probes (see :data:`SEARCH_FRACTIONS` and :func:`plan_s`), the
repeats that decide against the noise counted at their whole budget (:mod:`autotune.tuning.noise`: the
most they can add, so a run that needs them is not later than said, and one that needs none is
early), whose cost is set by two things the first probes measure: the step time against the batch size (a line
through the timed steps; through the origin while there is one point) and the largest batch (the
memory line extrapolated to the budget; after one probe, the fixed part is taken as the model's
weights, gradients and AdamW state, known from its parameter count). Each probe also costs a child's
start-up (interpreter, imports, building the model), measured as its wall time less its steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autotune.tuning.noise import BATCH_REPEATS, TRIAL_REPEATS

# Where the search's probes land, as fractions of the largest batch: 1, 4, a long jump, the
# approach, the maximum and the size above it (the README's "4 to 10 probes", typically 6).
SEARCH_FRACTIONS = (0.0, 0.0, 0.25, 0.85, 1.0, 1.0)
SEARCH_FIXED_SIZES = (1, 4)
STATE_BYTES_PER_PARAM = 4  # fp32 weights
STATE_BYTES_PER_TRAINABLE = 4 + 8  # their gradients and AdamW's two moments
DECODE_PROBE_S = 5.0  # a decode probe: a child reading a few samples, no model
WORKER_START_S = 5.0  # spawning a trial's DataLoader workers


@dataclass
class WorkPlan:
    """What a run still has to do, in probes: the settings that size it."""

    variants: int
    budget_bytes: int
    headroom: float
    warmup_steps: int
    measure_steps: int
    throughput_points: int
    soak_steps: int
    trials: int
    trial_steps: int  # warm-up and measured steps of one worker trial
    # Measured again to decide against the noise, at most (autotune.tuning.noise): batch probes per
    # variant, worker trials, and batch probes between variants (--compare).
    batch_repeats: int = BATCH_REPEATS
    trial_repeats: int = TRIAL_REPEATS
    variant_repeats: int = 0


@dataclass
class RunClock:
    """What the probes so far say about time and memory."""

    step_points: list[tuple[int, float]] = field(default_factory=list)  # (batch, step s)
    startups_s: list[float] = field(default_factory=list)
    peaks: list[tuple[int, float]] = field(default_factory=list)  # fitting (batch, peak bytes)
    smallest_oom: int | None = None
    state_bytes: float = 0.0  # weights, gradients, optimiser state (from the parameter count)
    known_max: int | None = None  # the certified maximum, once the search is done

    def record(
        self,
        batch: int,
        fits: bool,
        step_s: float,
        steps: int,
        wall_s: float,
        peak_bytes: float,
        total_params: int = 0,
        trainable_params: int = 0,
    ) -> None:
        if total_params:
            self.state_bytes = (
                STATE_BYTES_PER_PARAM * total_params + STATE_BYTES_PER_TRAINABLE * trainable_params
            )
        if not fits:
            self.smallest_oom = batch if self.smallest_oom is None else min(self.smallest_oom, batch)
            return
        if step_s > 0:
            self.step_points.append((batch, step_s))
            self.startups_s.append(max(0.0, wall_s - step_s * steps))
        if peak_bytes > 0:
            self.peaks.append((batch, peak_bytes))

    @property
    def startup_s(self) -> float:
        return min(self.startups_s) if self.startups_s else 0.0

    def step_s(self, batch: float) -> float:
        """Step time at ``batch``: a least-squares line through the timed sizes (through the origin
        with one size), never below the fastest step measured."""
        sizes = {b for b, _ in self.step_points}
        if not sizes:
            return 0.0
        if len(sizes) == 1:
            b0, t0 = self.step_points[-1]
            return t0 * batch / b0
        slope, intercept = _line(self.step_points)
        floor = min(t for _, t in self.step_points)
        return max(floor, intercept + slope * batch)

    def max_batch(self, budget_bytes: int, cap: int) -> int | None:
        """The largest batch as far as the probes tell; None before any probe fitted."""
        if self.known_max is not None:
            return self.known_max
        if not self.peaks:
            return None
        sizes = {b for b, _ in self.peaks}
        if len(sizes) >= 2:
            slope, fixed = _line(self.peaks)
        else:
            batch, peak = self.peaks[-1]
            fixed = min(self.state_bytes, 0.99 * peak)  # leave the one sample a slope
            slope = (peak - fixed) / batch
        guess = cap if slope <= 0 else int((budget_bytes - fixed) / slope)
        if self.smallest_oom is not None:
            guess = min(guess, self.smallest_oom - 1)
        largest_fit = max(sizes)
        return max(largest_fit, min(guess, cap))


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    return slope, mean_y - slope * mean_x


def probe_s(clock: RunClock, batch: float, steps: int) -> float:
    return clock.startup_s + steps * clock.step_s(max(1.0, batch))


def plan_s(clock: RunClock, plan: WorkPlan, max_batch: int, stage: str) -> float:
    """Seconds one whole ``stage`` takes: ``search``, ``batch`` (throughput and soak), ``feed``
    or ``workers``."""
    steps = plan.warmup_steps + plan.measure_steps
    headroom_batch = max(1, math.floor(max_batch * (1 - plan.headroom)))
    if stage == "search":
        sizes = [*SEARCH_FIXED_SIZES, *(f * max_batch for f in SEARCH_FRACTIONS[len(SEARCH_FIXED_SIZES) :])]
        return sum(probe_s(clock, b, steps) for b in sizes)
    if stage == "batch":
        timed = (plan.throughput_points - 1) * probe_s(clock, headroom_batch / 2, steps)
        soak_steps = plan.warmup_steps + (plan.soak_steps or plan.measure_steps)
        # Repeats alternate the default (the headroom batch) and a smaller challenger.
        repeats = plan.batch_repeats * probe_s(clock, 0.75 * headroom_batch, steps)
        return timed + probe_s(clock, headroom_batch, soak_steps) + repeats
    if stage == "feed":
        # Before the decode probe: the paired probes between variants (--compare), at most.
        return DECODE_PROBE_S + plan.variant_repeats * probe_s(clock, headroom_batch, steps)
    if stage == "workers":
        trials = plan.trials + plan.trial_repeats
        return trials * (probe_s(clock, headroom_batch, plan.trial_steps) + WORKER_START_S)
    raise ValueError(f"unknown stage {stage!r}")


STAGES = ("search", "batch", "feed", "workers")


def remaining_s(
    clock: RunClock, plan: WorkPlan, max_batch: int, done: list[str], current: str | None, current_s: float
) -> float:
    """Seconds left: the stages not started, and what the current one has left (of its estimate).

    ``done`` and ``current`` name stages as ``STAGES`` does, once per variant for the first two.
    """
    per_run = [*(s for _ in range(plan.variants) for s in STAGES[:2]), *STAGES[2:]]
    left = list(per_run)
    for name in done:
        if name in left:
            left.remove(name)
    total = 0.0
    if current is not None and current in left:
        left.remove(current)
        total += max(0.0, plan_s(clock, plan, max_batch, current) - current_s)
    return total + sum(plan_s(clock, plan, max_batch, s) for s in left)


def format_duration(seconds: float) -> str:
    """``95`` -> ``"2 min"``, ``5400`` -> ``"1 h 30 min"``; rounded as a person would say it."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
