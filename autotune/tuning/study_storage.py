"""Where the worker study lives: its Optuna storage, and the trials a killed run left running."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna

from autotune.errors import UserError

# A running trial beats its heartbeat this often; one silent for the grace period belonged to a run
# that was killed (on storage shared between machines; under the results folder's lock, any trial
# still running when a run starts is from a dead run).
HEARTBEAT_S = 30
GRACE_S = 120
CREATE_TRIES = 5  # a shared database's tables, created by machines that start at once


def open_storage(storage_path: Path, url: str | None = None) -> optuna.storages.RDBStorage:
    """The Optuna storage in SQLite at ``storage_path``, or in the shared database at ``url`` (its
    tables created if new); one line if it is not an Optuna storage. ``autotune.run.context`` opens it
    once before the first probe, so that a junk file fails before any row is written."""
    import sqlalchemy.exc

    if url is None:
        storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # autotune says what failed, in one line
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(CREATE_TRIES):
        try:
            return optuna.storages.RDBStorage(
                url or f"sqlite:///{storage_path}",
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Machines of a fleet that start at once race to create Optuna's tables in a new shared
            # database: PostgreSQL refuses all but one (a duplicate type or relation). The tables are
            # there a moment later, so the others try again.
            if url is None or attempt == CREATE_TRIES - 1:
                raise _not_a_storage(exc, storage_path, url) from None
            time.sleep(0.5 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as exc:
            raise _not_a_storage(exc, storage_path, url) from None
    raise AssertionError("unreachable")


def _not_a_storage(exc: BaseException, storage_path: Path, url: str | None) -> UserError:
    from autotune.redact import hide_secrets

    text = hide_secrets(str(exc), url).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if url is not None:
        from autotune.fleet import shown

        return UserError(f"--storage {shown(url)}: the worker study cannot be opened ({reason[:160]})")
    return UserError(
        f"{storage_path} is not a worker study autotune can open ({reason[:120]}); move it aside "
        "and run again (earlier trials in it are not used)"
    )


def open_study(storage_path: Path, study_name: str, seed: int, url: str | None = None) -> optuna.Study:
    """The study in SQLite at ``storage_path``, or in the shared database at ``url`` (created, or
    loaded to resume); one line if it is not an Optuna storage."""
    import sqlalchemy.exc

    storage = open_storage(storage_path, url)
    try:
        return optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            load_if_exists=True,
        )
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as exc:
        raise _not_a_storage(exc, storage_path, url) from None


def fleet_url_shown(url: str) -> str:
    from autotune.fleet import shown

    return shown(url)


def take_over(study: optuna.Study, shared: bool = False) -> int:
    """Trials an earlier, killed run left running are failed, so that the study tries their settings
    again first (as it does every failed trial's); their number. On storage ``shared`` between
    machines a running trial may be another machine's: only those whose heartbeat stopped are taken
    over."""
    optuna.storages.fail_stale_trials(study)  # heartbeat-stale trials, queued again by the callback
    if shared:
        return 0
    taken = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # By number: Study.tell finishes a running trial that another process asked for.
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        taken += 1
    return taken
