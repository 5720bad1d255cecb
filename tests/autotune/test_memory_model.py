"""The memory model: a line fitted to the probes, and predictions for other budgets and cards."""

from __future__ import annotations

import pytest

from autotune.tuning.memory_model import fit_model, predict
from autotune.tuning.search import find_max_batch
from tests.fakes import FakeProbe, GiB, MiB, linear, stepped


@pytest.mark.parametrize(
    "curve",
    [
        linear(1.3 * GiB, 41 * MiB),
        stepped(2.1 * GiB, 11.7 * MiB, 20 * MiB),
        stepped(900 * MiB, 7.3 * MiB, 2 * MiB),
    ],
)
def test_the_memory_model_predicts_the_measured_maximum_within_five_percent(curve) -> None:
    budget = 24 * GiB
    base = FakeProbe(curve, budget)
    search = find_max_batch(base, budget)
    model = fit_model(search)
    assert model is not None
    assert abs(model.raw_prediction_error) <= 0.05
    at_budget = predict(model, budget, 0.10, card=False)
    assert abs(at_budget.max_batch - search.max_batch) <= 0.05 * search.max_batch
    # Another card: compare with the truth of the same curve under a 12 GiB budget.
    truth = FakeProbe(curve, 12 * GiB).true_max()
    other = predict(model, 12 * GiB, 0.10, card=False)
    assert abs(other.max_batch - truth) <= 0.05 * truth
    assert other.max_batch_low <= other.max_batch <= other.max_batch_high
    assert other.recommended_batch < other.max_batch


def test_a_card_prediction_takes_off_the_cuda_context() -> None:
    base = FakeProbe(linear(1 * GiB, 10 * MiB), 8 * GiB)
    search = find_max_batch(base, 8 * GiB)
    model = fit_model(search, device_overhead_bytes=500 * MiB)
    as_budget = predict(model, 12 * GiB, 0.1, card=False)
    as_card = predict(model, 12 * GiB, 0.1, card=True)
    assert as_budget.max_batch - as_card.max_batch == pytest.approx(50, abs=1)
