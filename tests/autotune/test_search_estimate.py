"""The search started from an estimate, and next to the limit under noise larger than a sample."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from autotune.tuning.baselines import lightning_binsearch
from autotune.tuning.memory_fit import MemoryFit
from autotune.tuning.next_probe import GUARD_BRACKET
from autotune.tuning.search import find_max_batch
from tests.fakes import FakeProbe, GiB, MiB, linear


def cpu_act_like(b: int) -> float:
    """The cut-down ACT's CPU curve: flat to batch 8, then a slope steepening from 2.2 MiB."""
    return 420 * MiB + (0 if b <= 8 else 2.2 * MiB * (b - 8) + 0.0017 * MiB * (b - 8) ** 2)


CURVES: dict[str, Callable[[int], float]] = {
    "linear": linear(1 * GiB, 10 * MiB),
    "linear_with_offset": linear(1.3 * GiB, 41 * MiB),
    "tiny_per_sample": linear(3 * GiB, 0.9 * MiB),
    "cpu_act_like": cpu_act_like,
}


def estimate_off_by(curve: Callable[[int], float], budget: int, error: float) -> MemoryFit:
    """A line whose predicted maximum is ``error`` (a share) off the true one: the curve's tangent
    at the limit, its slope scaled so that the crossing moves by that share."""
    truth = FakeProbe(curve, budget).true_max()
    slope = curve(truth + 1) - curve(truth)
    target = truth * (1 + error)
    return MemoryFit(fixed_bytes=budget - slope * (target + 0.5), per_sample_bytes=slope, points=6)


@pytest.mark.parametrize(
    ("curve_name", "budget"),
    [(c, b) for c in ("linear", "linear_with_offset") for b in (2 * GiB, 7.5 * GiB, 24 * GiB)]
    + [("tiny_per_sample", 4 * GiB), ("tiny_per_sample", 7.5 * GiB)],
)
@pytest.mark.parametrize("error", [-0.05, -0.02, 0.0, 0.02, 0.05])
def test_search_from_an_estimate_within_five_percent_certifies_in_at_most_four_probes(
    curve_name: str, budget: int, error: float
) -> None:
    curve = CURVES[curve_name]
    probe = FakeProbe(curve, int(budget))
    truth = probe.true_max()
    assert 16 <= truth <= 8192
    outcome = find_max_batch(probe, int(budget), estimate=estimate_off_by(curve, int(budget), error))
    assert outcome.max_batch == truth and outcome.certified
    assert len(probe.calls) <= 4, probe.calls


@pytest.mark.parametrize("budget", [1 * GiB, 2 * GiB, 7.5 * GiB])
@pytest.mark.parametrize("error", [-0.05, 0.0, 0.05])
def test_search_from_an_estimate_on_a_bending_curve_needs_at_most_five_probes(
    budget: int, error: float
) -> None:
    # A line cannot follow the bend exactly: an aim from 5% below can land a size short.
    probe = FakeProbe(cpu_act_like, int(budget))
    outcome = find_max_batch(probe, int(budget), estimate=estimate_off_by(cpu_act_like, int(budget), error))
    assert outcome.max_batch == probe.true_max() and outcome.certified
    assert len(probe.calls) <= 5, probe.calls


def test_search_from_a_wrong_estimate_still_certifies_the_exact_maximum() -> None:
    curve, budget = linear(1 * GiB, 10 * MiB), 4 * GiB
    for error in (-0.6, -0.3, 0.3, 1.5, 9.0):
        probe = FakeProbe(curve, budget)
        outcome = find_max_batch(probe, budget, estimate=estimate_off_by(curve, budget, error))
        assert outcome.max_batch == probe.true_max() and outcome.certified, (error, probe.calls)
        assert len(probe.calls) <= 12, (error, probe.calls)


def probes_after_a_narrow_miss_past_the_retry(
    calls: list[int], fits: Callable[[int], bool]
) -> list[tuple[int, int]]:
    """For each miss that leaves a narrow bracket after the first such miss (whose retry just
    below is allowed): (probes spent after it, probes bisecting its bracket needs)."""
    lo, hi, narrow_misses = 0, 10**9, 0
    found = []
    for i, size in enumerate(calls):
        if fits(size):
            lo = max(lo, size)
        else:
            hi = min(hi, size)
            if lo and hi - lo <= GUARD_BRACKET * lo:
                narrow_misses += 1
                if narrow_misses >= 2 and hi - lo > 1:
                    found.append((len(calls) - i - 1, math.ceil(math.log2(hi - lo))))
    return found


def test_a_miss_in_a_narrow_bracket_costs_no_more_probes_than_bisecting_it() -> None:
    # The second run: the peaks next to the limit repeat 2% of the budget higher than the
    # line the search measured below them, so the aimed size and the ones just under it all run
    # out of memory; the maximum sits some samples lower.
    line = linear(440 * MiB, 2.7 * MiB)
    budget = 1 * GiB
    crossing = int((budget - 440 * MiB) / (2.7 * MiB))
    for shift in (3, 6, 9, 14, 20):

        def curve(b: int, limit: int = crossing - shift) -> float:
            return line(b) + (60 * MiB if b > limit else 0)

        probe = FakeProbe(curve, budget)
        outcome = find_max_batch(probe, budget)
        assert outcome.max_batch == probe.true_max() and outcome.certified
        spent = probes_after_a_narrow_miss_past_the_retry(
            probe.calls, lambda b, curve=curve: curve(b) <= budget
        )
        assert all(after <= bisecting for after, bisecting in spent), (shift, probe.calls, spent)


def noisy(fixed: float, per_sample: float, sigma: float, seed: int) -> Callable[[int], float]:
    errors: dict[int, float] = {}

    def peak(b: int) -> float:
        if b not in errors:
            errors[b] = random.Random(f"{seed}-{b}").gauss(0.0, sigma)
        return fixed + per_sample * b + errors[b]

    return peak


@pytest.mark.parametrize("share", [0.005, 0.01, 0.02])
def test_search_from_an_estimate_stays_within_half_of_lightning_under_noise_up_to_two_percent(
    share: float,
) -> None:
    # Peaks repeat to within a Gaussian error of ``share`` of the budget (fixed per size); the
    # estimate predicts the maximum up to 5% off, as autotune run starts from one.
    ours_total = theirs_total = blind_total = 0
    for seed in range(4):
        for i, budget_mib in enumerate(range(800, 1500, 50)):
            budget = budget_mib * MiB
            curve = noisy(440 * MiB, 2.7 * MiB, share * budget, seed)
            error = (-0.05, -0.025, 0.0, 0.025, 0.05)[(i + seed) % 5]
            crossing = (budget - 440 * MiB) / (2.7 * MiB) * (1 + error)
            estimate = MemoryFit(budget - 2.7 * MiB * crossing, 2.7 * MiB, points=6)
            ours, blind, theirs = (FakeProbe(curve, budget) for _ in range(3))
            outcome = find_max_batch(ours, budget, estimate=estimate)
            assert outcome.certified
            assert curve(outcome.max_batch) <= budget < curve(outcome.max_batch + 1)
            assert find_max_batch(blind, budget).certified
            lightning_binsearch(theirs, budget)
            ours_total += len(ours.calls)
            blind_total += len(blind.calls)
            theirs_total += len(theirs.calls)
    assert 2 * ours_total <= theirs_total, (ours_total, theirs_total)
    assert blind_total < theirs_total, (blind_total, theirs_total)  # blind, noise this large costs more
