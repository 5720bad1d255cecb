"""The regression alarm: changes beyond the measured noise, named with what changed on the machine."""

from __future__ import annotations

import pandas as pd

from autotune.nightly.alarm import compare, history, step_noise
from autotune.outputs.results import RUN_COLUMNS


def runs(samples: list[float], **fields: object) -> list[dict]:
    base = {"max_batch_size": 113, "data_s": 0.01, "updt_s": 10.0, "driver_version": "580.65"}
    return [{**base, **fields, "samples_per_s": s} for s in samples]


def test_a_drop_beyond_the_spread_of_earlier_runs_is_a_regression_named_with_the_driver() -> None:
    previous = runs([410, 405, 412, 408, 406])
    now = runs([360], driver_version="590.12")[0]
    (alert,) = compare(previous, now, {})
    assert alert.kind == "regression" and alert.metric == "samples_per_s"
    assert alert.text.startswith("regression: driver 580.65 -> 590.12: samples/s 408 -> 360 (-12%, noise 1%)")
    assert compare(previous, runs([404])[0], {}) == []  # within three times the spread


def test_speeds_are_judged_once_three_runs_measured_their_spread() -> None:
    # One earlier run: no run-to-run spread yet, so no verdict on speed, however far it moved.
    assert compare(runs([400]), runs([300])[0], {"samples_per_s": 2.0}) == []
    previous = runs([400, 400, 400])
    assert compare(previous, runs([380])[0], {"samples_per_s": 2.0})[0].kind == "regression"
    # This run's own step spread counts where it is larger than the history's.
    assert compare(previous, runs([380])[0], {"samples_per_s": 10.0}) == []
    assert compare(previous, runs([430])[0], {"samples_per_s": 2.0})[0].kind == "improvement"


def test_a_maximum_that_moves_by_one_size_is_noise_and_one_that_falls_is_not() -> None:
    previous = runs([400])
    assert compare(previous, {**runs([400])[0], "max_batch_size": 112}, {}) == []
    (alert,) = compare(previous, {**runs([400])[0], "max_batch_size": 100}, {})
    assert (alert.kind, alert.metric) == ("regression", "max_batch_size")


def test_waiting_that_stays_a_sliver_of_the_step_raises_nothing() -> None:
    previous = runs([400, 400, 400], data_s=0.01)
    assert compare(previous, runs([400], data_s=0.05)[0], {"data_s": 0.001}) == []
    (alert,) = compare(previous, runs([400], data_s=3.0)[0], {"data_s": 0.001})
    assert (alert.kind, alert.metric) == ("regression", "data_s")


def test_history_keeps_the_same_conditions_and_finished_runs(tmp_path) -> None:
    row = {c: "" for c in RUN_COLUMNS} | {"policy": "act", "device": "cpu", "image_h": 96, "status": "ok"}
    frame = pd.DataFrame(
        [
            row | {"run_id": "a"},
            row | {"run_id": "b", "status": "failed"},
            row | {"run_id": "c", "image_h": 480},
            row | {"run_id": "d", "status": "checked"},
            row | {"run_id": "now"},
        ]
    )
    frame.to_csv(tmp_path / "runs.csv", index=False)
    assert [r["run_id"] for r in history(tmp_path / "runs.csv", row | {"run_id": "now"})] == ["a", "d"]


def test_the_step_spread_is_of_per_step_samples_per_second() -> None:
    noise = step_noise(10, [0.0, 0.0, 0.0], [1.0, 1.0, 2.0])
    assert noise["samples_per_s"] > 0 and noise["data_s"] == 0
