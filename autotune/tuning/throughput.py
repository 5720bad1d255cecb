"""Samples per second against batch size, and the choice of a smaller batch that is measurably faster.

The largest batch is not always the fastest. Samples per second are measured at a few sizes at or
below the largest batch that keeps the headroom (the search's own probes count). The default is the
largest batch within the headroom (that passed the soak); a smaller size replaces it only when
paired runs show it faster beyond the measured noise (:mod:`autotune.tuning.noise`): the two are
measured again, interleaved, and a point off the trend of samples/s against batch size is measured
again before it can decide anything. At most :data:`autotune.tuning.noise.BATCH_REPEATS` extra
probes per decision.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from autotune.errors import ProbeError
from autotune.tuning import noise
from probes.protocol import ProbeResult

if TYPE_CHECKING:
    from autotune.tuning.noise import Decision

log = logging.getLogger(__name__)


class Recorded(Protocol):
    """Where the choice is recorded: the probes measured again, and the comparison (a
    :class:`~autotune.tuning.batch.BatchDecision`)."""

    extra_probes: int
    decision: Decision | None


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


def checked(result: ProbeResult) -> ProbeResult:
    """``result``, unless the probe ended with an error or timed out (then a :class:`ProbeError`)."""
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


def mean_rate(points: list[ThroughputPoint], size: int) -> float | None:
    """The mean samples/s of the counted measurements at ``size`` (None where none)."""
    rates = [p.samples_per_s for p in points if p.batch_size == size and p.counted and p.samples_per_s > 0]
    return statistics.fmean(rates) if rates else None


class Curve:
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
        return mean_rate(self.points, size)

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
        return trend_residual(others, size, rate)


def confirm_batch(
    decision: Recorded,
    probe: SizedProbe,
    curve: Curve,
    default: int,
    eligible: Callable[[int], bool],
    repeats: int,
    why_default: str,
) -> int:
    """The batch to recommend: ``default``, unless the fastest smaller size beats it by more than
    the noise, on the trend, in paired runs (:mod:`autotune.tuning.noise`). Records the decision."""
    budget = repeats
    remeasured: set[int] = set()
    while True:
        fastest, challenger = _nominee(curve, default, eligible)
        if challenger is None:
            return _default_stands(decision, curve, default, fastest, why_default)
        # A point off the trend is measured again before it can decide (once per size).
        size = _off_trend(curve, default, (default, challenger), remeasured)
        if size is None or budget < 1 or len(remeasured) >= noise.TREND_REMEASURES:
            break
        remeasured.add(size)
        budget -= 1
        decision.extra_probes += 1
        _measure_again(probe, curve, size, default)
    return _paired_runs(decision, probe, curve, default, challenger, budget, why_default)


def _nominee(curve: Curve, default: int, eligible: Callable[[int], bool]) -> tuple[int | None, int | None]:
    """The fastest counted size below ``default`` (nominated or not), and that size again where it
    is nominated to challenge ``default`` (else None)."""
    default_rate = curve.rate(default)
    sizes = {
        p.batch_size for p in curve.points if p.counted and p.batch_size < default and eligible(p.batch_size)
    }
    fastest = max(sizes, key=lambda s: curve.rate(s) or 0.0, default=None)
    if (
        fastest is None
        or default_rate is None
        or not noise.nominated(curve.rate(fastest) or 0.0, default_rate, curve.noise(default))
    ):
        return fastest, None
    return fastest, fastest


def _off_trend(curve: Curve, default: int, sizes: tuple[int, int], remeasured: set[int]) -> int | None:
    """Of ``sizes``, the one furthest off the trend beyond the noise, not yet measured again."""
    limit = noise.TREND_Z * curve.noise(default)
    suspects = []
    for size in sizes:
        residual = curve.residual(size, default)
        if size not in remeasured and residual is not None and abs(residual) > limit:
            suspects.append((abs(residual), size))
    return max(suspects)[1] if suspects else None


def _measure_again(probe: SizedProbe, curve: Curve, size: int, default: int) -> None:
    """Measure ``size`` again; where the new measurement lies on the trend, set the earlier aside."""
    limit = noise.TREND_Z * curve.noise(default)
    earlier = [p for p in curve.points if p.batch_size == size and p.counted]
    log.info("batch %d lies off the trend of samples/s against batch size: measuring it again", size)
    new = curve.add(checked(probe(size, "throughput")), "throughput")
    if new is None:
        return
    residual = curve.residual(size, default, new.samples_per_s)  # against the other sizes
    if residual is not None and abs(residual) <= limit:
        for p in earlier:
            p.counted = False  # the new measurement lies on the trend: the earlier one was noise
        log.info("batch %d: the new measurement lies on the trend; the earlier one is set aside", size)


def _default_stands(
    decision: Recorded, curve: Curve, default: int, fastest: int | None, why_default: str
) -> int:
    """Nothing beat the default by more than the noise: it stands, without another probe."""
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


def _paired_runs(
    decision: Recorded,
    probe: SizedProbe,
    curve: Curve,
    default: int,
    challenger: int,
    budget: int,
    why_default: str,
) -> int:
    """``default`` against ``challenger`` in paired runs, at most ``budget // 2`` pairs
    (:func:`autotune.tuning.noise.challenge`); records the decision."""

    def measure(size: int) -> Callable[[], float | None]:
        def run() -> float | None:
            decision.extra_probes += 1
            point = curve.add(checked(probe(size, "throughput")), "throughput")
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


def trend_residual(
    points: Sequence[tuple[int, float]], batch_size: int, samples_per_s: float
) -> float | None:
    """How far ``samples_per_s`` at ``batch_size`` lies off the line of step time against batch size
    through ``points`` (``(batch, step_s)``): measured over predicted samples/s, less one. None where
    ``points`` hold fewer than two sizes, or the line predicts no positive step time."""
    sizes = {b for b, _ in points}
    if len(sizes) < 2 or samples_per_s <= 0:
        return None
    n = len(points)
    mean_x = sum(b for b, _ in points) / n
    mean_y = sum(t for _, t in points) / n
    var = sum((b - mean_x) ** 2 for b, _ in points)
    slope = sum((b - mean_x) * (t - mean_y) for b, t in points) / var
    predicted_step = mean_y + slope * (batch_size - mean_x)
    if predicted_step <= 0:
        return None
    return samples_per_s / (batch_size / predicted_step) - 1.0
