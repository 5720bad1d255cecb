"""The Optuna study over a real SQLite storage with fake trials (real trials run in tests/e2e)."""

from __future__ import annotations

import optuna
import pytest

from autotune.errors import ProbeError, UserError
from autotune.tuning.study import run_study
from autotune.tuning.study_storage import open_study, take_over
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


def test_a_trial_that_failed_is_not_counted_and_is_tried_again(tmp_path) -> None:
    calls: list[tuple[int, int | None]] = []

    def flaky(workers: int, prefetch: int | None) -> ProbeResult:
        calls.append((workers, prefetch))
        if len(calls) == 1:
            return ProbeResult(status="error", batch_size=8, message="a worker crashed")
        return FakeLoader()(workers, prefetch)

    with pytest.raises(ProbeError, match="crashed"):
        run_study(
            flaky,
            storage_path=tmp_path / "s.db",
            study_name="x",
            n_trials=2,
            max_workers=8,
            first_guesses=[(6, 2)],
        )
    storage = optuna.load_study(study_name="x", storage=f"sqlite:///{tmp_path / 's.db'}")
    states = [t.state for t in storage.trials]
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.COMPLETE not in states
    # The next run (even after --trials of them failed) measures, the failed setting again.
    outcome = run_study(flaky, storage_path=tmp_path / "s.db", study_name="x", n_trials=2, max_workers=8)
    assert (6, 2) in calls[1:]
    assert len(outcome.trials) == 2 and all(t.result.fits for t in outcome.trials)


def test_a_trial_a_killed_run_left_running_is_taken_over_not_duplicated(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    killed = optuna.create_study(study_name="x", storage=storage, direction="maximize")
    orphan = killed.ask()
    orphan.suggest_int("num_workers", 0, 8)
    orphan.suggest_categorical("prefetch_factor", (1, 2, 4, 8))
    left = (orphan.params["num_workers"], orphan.params["prefetch_factor"])
    fake = FakeLoader()
    outcome = run_study(fake, storage_path=tmp_path / "s.db", study_name="x", n_trials=3, max_workers=8)
    assert fake.calls[0] == (left[0], left[1] if left[0] > 0 else None)
    assert len(fake.calls) == 3 and len(outcome.trials) == 3
    states = [t.state for t in optuna.load_study(study_name="x", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.RUNNING) == 0
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3


def test_a_file_that_is_not_a_study_is_one_line_and_left_alone(tmp_path) -> None:
    junk = tmp_path / "s.db"
    junk.write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(UserError, match="s.db is not a worker study") as err:
        run_study(FakeLoader(), storage_path=junk, study_name="x", n_trials=1, max_workers=2)
    assert "\n" not in str(err.value) and "move it aside" in str(err.value)
    assert junk.read_bytes() == b"not a database, just bytes" * 100


def test_a_running_trial_a_dead_run_left_is_failed_and_queued_again(tmp_path) -> None:
    dead = optuna.create_study(study_name="x", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    orphan = dead.ask()
    orphan.suggest_int("num_workers", 1, 8)
    orphan.suggest_categorical("prefetch_factor", (1, 2, 4, 8))
    study = open_study(tmp_path / "s.db", "x", seed=0)  # a new run: its own Study object
    assert take_over(study) == 1
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert take_over(study) == 0  # nothing is left running
    fake = FakeLoader()
    outcome = run_study(fake, storage_path=tmp_path / "s.db", study_name="x", n_trials=2, max_workers=8)
    setting = (orphan.params["num_workers"], orphan.params["prefetch_factor"])
    assert fake.calls[0] == setting and fake.calls.count(setting) == 1
    assert [t.setting for t in outcome.trials].count(setting) == 1


def test_on_shared_storage_a_running_trial_without_a_stale_heartbeat_is_left_alone(tmp_path) -> None:
    other = optuna.create_study(
        study_name="x", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize"
    )
    running = other.ask()  # another machine's trial, under way
    running.suggest_int("num_workers", 0, 8)
    study = open_study(tmp_path / "s.db", "x", seed=0)
    assert take_over(study, shared=True) == 0
    assert study.trials[running.number].state == optuna.trial.TrialState.RUNNING
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
