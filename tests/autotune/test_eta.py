"""The run's time estimate: step time and the largest batch from the first probes, then the plan."""

from __future__ import annotations

import pytest

from autotune.run.eta import RunClock, WorkPlan, format_duration, plan_s, remaining_s

MiB = 1024**2


def plan(**changes: object) -> WorkPlan:
    base = dict(
        variants=1, budget_bytes=2048 * MiB, headroom=0.1, warmup_steps=1, measure_steps=3,
        throughput_points=2, soak_steps=5, trials=3, trial_steps=4,
    )  # fmt: skip
    return WorkPlan(**{**base, **changes})  # type: ignore[arg-type]


def test_one_timed_size_scales_the_step_with_the_batch() -> None:
    clock = RunClock()
    clock.record(batch=2, fits=True, step_s=0.5, steps=3, wall_s=4.5, peak_bytes=600 * MiB)
    assert clock.step_s(20) == pytest.approx(5.0)
    assert clock.startup_s == pytest.approx(3.0)  # 4.5 s of wall time, 1.5 s of it the three steps


def test_two_timed_sizes_give_a_line_with_a_fixed_part() -> None:
    clock = RunClock()
    clock.record(1, True, 0.3, 3, 3.0, 500 * MiB)
    clock.record(4, True, 0.6, 3, 4.0, 530 * MiB)
    assert clock.step_s(104) == pytest.approx(0.2 + 0.1 * 104)
    assert clock.step_s(0) == pytest.approx(0.3)  # never faster than the fastest step measured


def test_after_one_probe_the_model_state_separates_fixed_from_per_sample_memory() -> None:
    clock = RunClock()
    # 10M parameters, all trainable: 160 MB of weights, gradients and AdamW state.
    clock.record(1, True, 0.3, 3, 3.0, 160e6 + 10 * MiB, total_params=10_000_000, trainable_params=10_000_000)
    assert clock.max_batch(int(160e6 + 1000 * MiB), cap=8192) == 100
    # A state larger than the peak (memory that was never touched) still leaves a slope.
    clock.state_bytes = 1e12
    assert clock.max_batch(2048 * MiB, cap=8192) >= 1


def test_the_memory_line_and_an_out_of_memory_bound_the_largest_batch() -> None:
    clock = RunClock()
    clock.record(1, True, 0.3, 3, 3.0, 510 * MiB)
    clock.record(4, True, 0.6, 3, 4.0, 540 * MiB)
    assert clock.max_batch(1500 * MiB, cap=8192) == 100  # 500 MiB + 10 MiB per sample
    clock.record(80, False, 0.0, 0, 9.0, 0.0)
    assert clock.max_batch(1500 * MiB, cap=8192) == 79
    clock.known_max = 77
    assert clock.max_batch(1500 * MiB, cap=8192) == 77


def test_the_time_left_shrinks_as_stages_finish() -> None:
    clock = RunClock()
    clock.record(1, True, 0.5, 3, 5.0, 510 * MiB)
    clock.record(4, True, 1.1, 3, 6.8, 540 * MiB)
    work = plan()
    whole = remaining_s(clock, work, 100, done=[], current=None, current_s=0.0)
    assert whole == pytest.approx(
        sum(plan_s(clock, work, 100, s) for s in ("search", "batch", "feed", "workers"))
    )
    midway = remaining_s(clock, work, 100, done=["search"], current="batch", current_s=10.0)
    assert midway == pytest.approx(whole - plan_s(clock, work, 100, "search") - 10.0)
    assert remaining_s(clock, work, 100, ["search", "batch", "feed", "workers"], None, 0.0) == 0
    # --compare tunes two variants: twice the search and the batch stages.
    double = remaining_s(clock, plan(variants=2), 100, done=[], current=None, current_s=0.0)
    assert double == pytest.approx(
        whole + plan_s(clock, work, 100, "search") + plan_s(clock, work, 100, "batch")
    )


def test_the_search_costs_grow_with_the_largest_batch() -> None:
    clock = RunClock()
    clock.record(1, True, 0.3, 3, 3.0, 510 * MiB)
    assert plan_s(clock, plan(), 400, "search") > 3 * plan_s(clock, plan(), 100, "search") / 2
    with pytest.raises(ValueError, match="stage"):
        plan_s(clock, plan(), 100, "lunch")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.2, "1 s"), (42, "42 s"), (95, "2 min"), (3600, "1 h"), (5400, "1 h 30 min")]
)
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
