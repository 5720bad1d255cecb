"""The DataLoader study: an Optuna study over ``num_workers`` and ``prefetch_factor``.

Each trial is a real measurement (a worker probe: the real DataLoader feeding the real training
step at the chosen batch); the objective is samples per second, ``batch / (data_s + updt_s)``.
The study lives in SQLite under the results folder, so an interrupted study resumes where it
stopped: trials already measured under the same conditions are not measured again.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from autotune.errors import ProbeError, UserError
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LEROBOT_DEFAULT_WORKERS = 4
LEROBOT_DEFAULT_PREFETCH = 4
PREFETCH_CHOICES = (1, 2, 4, 8)

TrialFn = Callable[[int, int | None], ProbeResult]
# Measured trials: a score, or a measured failure (out of memory, hung). A trial that failed with an
# error is stored as FAIL and is not measured: the next run tries it again.
_MEASURED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# A running trial beats its heartbeat this often; one silent for the grace period belonged to a run
# that was killed (on storage shared between machines; under the results folder's lock, any trial
# still running when a run starts is from a dead run).
HEARTBEAT_S = 30
GRACE_S = 120


@dataclass
class TrialRecord:
    number: int
    num_workers: int
    prefetch_factor: int | None
    result: ProbeResult
    resumed: bool = False  # measured by an earlier, interrupted run of the same study
    default_prefetch: int = LEROBOT_DEFAULT_PREFETCH  # the trainer's own prefetch with 4 workers

    @property
    def is_lerobot_default(self) -> bool:
        return self.num_workers == LEROBOT_DEFAULT_WORKERS and self.prefetch_factor == self.default_prefetch


@dataclass
class StudyOutcome:
    best: TrialRecord
    trials: list[TrialRecord] = field(default_factory=list)
    storage: str = ""
    study_name: str = ""

    @property
    def lerobot_default(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.is_lerobot_default and t.result.fits), None)


def worker_range(cores: int) -> int:
    """The most workers the study tries: the cores, or LeRobot's default if that is more."""
    return max(cores, LEROBOT_DEFAULT_WORKERS)


def _record_from_frozen(trial: optuna.trial.FrozenTrial, default_prefetch: int) -> TrialRecord | None:
    attrs = trial.user_attrs
    if "result" not in attrs:
        return None
    result = ProbeResult.from_json(attrs["result"])
    prefetch = trial.params.get("prefetch_factor")
    workers = int(trial.params["num_workers"])
    return TrialRecord(
        number=trial.number,
        num_workers=workers,
        prefetch_factor=int(prefetch) if workers > 0 and prefetch is not None else None,
        result=result,
        resumed=True,
        default_prefetch=default_prefetch,
    )


def open_study(storage_path: Path, study_name: str, seed: int, url: str | None = None) -> optuna.Study:
    """The study in SQLite at ``storage_path``, or in the shared database at ``url`` (created, or
    loaded to resume); one line if it is not an Optuna storage."""
    import sqlalchemy.exc

    if url is None:
        storage_path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # autotune says what failed, in one line
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        storage = optuna.storages.RDBStorage(
            url or f"sqlite:///{storage_path}",
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
        return optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            load_if_exists=True,
        )
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if url is not None:
            from autotune.fleet import shown

            raise UserError(
                f"--storage {shown(url)}: the worker study cannot be opened ({reason[:160]})"
            ) from None
        raise UserError(
            f"{storage_path} is not a worker study autotune can open ({reason[:120]}); move it aside "
            "and run again (earlier trials in it are not used)"
        ) from None


def fleet_url_shown(url: str) -> str:
    from autotune.fleet import shown

    return shown(url)


def take_over(study: optuna.Study, shared: bool = False) -> int:
    """Trials an earlier, killed run left running are failed and queued again; their number. On
    storage ``shared`` between machines a running trial may be another machine's: only those whose
    heartbeat stopped are taken over."""
    optuna.storages.fail_stale_trials(study)  # heartbeat-stale trials, queued again by the callback
    if shared:
        return 0
    taken = 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=True)
        taken += 1
    return taken


