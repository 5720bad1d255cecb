"""The Optuna study over a real SQLite storage with fake trials (real trials run in tests/e2e)."""

from __future__ import annotations

import pytest

from autotune.errors import ProbeError
from autotune.study import run_study
from probes.protocol import ProbeResult


class FakeLoader:
    """samples/s peaks at ``best`` workers; more workers contend for cores."""

    def __init__(self, best: int = 6, rss_per_worker: int = 300 * 1024**2):
        self.best = best
        self.rss_per_worker = rss_per_worker
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, workers: int, prefetch: int | None) -> ProbeResult:
        self.calls.append((workers, prefetch))
        updt = 0.2
        data = max(0.0, 1.2 / max(workers, 0.5) - updt) + 0.02 * max(0, workers - self.best)
        return ProbeResult(
            status="ok",
            batch_size=32,
            data_s=data,
            updt_s=updt,
            samples_per_s=32 / (data + updt),
            loader_rss_bytes=workers * self.rss_per_worker,
        )


def test_the_study_tries_the_prediction_first_and_always_lerobots_defaults(tmp_path) -> None:
    fake = FakeLoader()
    outcome = run_study(
        fake, storage_path=tmp_path / "s.db", study_name="x", n_trials=5, max_workers=8,
        first_guesses=[(6, 2)],
    )  # fmt: skip
    assert fake.calls[0] == (6, 2)
    assert (4, 4) in fake.calls
    assert outcome.lerobot_default is not None
    assert outcome.best.result.samples_per_s == max(t.result.samples_per_s for t in outcome.trials)
    assert len(outcome.trials) == 5


def test_an_interrupted_study_resumes_without_measuring_again(tmp_path) -> None:
    fake = FakeLoader()
    run_study(
        fake,
        storage_path=tmp_path / "s.db",
        study_name="x",
        n_trials=2,
        max_workers=8,
        first_guesses=[(6, 2)],
    )
    assert len(fake.calls) == 2
    again = FakeLoader()
    outcome = run_study(again, storage_path=tmp_path / "s.db", study_name="x", n_trials=4, max_workers=8)
    assert len(again.calls) == 2  # only the two missing trials
    assert len(outcome.trials) == 4
    assert sum(t.resumed for t in outcome.trials) == 2


def test_a_setting_over_the_host_memory_budget_is_never_recommended(tmp_path) -> None:
    fake = FakeLoader(best=6, rss_per_worker=1024**3)
    outcome = run_study(
        fake, storage_path=tmp_path / "s.db", study_name="x", n_trials=4, max_workers=8,
        first_guesses=[(6, 2), (2, 2)], host_budget_bytes=3 * 1024**3,
    )  # fmt: skip
    assert outcome.best.num_workers <= 3
    over = [t for t in outcome.trials if t.num_workers > 3]
    assert over and all(t.result.status == "oom" and "host" in t.result.message for t in over)


def test_a_trial_that_errors_stops_the_study_with_its_message(tmp_path) -> None:
    def broken(workers: int, prefetch: int | None) -> ProbeResult:
        return ProbeResult(status="error", batch_size=8, message="DatasetError: dataset x.mp4: truncated")

    with pytest.raises(ProbeError, match="truncated"):
        run_study(broken, storage_path=tmp_path / "s.db", study_name="x", n_trials=2, max_workers=2)
