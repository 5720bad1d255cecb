"""The feed model (how fast workers feed the step) and the input-bound diagnosis."""

from __future__ import annotations

import pytest

from autotune.tuning.feed_model import FeedModel, Remedy, diagnose


def test_the_feed_model_predicts_the_wait_and_the_workers_needed() -> None:
    model = FeedModel(batch_size=64, decode_s_per_sample=0.02, updt_s=0.4, cores=16)
    assert model.workers_needed == 4  # 64 x 0.02 s = 1.28 s of decoding per batch, 0.4 s per step
    assert model.predicted_data_s(4) == 0.0
    assert model.predicted_data_s(2) == pytest.approx(0.64 - 0.4)
    assert model.predicted_data_s(0) == pytest.approx(1.28)
    assert model.first_guess(max_workers=2) == 2


def test_a_run_that_waits_on_data_is_diagnosed_with_what_would_help() -> None:
    model = FeedModel(batch_size=64, decode_s_per_sample=0.05, updt_s=0.2, cores=4)
    measured = Remedy("cameras at 240x320 instead of 480x640", True, 0.0, 0.1, 640.0, "measured")
    bound = diagnose(batch_size=64, data_s=0.6, updt_s=0.2, model=model, cameras=2, remedies=[measured])
    assert bound is not None
    assert bound.data_fraction == pytest.approx(0.75)
    assert bound.samples_per_s_if_fed == pytest.approx(320.0)
    assert bound.workers_needed == 16 > bound.cores
    whats = [r.what for r in bound.remedies]
    assert whats[0].startswith("cameras at 240x320")
    assert any(w.startswith("more cores") for w in whats)
    assert any("1 camera(s) instead of 2" in w for w in whats)
    assert "75%" in bound.summary()


def test_a_fed_step_is_not_input_bound() -> None:
    model = FeedModel(batch_size=64, decode_s_per_sample=0.001, updt_s=0.5, cores=4)
    assert diagnose(batch_size=64, data_s=0.02, updt_s=0.5, model=model, cameras=2, remedies=[]) is None