def run_study(
    trial_fn: TrialFn,
    *,
    storage_path: Path,
    study_name: str,
    n_trials: int,
    storage_url: str | None = None,
    max_workers: int,
    seed: int = 0,
    first_guesses: list[tuple[int, int]] | None = None,
    host_budget_bytes: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    prefetch_choices: tuple[int, ...] = PREFETCH_CHOICES,
    default_prefetch: int = LEROBOT_DEFAULT_PREFETCH,
) -> StudyOutcome:
    """Run (or resume) the study until it holds ``n_trials`` measured trials.

    ``first_guesses`` (the predicted number of workers) are tried first; LeRobot's defaults (4
    workers, prefetch ``default_prefetch``) are always among the trials, so the result can say how
    much the tuned choice gains over them. A trial whose loader processes use more host memory
    than ``host_budget_bytes`` counts as out of memory: it is never recommended. A trial that
    failed with an error in an earlier run is tried again first; one an earlier run left running
    (it was killed) is taken over, not duplicated.
    """
    if n_trials < 1:
        raise ValueError(f"trials must be at least 1, got {n_trials}")
    study = open_study(storage_path, study_name, seed, storage_url)
    if taken := take_over(study, shared=storage_url is not None):
        log.info("study %s: %d trial(s) a killed run left unfinished are measured again", study_name, taken)
    high = worker_range(max_workers)
    records: list[TrialRecord] = []
    for frozen in study.get_trials(deepcopy=False, states=_MEASURED):
        record = _record_from_frozen(frozen, default_prefetch)
        if record is not None:
            records.append(record)
    if records:
        log.info("resuming study %s: %d trial(s) already measured", study_name, len(records))
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    tried = {(r.num_workers, r.prefetch_factor) for r in records}
    wanted = [(int(t.params["num_workers"]), t.params.get("prefetch_factor")) for t in failed if t.params]
    wanted += [(w, p if p in prefetch_choices else prefetch_choices[0]) for w, p in first_guesses or []]
    wanted.append((LEROBOT_DEFAULT_WORKERS, default_prefetch))
    remaining = n_trials - len(records)
    # Trials that were enqueued but never ran (an interrupted run) are still waiting in the study.
    waiting = {
        (int(t.params.get("num_workers", -1)), t.params.get("prefetch_factor"))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    }
    remaining -= len(waiting)
    for workers, prefetch in wanted:
        key = (workers, prefetch if workers > 0 else None)
        if key in tried or (workers, prefetch) in waiting or remaining <= 0:
            continue
        study.enqueue_trial({"num_workers": workers, "prefetch_factor": prefetch})
        tried.add(key)
        remaining -= 1

    def objective(trial: optuna.trial.Trial) -> float:
        workers = trial.suggest_int("num_workers", 0, high)
        prefetch = trial.suggest_categorical("prefetch_factor", prefetch_choices)
        prefetch_used = prefetch if workers > 0 else None
        log.info("trial %d: num_workers=%d prefetch_factor=%s", trial.number, workers, prefetch_used)
        result = trial_fn(workers, prefetch_used)
        if result.fits and host_budget_bytes is not None and result.loader_rss_bytes > host_budget_bytes:
            result.status = "oom"
            result.message = (
                f"the loader's processes used {result.loader_rss_bytes} B of host memory, over the "
                f"{host_budget_bytes} B host budget (--host-memory-limit)"
            )
        trial.set_user_attr("result", result.to_json())
        record = TrialRecord(trial.number, workers, prefetch_used, result, default_prefetch=default_prefetch)
        if on_trial is not None:
            on_trial(record)
        if result.status == "error":
            # Stored as failed, not measured: the next run tries this setting again.
            raise ProbeError(f"worker trial (num_workers={workers}) failed: {result.message or 'no message'}")
        records.append(record)
        if not result.fits:
            # Out of memory or hung: a measured failure, not a score.
            raise optuna.TrialPruned(f"{result.status}: {result.message}")
        return result.samples_per_s

    to_run = n_trials - len(records)
    if to_run > 0:
        study.optimize(objective, n_trials=to_run, catch=(), gc_after_trial=False)
    scored = [r for r in records if r.result.fits and math.isfinite(r.result.samples_per_s)]
    if not scored:
        raise ProbeError("no worker setting could feed the training step; see worker_trials.csv")
    best = max(scored, key=lambda r: r.result.samples_per_s)
    storage = fleet_url_shown(storage_url) if storage_url else f"sqlite:///{storage_path}"
    return StudyOutcome(best=best, trials=records, storage=storage, study_name=study_name)
