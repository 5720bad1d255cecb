"""The DataLoader study: an Optuna study over ``num_workers`` and ``prefetch_factor``.

Each trial is a real measurement (a worker probe: the real DataLoader feeding the real training
step at the chosen batch); the objective is samples per second, ``batch / (data_s + updt_s)``.
The study lives in SQLite under the results folder, so an interrupted study resumes where it
stopped: trials already measured under the same conditions are not measured again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from autotune.errors import ProbeError
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LEROBOT_DEFAULT_WORKERS = 4
LEROBOT_DEFAULT_PREFETCH = 4
PREFETCH_CHOICES = (1, 2, 4, 8)

TrialFn = Callable[[int, int | None], ProbeResult]
_MEASURED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


@dataclass
class TrialRecord:
    number: int
    num_workers: int
    prefetch_factor: int | None
    result: ProbeResult
    resumed: bool = False  # measured by an earlier, interrupted run of the same study

    @property
    def is_lerobot_default(self) -> bool:
        return (
            self.num_workers == LEROBOT_DEFAULT_WORKERS and self.prefetch_factor == LEROBOT_DEFAULT_PREFETCH
        )


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


def _record_from_frozen(trial: optuna.trial.FrozenTrial) -> TrialRecord | None:
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
    )


def run_study(
    trial_fn: TrialFn,
    *,
    storage_path: Path,
    study_name: str,
    n_trials: int,
    max_workers: int,
    seed: int = 0,
    first_guesses: list[tuple[int, int]] | None = None,
    host_budget_bytes: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> StudyOutcome:
    """Run (or resume) the study until it holds ``n_trials`` measured trials.

    ``first_guesses`` (the predicted number of workers) are tried first; LeRobot's defaults
    (4 workers, prefetch 4) are always among the trials, so the result can say how much the tuned
    choice gains over them. A trial whose loader processes use more host memory than
    ``host_budget_bytes`` counts as out of memory: it is never recommended.
    """
    if n_trials < 1:
        raise ValueError(f"trials must be at least 1, got {n_trials}")
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{storage_path}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        load_if_exists=True,
    )
    high = worker_range(max_workers)
    records: list[TrialRecord] = []
    for frozen in study.get_trials(deepcopy=False):
        if frozen.state in _MEASURED:
            record = _record_from_frozen(frozen)
            if record is not None:
                records.append(record)
    if records:
        log.info("resuming study %s: %d trial(s) already measured", study_name, len(records))

    tried = {(r.num_workers, r.prefetch_factor) for r in records}
    wanted = list(first_guesses or []) + [(LEROBOT_DEFAULT_WORKERS, LEROBOT_DEFAULT_PREFETCH)]
    remaining = n_trials - len(records)
    # Trials that were enqueued but never ran (an interrupted run) are still waiting in the study.
    waiting = {
        (int(t.params.get("num_workers", -1)), t.params.get("prefetch_factor"))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    }
    for workers, prefetch in wanted:
        key = (workers, prefetch if workers > 0 else None)
        if key in tried or (workers, prefetch) in waiting or remaining <= 0:
            continue
        study.enqueue_trial({"num_workers": workers, "prefetch_factor": prefetch})
        tried.add(key)
        remaining -= 1

    def objective(trial: optuna.trial.Trial) -> float:
        workers = trial.suggest_int("num_workers", 0, high)
        prefetch = trial.suggest_categorical("prefetch_factor", PREFETCH_CHOICES)
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
        record = TrialRecord(trial.number, workers, prefetch_used, result)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
        if result.status == "error":
            raise ProbeError(f"worker trial (num_workers={workers}) failed: {result.message or 'no message'}")
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
    return StudyOutcome(best=best, trials=records, storage=storage, study_name=study_name)
