"""From the certified maximum to the batch to train with: throughput, soak, target batches, and
the memory model that predicts other cards."""

from __future__ import annotations

import pytest

from autotune.errors import ProbeError
from autotune.tuning.batch import decide_batch, headroom_batch, split_target
from autotune.tuning.search import find_max_batch
from probes.protocol import ProbeResult
from tests.fakes import FakeProbe, GiB, MiB, linear


class SoakingProbe:
    """A fake whose soaks fail above ``soak_limit`` (out of memory) or thrash above
    ``retry_limit``, and whose throughput follows ``speed(batch)``."""

    def __init__(self, base: FakeProbe, soak_limit: int = 10**9, retry_limit: int = 10**9, speed=None):
        self.base = base
        self.soak_limit = soak_limit
        self.retry_limit = retry_limit
        self.speed = speed or (lambda b: b / base.step_time(b))
        self.calls: list[tuple[int, str]] = []

    def __call__(self, batch_size: int, phase: str) -> ProbeResult:
        self.calls.append((batch_size, phase))
        result = self.base(batch_size)
        if result.fits:
            result.samples_per_s = self.speed(batch_size)
            result.step_time_s = batch_size / result.samples_per_s
        if phase == "soak" and result.fits:
            if batch_size > self.soak_limit:
                return ProbeResult(status="oom", batch_size=batch_size, message="fake soak oom")
            if batch_size > self.retry_limit:
                result.alloc_retries = 3
        return result


DEFAULT_CURVE = linear(1 * GiB, 10 * MiB)


def searched(curve=DEFAULT_CURVE, budget=4 * GiB):
    base = FakeProbe(curve, budget)
    return base, find_max_batch(base, budget)


def test_the_recommendation_is_the_largest_batch_within_headroom_when_it_is_fastest() -> None:
    base, search = searched()
    probe = SoakingProbe(base)
    decision = decide_batch(search, probe, headroom=0.10)
    assert decision.batch_size == decision.headroom_batch
    assert 1 * GiB + 10 * MiB * decision.batch_size <= 0.9 * 4 * GiB
    assert decision.soaks and not decision.lowered_by_soak
    assert [phase for _, phase in probe.calls].count("soak") == 1
    sizes = [p.batch_size for p in decision.curve]
    assert decision.headroom_batch // 2 in sizes and decision.headroom_batch in sizes


def test_a_smaller_batch_that_is_clearly_faster_is_recommended() -> None:
    base, search = searched()
    peak_at = 120
    probe = SoakingProbe(base, speed=lambda b: 1000 - abs(b - peak_at) * 3)
    decision = decide_batch(search, probe, headroom=0.10, throughput_points=4)
    assert decision.batch_size < decision.headroom_batch
    assert decision.soak_result is not None and decision.soak_result.batch_size == decision.batch_size


def test_a_smaller_batch_within_noise_does_not_displace_the_largest() -> None:
    base, search = searched()
    probe = SoakingProbe(base, speed=lambda b: 1000 + (5 if b < 200 else 0))  # 0.5% faster: noise
    decision = decide_batch(search, probe, headroom=0.10)
    assert decision.batch_size == decision.headroom_batch


def test_a_soak_that_runs_out_of_memory_lowers_the_batch() -> None:
    base, search = searched()
    probe = SoakingProbe(base, soak_limit=200)
    decision = decide_batch(search, probe, headroom=0.10)
    assert decision.headroom_batch > 200 >= decision.batch_size
    assert decision.lowered_by_soak
    assert decision.soaks[0].status == "oom" and decision.soaks[-1].status == "ok"


def test_a_soak_that_thrashes_the_allocator_lowers_the_batch() -> None:
    base, search = searched()
    probe = SoakingProbe(base, retry_limit=240)
    decision = decide_batch(search, probe, headroom=0.10)
    assert decision.batch_size <= 240
    assert any(s.reason == "allocator retries" for s in decision.soaks)


def test_a_soak_that_peaks_above_the_headroom_lowers_the_batch() -> None:
    base, search = searched()
    probe = SoakingProbe(base)
    heavier = probe.__call__

    def soak_heavier(batch_size: int, phase: str) -> ProbeResult:
        result = heavier(batch_size, phase)
        if phase == "soak" and result.fits:
            result.peak_reserved_bytes += 40 * MiB  # a longer run reaches a little higher
        return result

    decision = decide_batch(search, soak_heavier, headroom=0.10)
    assert decision.lowered_by_soak
    assert decision.soaks[0].reason == "peak above the headroom"
    assert decision.soak_result.peak_reserved_bytes <= 0.9 * 4 * GiB
    assert decision.batch_size < decision.headroom_batch


def test_no_soak_that_passes_is_an_error() -> None:
    base, search = searched()
    with pytest.raises(ProbeError, match="soak"):
        decide_batch(search, SoakingProbe(base, soak_limit=0), headroom=0.10)


def test_target_batch_splits_into_the_fastest_divisor_that_fits() -> None:
    base, search = searched()  # headroom batch 266
    decision = decide_batch(search, SoakingProbe(base), headroom=0.10, target_batch=1024)
    assert decision.batch_size * decision.grad_accum_steps == 1024
    assert decision.batch_size == 256 and decision.grad_accum_steps == 4


