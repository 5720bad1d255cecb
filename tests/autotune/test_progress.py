"""What a person watching a run sees: the whole run's duration said early, with hints when long."""

from __future__ import annotations

import logging

from autotune.run.eta import WorkPlan
from autotune.run.progress import Progress
from probes.catalogue import cut_down
from probes.protocol import ProbeResult

MiB = 1024**2


def progress(device_type: str = "cpu") -> Progress:
    plan = WorkPlan(
        variants=1, budget_bytes=2048 * MiB, headroom=0.1, warmup_steps=1, measure_steps=3,
        throughput_points=2, soak_steps=5, trials=8, trial_steps=4,
    )  # fmt: skip
    return Progress(plan, max_batch_cap=8192, device_type=device_type, hints=["cut the model down"])


def fits(batch: int, step_s: float, peak_mib: float) -> ProbeResult:
    return ProbeResult(
        status="ok", batch_size=batch, step_time_s=step_s, steps=3, wall_s=3 * step_s + 8,
        peak_reserved_bytes=int(peak_mib * MiB),
    )  # fmt: skip


def test_the_estimate_is_said_once_two_sizes_have_trained_with_hints_for_a_long_cpu_run(caplog) -> None:
    caplog.set_level(logging.INFO, logger="autotune.run.progress")
    watch = progress()
    with watch.stage("search", "search", total=None):
        watch.probe_done(fits(1, 0.5, 1000))
        assert watch.remaining_s() is None and not caplog.records  # one size says nothing yet
        watch.probe_done(fits(4, 1.4, 1009))  # 3 MiB and 0.3 s per sample: (2048 - 997) / 3 = 350 fit
        watch.probe_done(fits(64, 19.4, 1189))
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("estimate:")]) == 1
    assert "this CPU" in lines[0] and "about 350" in lines[0]
    assert any(line.startswith("to finish sooner: cut the model down") for line in lines)
    left = watch.remaining_s()
    assert left is not None and left > 10 * 60


def test_a_short_run_and_a_gpu_run_get_no_hints(caplog) -> None:
    caplog.set_level(logging.INFO, logger="autotune.run.progress")
    for watch, step in ((progress("cpu"), 0.001), (progress("cuda"), 0.5)):
        with watch.stage("search", "search", total=None):
            watch.probe_done(fits(1, step, 1000))
            watch.probe_done(fits(4, 2.8 * step, 1009))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" on ")[1].split(" ")[0] for line in lines if line.startswith("estimate:")] == [
        "this",
        "this",
    ]
    assert "this GPU" in lines[-1]
    assert not any(line.startswith("to finish sooner") for line in lines)


def test_a_search_that_ends_early_still_says_the_estimate(caplog) -> None:
    caplog.set_level(logging.INFO, logger="autotune.run.progress")
    watch = progress()
    with watch.stage("search", "search", total=None):
        watch.probe_done(fits(1, 0.5, 1000))
        watch.probe_done(ProbeResult(status="oom", batch_size=4))
    watch.search_done(max_batch=3)
    assert any(r.getMessage().startswith("estimate:") for r in caplog.records)


def test_the_hints_leave_out_what_the_run_already_does() -> None:
    from autotune.run.config import RunConfig
    from autotune.run.pipeline import quicker

    small = RunConfig(
        policy="act", device="cpu", precision="fp32", policy_overrides=cut_down("act", "quick"), trials=3
    )
    assert quicker(small, (48, 64), "synthetic") == ["or run on a GPU"]
    full = RunConfig(policy="act", device="cpu", precision="fp32", trials=8, mission_precision="fp32")
    hints = quicker(full, (480, 640), "synthetic")
    assert hints[0].startswith("cut the model down (--set dim_model=64")
    assert "smaller cameras (--image-size 240x320)" in hints
    assert "fewer worker trials (--trials 3; now 8)" in hints and "one variant (--trainer-only)" in hints
    assert quicker(full, (480, 640), "user")[1] == "fewer worker trials (--trials 3; now 8)"
