"""From the certified maximum to the batch to train with: throughput, soak, and target batches.

Pure logic over a probe callable, like :mod:`autotune.tuning.search`:

- **Throughput.** The largest batch is not always the fastest: a smaller size replaces it only
  where it is measurably faster (:mod:`autotune.tuning.throughput`).
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
from dataclasses import dataclass, field, replace

from autotune.errors import ProbeError
from autotune.tuning import noise
from autotune.tuning.memory_fit import fit_memory
from autotune.tuning.noise import Decision
from autotune.tuning.search import SearchOutcome
from autotune.tuning.throughput import Curve, SizedProbe, ThroughputPoint, checked, confirm_batch, mean_rate
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LOWER_STEP = 0.05  # a failed soak lowers the batch by this share, doubling at each failure
MAX_SOAKS = 5


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
        return mean_rate(self.curve, size) or 0.0

    def step_time_s_at(self, size: int) -> float:
        """The step time of the counted measurements at ``size``, from their mean samples/s."""
        rate = mean_rate(self.curve, size)
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
    curve = Curve()
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
        curve.add(checked(probe(size, "throughput")), "throughput")

    def eligible(size: int) -> bool:
        return size <= top and (target_batch is None or target_batch % size == 0)

    limit = (1.0 - headroom) * search.budget_bytes
    if soak:
        # Soak the top candidate first: its soak is its first throughput measurement.
        soak_batch(decision, probe, top, curve, target_batch, limit)
        default = decision.batch_size
    else:
        if not curve.has(top):
            curve.add(checked(probe(top, "throughput")), "throughput")
        measured = [p.batch_size for p in curve.points if eligible(p.batch_size)]
        default = max(measured, default=top)
    why = (
        f"the largest batch that passed the soak ({default})"
        if decision.lowered_by_soak
        else f"the largest divisor of --target-batch {target_batch} that fits ({default})"
        if target_batch is not None
        else f"the largest batch within the headroom ({default})"
    )
    decision.batch_size = confirm_batch(decision, probe, curve, default, eligible, repeats, why)
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
    result = checked(probe(half, "throughput"))
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
    curve: Curve,
    target_batch: int | None = None,
    headroom_limit_bytes: float | None = None,
) -> None:
    """Soak ``size``; lower it while it runs out of memory, thrashes, or peaks above the headroom
    line (``headroom_limit_bytes``; batch 1 is exempt, as nothing smaller exists). Sets the
    decision's batch."""
    for attempt in range(MAX_SOAKS):
        result = checked(probe(size, "soak"))
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
