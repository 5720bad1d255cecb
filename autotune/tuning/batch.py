"""From the certified maximum to the batch to train with: throughput, soak, and target batches.

Pure logic over a probe callable, like :mod:`autotune.tuning.search`:

- **Throughput.** The largest batch is not always the fastest. Samples per second are measured at
  a few sizes at or below the largest batch that keeps the headroom (the search's own probes
  count). The default is the largest batch within the headroom (that passed the soak); a smaller
  size replaces it only when paired runs show it faster beyond the measured noise
  (:mod:`autotune.tuning.noise`): the two are measured again, interleaved, and a point off the trend of
  samples/s against batch size is measured again before it can decide anything. At most
  :data:`autotune.tuning.noise.BATCH_REPEATS` extra probes per decision.
- **Soak.** The recommendation then trains for longer (``soak_steps``, with action padding varying
  as episode boundaries make it vary in real data). If it runs out of memory, or the CUDA
  allocator has to free its cache and retry (thrashing near the limit), it is lowered and soaked
  again. The soak of the largest batch is also its first throughput measurement; its timing
  counts only while it agrees with the trend.
- **Target batch.** ``--target-batch N`` splits N into ``batch_size x accumulation steps``: the
  largest batch size that divides N and fits, unless another divisor is measurably faster.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from autotune.errors import ProbeError
from autotune.tuning import noise
from autotune.tuning.noise import Decision
from autotune.tuning.search import SearchOutcome, fit_memory
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LOWER_STEP = 0.05  # a failed soak lowers the batch by this share, doubling at each failure
MAX_SOAKS = 5

SizedProbe = Callable[[int, str], ProbeResult]  # (batch size, phase) -> result


@dataclass
class ThroughputPoint:
    batch_size: int
    samples_per_s: float
    step_time_s: float
    peak_reserved_bytes: int
    phase: str
    repeat: int = 0  # earlier timed measurements at this size (0: the first)
    counted: bool = True  # False: off the trend, set aside when a new measurement lay on it
    step_spread: float = 0.0  # relative spread of its per-step samples/s
    steps: int = 0


@dataclass
class SoakRecord:
    batch_size: int
    status: str
    alloc_retries: int
    steps: int
    samples_per_s: float
    lowered: bool
    reason: str = ""


@dataclass
class BatchDecision:
    """The recommended batch and the evidence: the throughput curve, the soaks, the comparison."""

    batch_size: int
    headroom_batch: int  # the largest batch that keeps the headroom
    curve: list[ThroughputPoint] = field(default_factory=list)
    soaks: list[SoakRecord] = field(default_factory=list)
    grad_accum_steps: int = 1
    target_batch: int | None = None
    soak_result: ProbeResult | None = None
    decision: Decision | None = None  # the recommended batch against the default, against the noise
    extra_probes: int = 0  # probes measured again to decide (off-trend points, paired runs)

    @property
    def lowered_by_soak(self) -> bool:
        return any(s.lowered for s in self.soaks)

    def samples_per_s_at(self, size: int) -> float:
        """The mean of the counted measurements at ``size`` (0 where none)."""
        return _rate(self.curve, size) or 0.0

    def step_time_s_at(self, size: int) -> float:
        """The step time of the counted measurements at ``size``, from their mean samples/s."""
        rate = _rate(self.curve, size)
        return size / rate if rate else 0.0


def headroom_batch(outcome: SearchOutcome, headroom: float) -> int:
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


def throughput_candidates(headroom_batch: int, points: int) -> list[int]:
    """Sizes below the headroom batch worth timing: halfway, three quarters, ..."""
    sizes: list[int] = []
    for fraction in (0.5, 0.75, 0.25, 0.875)[: max(0, points - 1)]:
        size = max(1, round(headroom_batch * fraction))
        if size < headroom_batch and size not in sizes:
            sizes.append(size)
    return sizes


def _check(result: ProbeResult) -> ProbeResult:
    if result.status in ("error", "timeout"):
        raise ProbeError(f"probe at batch {result.batch_size} ended with {result.status}: {result.message}")
    return result


def _point(result: ProbeResult, phase: str, repeat: int = 0) -> ThroughputPoint:
    rates = noise.per_step_rates(result.batch_size, result.step_times_s)
    return ThroughputPoint(
        result.batch_size,
        result.samples_per_s,
        result.step_time_s,
        result.peak_reserved_bytes,
        phase,
        repeat=repeat,
        step_spread=noise.relative_spread(rates),
        steps=len(rates),
    )


def _rate(points: list[ThroughputPoint], size: int) -> float | None:
    rates = [p.samples_per_s for p in points if p.batch_size == size and p.counted and p.samples_per_s > 0]
    return statistics.fmean(rates) if rates else None


class _Curve:
    """Every timed measurement of one decision, in the order measured."""

    def __init__(self) -> None:
        self.points: list[ThroughputPoint] = []

    def add(self, result: ProbeResult, phase: str) -> ThroughputPoint | None:
        if not result.fits or result.samples_per_s <= 0:
            return None
        repeat = sum(p.batch_size == result.batch_size for p in self.points)
        point = _point(result, phase, repeat)
        self.points.append(point)
        return point

    def has(self, size: int) -> bool:
        return any(p.batch_size == size for p in self.points)

    def drop(self, size: int) -> None:
        self.points = [p for p in self.points if p.batch_size != size]

    def rate(self, size: int) -> float | None:
        return _rate(self.points, size)

    def noise(self, default: int) -> float:
        """The relative noise of one measurement (:func:`autotune.tuning.noise.measurement_noise`), from the
        probes at :data:`~autotune.tuning.noise.TREND_FROM` of ``default`` or more (a tiny batch's steps
        spread more, and decide nothing)."""
        low = noise.TREND_FROM * default
        counted = [p for p in self.points if p.counted and p.batch_size >= low]
        within = [(p.step_spread, p.steps) for p in counted]
        sizes = {p.batch_size for p in counted}
        repeats = noise.groups([p.samples_per_s for p in counted if p.batch_size == s] for s in sizes)
        return noise.measurement_noise(within, repeats)

    def residual(self, size: int, default: int, rate: float | None = None) -> float | None:
        """How far ``rate`` (the counted mean at ``size``) lies off the trend through the counted
        points at other sizes, from :data:`~autotune.tuning.noise.TREND_FROM` of ``default`` up."""
        rate = self.rate(size) if rate is None else rate
        if rate is None:
            return None
        low = noise.TREND_FROM * default
        others = [
            (p.batch_size, p.batch_size / p.samples_per_s)
            for p in self.points
            if p.counted and p.batch_size != size and p.batch_size >= low
        ]
        return noise.trend_residual(others, size, rate)


def decide_batch(
    search: SearchOutcome,
    probe: SizedProbe,
    *,
    headroom: float,
    throughput_points: int = 3,
    soak: bool = True,
    target_batch: int | None = None,
    accumulate: bool = True,
    repeats: int = noise.BATCH_REPEATS,
) -> BatchDecision:
    """Measure throughput at and below the headroom batch, soak the largest, and recommend it
    unless a smaller size is measurably faster (paired runs against the measured noise).

    When soaking, the soak itself measures the headroom batch's throughput (a longer, steadier
    measurement than a probe's three steps), so it costs no extra probe. Without ``accumulate``
    (a trainer that cannot accumulate gradients) a target batch that fits whole is taken whole;
    one that does not is still split, and the command will say the trainer cannot do it.
    ``repeats`` bounds the probes measured again to decide.
    """
    anchored, anchor = _anchored(search, probe, target_batch)
    ceiling = headroom_batch(anchored, headroom)
    decision = BatchDecision(batch_size=ceiling, headroom_batch=ceiling)
    curve = _Curve()
    for r in search.fitting:  # above the ceiling too: the trend reads every size
        curve.add(r, "search")
    if anchor is not None:
        curve.add(anchor, "throughput")
    if target_batch is not None:
        wanted = split_target(target_batch, ceiling)
        if not accumulate and target_batch in wanted:
            wanted = [target_batch]
        if not wanted:
            raise ProbeError(f"no batch size that divides --target-batch {target_batch} fits")
    else:
        wanted = throughput_candidates(ceiling, throughput_points)
    top = max(wanted) if target_batch is not None else ceiling
    for size in wanted:
        if curve.has(size) or (soak and size == top):
            continue
        curve.add(_check(probe(size, "throughput")), "throughput")

    def eligible(size: int) -> bool:
        return size <= top and (target_batch is None or target_batch % size == 0)

    limit = (1.0 - headroom) * search.budget_bytes
    if soak:
        # Soak the top candidate first: its soak is its first throughput measurement.
        soak_batch(decision, probe, top, curve, target_batch, limit)
        default = decision.batch_size
    else:
        if not curve.has(top):
            curve.add(_check(probe(top, "throughput")), "throughput")
        measured = [p.batch_size for p in curve.points if eligible(p.batch_size)]
        default = max(measured, default=top)
    why = (
        f"the largest batch that passed the soak ({default})"
        if decision.lowered_by_soak
        else f"the largest divisor of --target-batch {target_batch} that fits ({default})"
        if target_batch is not None
        else f"the largest batch within the headroom ({default})"
    )
    decision.batch_size = _confirm(decision, probe, curve, default, eligible, repeats, why)
    if soak and decision.batch_size != default:
        soak_batch(decision, probe, decision.batch_size, curve, target_batch, limit)
    decision.curve = sorted(
        (p for p in curve.points if p.batch_size <= ceiling),
        key=lambda p: (p.batch_size, not p.counted, p.repeat),
    )
    if target_batch is not None:
        decision.target_batch = target_batch
        decision.grad_accum_steps = target_batch // decision.batch_size
    return decision


def _confirm(
    decision: BatchDecision,
    probe: SizedProbe,
    curve: _Curve,
    default: int,
    eligible: Callable[[int], bool],
    repeats: int,
    why_default: str,
) -> int:
    """The batch to recommend: ``default``, unless the fastest smaller size beats it by more than
    the noise, on the trend, in paired runs (:mod:`autotune.tuning.noise`). Records the decision."""
    budget = repeats
    remeasured: set[int] = set()
    challenger: int | None = None
    fastest: int | None = None  # the fastest smaller size, nominated or not
    while True:
        default_rate = curve.rate(default)
        sizes = {
            p.batch_size
            for p in curve.points
            if p.counted and p.batch_size < default and eligible(p.batch_size)
        }
        fastest = max(sizes, key=lambda s: curve.rate(s) or 0.0, default=None)
        challenger = fastest
        if (
            challenger is None
            or default_rate is None
            or not noise.nominated(curve.rate(challenger) or 0.0, default_rate, curve.noise(default))
        ):
            challenger = None
            break
        # A point off the trend is measured again before it can decide (once per size).
        limit = noise.TREND_Z * curve.noise(default)
        suspects = []
        for size in (default, challenger):
            residual = curve.residual(size, default)
            if size not in remeasured and residual is not None and abs(residual) > limit:
                suspects.append((abs(residual), size))
        if not suspects or budget < 1 or len(remeasured) >= noise.TREND_REMEASURES:
            break
        _, size = max(suspects)
        remeasured.add(size)
        budget -= 1
        decision.extra_probes += 1
        earlier = [p for p in curve.points if p.batch_size == size and p.counted]
        log.info("batch %d lies off the trend of samples/s against batch size: measuring it again", size)
        new = curve.add(_check(probe(size, "throughput")), "throughput")
        if new is None:
            continue
        residual = curve.residual(size, default, new.samples_per_s)  # against the other sizes
        if residual is not None and abs(residual) <= limit:
            for p in earlier:
                p.counted = False  # the new measurement lies on the trend: the earlier one was noise
            log.info("batch %d: the new measurement lies on the trend; the earlier one is set aside", size)
    if challenger is None:
        # Nothing beat the default by more than the noise: it stands, without another probe.
        other, mine = (curve.rate(fastest) or 0.0) if fastest else 0.0, curve.rate(default) or 0.0
        within = noise.single(other, mine, curve.noise(default)) if other > mine > 0 else None
        decision.decision = noise.decide(
            "batch",
            f"batch {default}",
            f"batch {fastest}" if within else "",
            within,
            extra=decision.extra_probes,
            why_default=why_default,
            noise=curve.noise(default),
        )
        return default

    def measure(size: int) -> Callable[[], float | None]:
        def run() -> float | None:
            decision.extra_probes += 1
            point = curve.add(_check(probe(size, "throughput")), "throughput")
            return point.samples_per_s if point else None

        return run

    log.info("batch %d measured faster than batch %d: paired runs decide", challenger, default)
    before = decision.extra_probes
    decision.decision = noise.challenge(
        "batch",
        f"batch {default}",
        f"batch {challenger}",
        curve.rate(default) or 0.0,
        curve.rate(challenger) or 0.0,
        measure(default),
        measure(challenger),
        curve.noise(default),
        max_pairs=min(noise.MAX_PAIRS, budget // 2),
        why_default=why_default,
    )
    decision.decision.extra += before
    log.info("%s", decision.decision.text)
    return challenger if decision.decision.chosen == f"batch {challenger}" else default


def _anchored(
    search: SearchOutcome, probe: SizedProbe, target_batch: int | None
) -> tuple[SearchOutcome, ProbeResult | None]:
    """The search's evidence, with a probe at half the maximum where its fitting sizes all lie in
    the top half (a search started from the estimate certifies next to the limit): a line through
    sizes one apart is noise, and would place the headroom batch far off. The probe is timed like
    a throughput point and gives the memory model its second size."""
    sizes = {r.batch_size for r in search.fitting}
    if search.max_batch < 4 or (sizes and min(sizes) <= search.max_batch // 2):
        return search, None
    half = search.max_batch // 2
    if target_batch is not None:
        half = max((d for d in range(1, half + 1) if target_batch % d == 0), default=1)
    result = _check(probe(half, "throughput"))
    if not result.fits:
        return search, None
    probes = [*search.probes, result]
    points = [
        (p.batch_size, float(p.peak_reserved_bytes)) for p in probes if p.fits and p.peak_reserved_bytes > 0
    ]
    fit = fit_memory(points) or search.fit
    return replace(search, probes=probes, fit=fit), result


def split_target(target: int, ceiling: int, keep: int = 3) -> list[int]:
    """The largest ``keep`` divisors of ``target`` that are at most ``ceiling``."""
    if target < 1:
        raise ValueError(f"--target-batch must be at least 1, got {target}")
    divisors = [d for d in range(1, min(target, ceiling) + 1) if target % d == 0]
    return sorted(divisors, reverse=True)[:keep]


def soak_batch(
    decision: BatchDecision,
    probe: SizedProbe,
    size: int,
    curve: _Curve,
    target_batch: int | None = None,
    headroom_limit_bytes: float | None = None,
) -> None:
    """Soak ``size``; lower it while it runs out of memory, thrashes, or peaks above the headroom
    line (``headroom_limit_bytes``; batch 1 is exempt, as nothing smaller exists). Sets the
    decision's batch."""
    for attempt in range(MAX_SOAKS):
        result = _check(probe(size, "soak"))
        thrashing = result.fits and result.alloc_retries > 0
        over = (
            result.fits
            and headroom_limit_bytes is not None
            and size > 1
            and result.peak_reserved_bytes > headroom_limit_bytes
        )
        ok = result.fits and not thrashing and not over
        if ok:
            reason = ""
        elif not result.fits:
            reason = "out of memory"
        elif thrashing:
            reason = "allocator retries"
        else:
            reason = "peak above the headroom"
        decision.soaks.append(
            SoakRecord(
                size, result.status, result.alloc_retries, result.steps, result.samples_per_s, not ok, reason
            )
        )
        if ok:
            curve.add(result, "soak")
            decision.batch_size = size
            decision.soak_result = result
            return
        curve.drop(size)
        log.warning("soak at batch %d failed (%s); lowering", size, reason)
        lower = size - max(1, math.floor(size * LOWER_STEP * 2**attempt))
        if target_batch is not None:
            smaller = split_target(target_batch, lower, keep=1) if lower >= 1 else []
            lower = smaller[0] if smaller else 0
        if lower < 1:
            break
        size = lower
    raise ProbeError(f"no batch passed the soak (last tried {size}); see batch_probes.csv")
