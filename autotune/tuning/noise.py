"""Decisions that one noisy measurement cannot move: paired runs judged against the measured noise.

Pure logic over measured figures (samples per second), used by the batch decision
(:mod:`autotune.tuning.batch`), the worker study (:mod:`autotune.tuning.study`) and the choice between variants
(:mod:`autotune.run.stages.variant`). Every comparison that changes an answer has a **default**, the
choice that stands unless it is beaten: the largest batch within the headroom, LeRobot's worker
setting, the variant asked for. A **challenger** is the fastest other choice measured.

**The noise of one measurement** (relative, a fraction of the figure) is the largest of

- :data:`NOISE_FLOOR`;
- the pooled relative spread of the per-step figures within this run's probes (``step_times_s``;
  a trial's per step ``batch / (data_s + updt_s)``), taken as it is, not divided by the square
  root of the steps: between fresh children a figure moves at least as much as one step does;
- where a figure was measured more than once, the pooled relative spread of its repeats.

**Nominated.** A challenger is measured again only when its figure beats the default's by more
than that noise; below it the default stands without another probe.

**Paired runs.** The challenger (A) and the default (B) are then measured again, interleaved,
A B A B, up to :data:`MAX_PAIRS` pairs. The measurements that nominated the challenger do not
count: the largest of several noisy figures is biased upwards by being chosen. From the pairs'
ratios ``d_i = log(A_i / B_i)``: the speedup is ``exp(mean d)``, its spread one standard error,
``max(sqrt(2) x noise, stdev d, sqrt(2) x the pooled spread of each side's repeats) /
sqrt(pairs)`` (the last two from two pairs on: with so few pairs the largest is trusted). The difference
**clears the noise** when ``|mean d|`` is more than :data:`Z` times the spread that the measured
noise gives, and more than Student's t (95%, ``pairs - 1`` degrees of freedom, :func:`t_quantile`)
times the spread that the pairs themselves show: a spread read from two or three pairs is itself
uncertain, so the pairs must agree closely before they can change an answer (from two pairs,
12.7 times). The challenger wins only when it clears on :data:`MIN_PAIRS_TO_WIN` pairs or more
(one pair cannot show its own spread); a first pair that clears in the default's favour ends the
comparison, and so does a challenger that is behind on average from two pairs on, or one that no
last pair could carry past the noise (:func:`can_still_win`). Otherwise the default stands, and the
answer says "no measurable difference".

**Read as a trend.** samples/s against batch size is read as a line of step time against batch
size (``step_s = a + c x batch``), fitted to the timed points at a quarter of the default batch
or more (at smaller sizes a step is not yet compute-bound). A point whose figure lies further
from the line through the others than :data:`TREND_Z` times the noise is off the trend: before
it can decide anything it is measured again (at most once per size). If the new figure lies on
the trend, the off-trend one is set aside; if not, both count: the curve really bends there.

**The budget** is the same for every run: per variant at most :data:`BATCH_REPEATS` extra batch
probes (the off-trend re-measures, then the pairs); for the worker study at most ``2 x
MAX_PAIRS`` extra trials; between variants (``--compare``) at most ``2 x MAX_PAIRS`` extra probes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Z = 2.0  # a difference counts when it is more than this many times its spread
NOISE_FLOOR = 0.02  # the relative noise of one measurement is never taken below this
MAX_PAIRS = 3  # paired runs (A B) per comparison at most
MIN_PAIRS_TO_WIN = 2  # a challenger wins on this many pairs or more, never on one
TREND_Z = 3.0  # a point this many noise spreads off the trend is measured again
TREND_FROM = 0.25  # the trend is read from this share of the default batch upwards
TREND_REMEASURES = 2  # off-trend points measured again per batch decision (the default, the challenger)
BATCH_REPEATS = TREND_REMEASURES + 2 * MAX_PAIRS  # extra batch probes per variant, at most
TRIAL_REPEATS = 2 * MAX_PAIRS  # extra worker trials per run, at most
VARIANT_REPEATS = 2 * MAX_PAIRS  # extra batch probes between variants (--compare), at most

NO_DIFFERENCE = "no measurable difference"


def relative_spread(values: Sequence[float]) -> float:
    """The standard deviation of ``values`` over their mean; 0 with fewer than two."""
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else 0.0


def per_step_rates(
    batch_size: int, step_times_s: Sequence[float], data_times_s: Sequence[float] = ()
) -> list[float]:
    """samples/s of each measured step: ``batch / (data_s + updt_s)`` (``batch / step_s`` without
    data times)."""
    data = list(data_times_s) or [0.0] * len(step_times_s)
    return [batch_size / (d + u) for d, u in zip(data, step_times_s, strict=False) if d + u > 0]


def pooled(spreads: Iterable[tuple[float, int]]) -> float:
    """The pooled relative spread of several groups, each given as (its relative spread, its size):
    the root of the variances weighted by their degrees of freedom; 0 without a group of two."""
    total, dof = 0.0, 0
    for spread, n in spreads:
        if n < 2 or not math.isfinite(spread):
            continue
        total += (n - 1) * spread**2
        dof += n - 1
    return math.sqrt(total / dof) if dof else 0.0


def groups(values: Iterable[Sequence[float]]) -> list[tuple[float, int]]:
    """Each group of figures as (its relative spread, its size), for :func:`pooled`."""
    return [(relative_spread(group), len(group)) for group in values]


def measurement_noise(
    step_spreads: Iterable[tuple[float, int]], repeat_spreads: Iterable[tuple[float, int]] = ()
) -> float:
    """The relative noise of one measurement: the floor, the pooled per-step spread within probes
    (each probe as (spread, steps)), or the pooled spread of repeated measurements of one setting,
    whichever is largest."""
    return max(NOISE_FLOOR, pooled(step_spreads), pooled(repeat_spreads))


@dataclass
class Verdict:
    """Challenger against default: the speedup, its spread and how many paired runs it rests on."""

    ratio: float  # challenger / default samples/s (geometric mean of the pairs' ratios)
    spread: float  # one standard error of the ratio (in the ratio's units)
    pairs: int  # paired runs (0: single measurements only)
    noise: float  # the relative noise of one measurement it was judged against
    margin: float | None = None  # |log ratio| must exceed this to clear (None: Z standard errors)

    @property
    def log_spread(self) -> float:
        return self.spread / self.ratio if self.ratio > 0 else math.inf

    @property
    def clears(self) -> bool:
        """The difference is more than its margin: :data:`Z` times its spread, or more where the
        spread rests on the pairs alone (see the module's rule)."""
        margin = Z * self.log_spread if self.margin is None else self.margin
        return self.ratio > 0 and abs(math.log(self.ratio)) > margin

    @property
    def challenger_wins(self) -> bool:
        return self.clears and self.ratio > 1 and self.pairs >= MIN_PAIRS_TO_WIN

    def figures(self) -> str:
        """``1.09x ± 0.04 (4 paired runs)``."""
        runs = (
            f"{self.pairs} paired run{'s' if self.pairs != 1 else ''}"
            if self.pairs
            else "single measurements"
        )
        return f"{self.ratio:.2f}x ± {self.spread:.2f} ({runs})"


def judge(pairs: Sequence[tuple[float, float]], noise: float) -> Verdict:
    """The verdict on paired figures ``(challenger, default)``, against the relative ``noise`` of
    one measurement (see the module's rule)."""
    noise = max(noise, NOISE_FLOOR)
    kept = [(a, b) for a, b in pairs if a > 0 and b > 0]
    d = [math.log(a / b) for a, b in kept]
    if not d:
        return Verdict(ratio=0.0, spread=math.inf, pairs=0, noise=noise)
    prior = math.sqrt(2.0) * noise  # the spread of one pair's d that the measured noise gives
    shown = 0.0  # the spread the pairs show themselves
    if len(d) >= 2:
        # The pairs' own spread, and the spread of each side's repeats (which drift between the
        # pairs adds to): with so few pairs, the largest is the one trusted.
        repeats = pooled(groups([[a for a, _ in kept], [b for _, b in kept]]))
        shown = max(statistics.stdev(d), math.sqrt(2.0) * repeats)
    root = math.sqrt(len(d))
    margin = max(Z * prior, t_quantile(len(d) - 1) * shown) / root
    ratio = math.exp(statistics.fmean(d))
    spread = ratio * max(prior, shown) / root
    return Verdict(ratio=ratio, spread=spread, pairs=len(d), noise=noise, margin=margin)


# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; Z from 30 on.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_quantile(dof: int) -> float:
    """Student's t at 0.975 for ``dof`` degrees of freedom (0: no spread to read, so 0)."""
    if dof < 1:
        return 0.0
    if dof in _T975:
        return _T975[dof]
    return max(Z, 2.228 - (dof - 10) * (2.228 - 2.042) / 20) if dof < 30 else Z


def single(challenger: float, default: float, noise: float) -> Verdict:
    """The verdict on one figure of each, unpaired (what nominates a challenger, or not)."""
    noise = max(noise, NOISE_FLOOR)
    if challenger <= 0 or default <= 0:
        return Verdict(ratio=0.0, spread=math.inf, pairs=0, noise=noise)
    ratio = challenger / default
    return Verdict(ratio=ratio, spread=ratio * math.sqrt(2.0) * noise, pairs=0, noise=noise)


def nominated(challenger: float, default: float, noise: float) -> bool:
    """Worth measuring again: the challenger's figure beats the default's by more than the noise."""
    return default > 0 and challenger > default * (1.0 + noise)


def paired_runs(
    measure_challenger: Callable[[], float | None],
    measure_default: Callable[[], float | None],
    noise: float,
    max_pairs: int = MAX_PAIRS,
) -> Verdict:
    """Measure challenger and default interleaved (A B A B) until the difference clears the noise
    (in the challenger's favour only from :data:`MIN_PAIRS_TO_WIN` pairs on) or ``max_pairs`` run
    out. A measurement that returns None (it did not fit) ends the comparison."""
    pairs: list[tuple[float, float]] = []
    verdict = Verdict(ratio=0.0, spread=math.inf, pairs=0, noise=noise)
    for _ in range(max_pairs):
        a = measure_challenger()
        if a is None:
            break
        b = measure_default()
        if b is None:
            break
        pairs.append((a, b))
        verdict = judge(pairs, noise)
        if verdict.clears and (verdict.ratio < 1 or verdict.pairs >= MIN_PAIRS_TO_WIN):
            break
        if verdict.pairs >= 2 and verdict.ratio <= 1:  # behind on average: another pair cannot win it
            break
        if (
            len(pairs) == max_pairs - 1
            and len(pairs) >= MIN_PAIRS_TO_WIN - 1
            and not can_still_win(pairs, noise)
        ):
            break  # no last pair, however fast, would clear the noise: the default stands either way
    return verdict


def can_still_win(pairs: Sequence[tuple[float, float]], noise: float) -> bool:
    """Whether one more pair could make the challenger win: some ratio, up to 3x, for which the
    verdict on all the pairs clears the noise in its favour (the default side measured at its
    mean). Where none does, the last pair is not measured: the answer would be the same."""
    default = statistics.fmean(b for _, b in pairs)
    for step in range(1, 111):
        ratio = math.exp(step / 100)
        if judge([*pairs, (default * ratio, default)], noise).challenger_wins:
            return True
    return False


@dataclass
class Decision:
    """One comparison that could change an answer, as the profile keeps it (``decisions``)."""

    what: str  # batch, workers or variant
    default: str  # the choice that stands unless beaten, e.g. "batch 64"
    challenger: str  # the fastest other choice measured ("" when there was none)
    chosen: str
    verdict: str  # faster, no measurable difference, slower, or default fastest
    ratio: float | None  # challenger / default samples/s
    spread: float | None  # one standard error of the ratio
    pairs: int  # paired runs it rests on
    noise: float  # relative noise of one measurement it was judged against
    extra: int  # probes or trials measured for it beyond the run's plan
    text: str = ""  # the sentence the summary prints
    measurements: list[dict[str, Any]] = field(default_factory=list)  # every paired figure, in order

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def decide(
    what: str,
    default: str,
    challenger: str,
    verdict: Verdict | None,
    *,
    extra: int,
    measurements: list[dict[str, Any]] | None = None,
    why_default: str = "",
    noise: float = 0.0,
) -> Decision:
    """The :class:`Decision` for ``verdict`` (None: nothing measured faster than the default; then
    ``noise`` is the one it was judged against), with its sentence."""
    if verdict is None or not challenger:
        return Decision(
            what, default, "", default, "default fastest", None, None, 0, max(noise, NOISE_FLOOR), extra,
            f"{default} is the fastest measured", measurements or [],
        )  # fmt: skip
    if verdict.challenger_wins:
        result, chosen = "faster", challenger
        text = f"{challenger} is {verdict.figures()} the samples/s of {default}, so it is recommended"
    else:
        result = "slower" if verdict.clears and verdict.ratio < 1 else NO_DIFFERENCE
        chosen = default
        text = f"{challenger} against {default}: {result}, {verdict.figures()}; {why_default or default} is recommended"
    ratio = verdict.ratio if verdict.ratio > 0 else None
    spread = verdict.spread if math.isfinite(verdict.spread) else None
    return Decision(
        what, default, challenger, chosen, result, ratio, spread, verdict.pairs, verdict.noise, extra, text,
        measurements or [],
    )  # fmt: skip


def challenge(
    what: str,
    default: str,
    challenger: str,
    default_rate: float,
    challenger_rate: float,
    measure_default: Callable[[], float | None],
    measure_challenger: Callable[[], float | None],
    noise: float,
    *,
    max_pairs: int = MAX_PAIRS,
    why_default: str = "",
) -> Decision:
    """Decide between ``default`` and ``challenger`` from their figures so far: no challenge where
    the default measured faster; the default stands without another measurement where the
    challenger is not faster by more than the noise; else paired runs (:func:`paired_runs`).
    ``decision.chosen`` names the winner; ``decision.extra`` counts the measurements it took."""
    if not challenger or challenger_rate <= default_rate:
        return decide(what, default, "", None, extra=0, noise=noise)
    if not nominated(challenger_rate, default_rate, noise) or max_pairs < 1:
        verdict = single(challenger_rate, default_rate, noise)
        return decide(what, default, challenger, verdict, extra=0, why_default=why_default)
    measurements: list[dict[str, Any]] = []

    def counted(role: str, measure: Callable[[], float | None]) -> Callable[[], float | None]:
        def run() -> float | None:
            value = measure()
            measurements.append({"role": role, "samples_per_s": value if value is not None else 0.0})
            return value

        return run

    verdict = paired_runs(
        counted("challenger", measure_challenger), counted("default", measure_default), noise, max_pairs
    )
    if verdict.pairs == 0:  # the first measurement did not fit: the single figures are all there is
        verdict = single(challenger_rate, default_rate, noise)
    return decide(
        what,
        default,
        challenger,
        verdict,
        extra=len(measurements),
        measurements=measurements,
        why_default=why_default,
    )