def test_target_batch_below_the_maximum_needs_no_accumulation() -> None:
    base, search = searched()
    decision = decide_batch(search, SoakingProbe(base), headroom=0.10, target_batch=96)
    assert (decision.batch_size, decision.grad_accum_steps) == (96, 1)


def test_target_batch_lowered_by_the_soak_stays_a_divisor() -> None:
    base, search = searched()
    decision = decide_batch(search, SoakingProbe(base, soak_limit=200), headroom=0.10, target_batch=1024)
    assert decision.batch_size <= 200
    assert decision.batch_size * decision.grad_accum_steps == 1024


def test_split_target_lists_the_largest_divisors_first() -> None:
    assert split_target(1000, 300) == [250, 200, 125]
    assert split_target(7, 100) == [7, 1]
    assert split_target(13, 5) == [1]


def test_the_headroom_batch_keeps_the_headroom() -> None:
    budget = 4 * GiB
    probe = FakeProbe(linear(1 * GiB, 10 * MiB), budget)
    outcome = find_max_batch(probe, budget)
    largest = headroom_batch(outcome, 0.10)
    assert 1 * GiB + 10 * MiB * largest <= 0.9 * budget < 1 * GiB + 10 * MiB * (largest + 1)
    assert headroom_batch(outcome, 0.0) == outcome.max_batch


def test_a_trainer_without_accumulation_takes_a_target_batch_that_fits_whole() -> None:
    budget = 8 * GiB
    probe = FakeProbe(linear(1 * GiB, 20 * MiB), budget)
    search = find_max_batch(probe, budget)
    sized = lambda size, phase: probe(size)  # noqa: E731

    whole = decide_batch(search, sized, headroom=0.1, target_batch=96, accumulate=False)
    assert (whole.batch_size, whole.grad_accum_steps) == (96, 1)
    # One that does not fit whole is still split; the printed command says the trainer cannot.
    split = decide_batch(search, sized, headroom=0.1, target_batch=1024, accumulate=False)
    assert split.grad_accum_steps > 1 and split.batch_size * split.grad_accum_steps == 1024


def test_a_search_that_fitted_at_one_size_only_gets_a_second_size_for_the_memory_model() -> None:
    from autotune.tuning.memory_model import fit_model

    base = FakeProbe(DEFAULT_CURVE, 4 * GiB)
    search = find_max_batch(base, 4 * GiB, max_batch=64, start=64)  # capped: one probe, at 64
    assert [r.batch_size for r in search.probes] == [64]
    assert fit_model(search) is None
    probe = SoakingProbe(base)
    decision = decide_batch(search, probe, headroom=0.10, throughput_points=1)
    assert (32, "throughput") in probe.calls
    timed = [(p.batch_size, p.peak_reserved_bytes) for p in decision.curve if p.phase == "throughput"]
    model = fit_model(search, more=timed)
    assert model is not None and model.per_sample_bytes == pytest.approx(10 * MiB, rel=0.01)


def test_a_search_certified_from_the_estimate_at_one_fitting_size_keeps_its_headroom() -> None:
    from autotune.tuning.memory_fit import MemoryFit

    base = FakeProbe(DEFAULT_CURVE, 4 * GiB)  # 1 GiB + 10 MiB per sample: 307 fits 4 GiB, 308 does not
    estimate = MemoryFit(fixed_bytes=1 * GiB, per_sample_bytes=10 * MiB, points=13)
    search = find_max_batch(base, 4 * GiB, estimate=estimate)
    assert [r.batch_size for r in search.probes] == [307, 308] and search.certified
    # One fitting size: the estimate's slope through it places the headroom, not batch 1.
    assert headroom_batch(search, 0.10) == 266  # (0.9 x 4 GiB - 1 GiB) / 10 MiB
    probe = SoakingProbe(base)
    decision = decide_batch(search, probe, headroom=0.10, throughput_points=1)
    # The fitting sizes all lie next to the limit: half the maximum is timed first, so the headroom
    # rests on two measured sizes far apart.
    assert probe.calls == [(153, "throughput"), (266, "soak")]
    assert decision.batch_size == 266


def test_a_line_through_adjacent_sizes_is_anchored_at_half_before_the_headroom_is_placed() -> None:
    from autotune.tuning.memory_fit import MemoryFit

    # Flat, then steep: a line through 59 and 60 alone, one MiB of noise apart, would put the
    # headroom far off; anchored at 30 it lands within a size of the truth.
    def curve(b: int) -> float:
        noise = 0.6 * MiB if b == 60 else 0.0  # a repeat noise of a few tenths of a MiB
        return 400 * MiB + (0.5 * MiB * b if b <= 30 else 15 * MiB + 1.8 * MiB * (b - 30)) + noise

    budget = 470 * MiB
    base = FakeProbe(curve, budget)
    estimate = MemoryFit(fixed_bytes=360 * MiB, per_sample_bytes=1.8 * MiB, points=13)
    search = find_max_batch(base, budget, estimate=estimate)
    assert search.max_batch == 60 and all(r.batch_size > 30 for r in search.fitting)
    truth = max(b for b in range(1, search.max_batch + 1) if curve(b) <= 0.9 * budget)
    assert headroom_batch(search, 0.10) > truth  # unanchored, the noise tilts the line past it
    probe = SoakingProbe(base)
    decision = decide_batch(search, probe, headroom=0.10, soak=False)
    assert probe.calls[0] == (search.max_batch // 2, "throughput")
    assert truth - 1 <= decision.headroom_batch <= truth
