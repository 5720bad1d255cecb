"""The DataLoader study: an Optuna study over ``num_workers`` and ``prefetch_factor``.

Each trial is a real measurement (a worker probe: the real DataLoader feeding the real training
step at the chosen batch); the objective is samples per second, ``batch / (data_s + updt_s)``.
The study lives in SQLite under the results folder, so an interrupted study resumes where it
stopped: trials already measured under the same conditions are not measured again.

The storage, and the trials a killed run left running, are :mod:`autotune.tuning.study_storage`'s;
the study's fastest is weighed against LeRobot's default in :mod:`autotune.tuning.worker_choice`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from autotune.errors import ProbeError
from autotune.tuning.noise import Decision
from autotune.tuning.study_storage import fleet_url_shown, open_study, take_over
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LEROBOT_DEFAULT_WORKERS = 4
LEROBOT_DEFAULT_PREFETCH = 4
PREFETCH_CHOICES = (1, 2, 4, 8)

TrialFn = Callable[[int, int | None], ProbeResult]
# Measured trials: a score, or a measured failure (out of memory, hung). A trial that failed with an
# error is stored as FAIL and is not measured: the next run tries it again.
_MEASURED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class TrialRecord:
    number: int
    num_workers: int
    prefetch_factor: int | None
    result: ProbeResult
    resumed: bool = False  # measured by an earlier, interrupted run of the same study
    default_prefetch: int = LEROBOT_DEFAULT_PREFETCH  # the trainer's own prefetch with 4 workers
    repeat: int = 0  # 0: the study's trial; 1, 2, ...: the same setting measured again to decide
    video_backend: str = ""  # set where the decoder was challenged: which one this trial read with

    @property
    def is_lerobot_default(self) -> bool:
        return self.num_workers == LEROBOT_DEFAULT_WORKERS and self.prefetch_factor == self.default_prefetch

    @property
    def setting(self) -> tuple[int, int | None]:
        return self.num_workers, self.prefetch_factor

    @property
    def label(self) -> str:
        what = f"{self.num_workers} worker{'s' if self.num_workers != 1 else ''}"
        what += f", prefetch {self.prefetch_factor}" if self.prefetch_factor else ""
        return f"LeRobot's default ({what})" if self.is_lerobot_default else what


@dataclass
class StudyOutcome:
    best: TrialRecord  # the recommended setting (after :func:`confirm_best`: its median measurement)
    trials: list[TrialRecord] = field(default_factory=list)  # the study's, one per setting
    storage: str = ""
    study_name: str = ""
    repeats: list[TrialRecord] = field(default_factory=list)  # settings measured again to decide
    decision: Decision | None = None  # the study's fastest against LeRobot's default
    study_best: TrialRecord | None = None  # the study's fastest trial, before the comparison
    # The other video decoder at the recommended setting (autotune.tuning.decoder_choice): its
    # trials, the decision, and the decoder recommended ("" where it was not challenged).
    decoder_trials: list[TrialRecord] = field(default_factory=list)
    decoder_decision: Decision | None = None
    video_backend: str = ""

    def measurements(self, setting: tuple[int, int | None]) -> list[TrialRecord]:
        """Every fitting measurement of ``setting``: its trial and its repeats."""
        return [t for t in (*self.trials, *self.repeats) if t.setting == setting and t.result.fits]

    def representative(self, setting: tuple[int, int | None]) -> TrialRecord | None:
        """The measurement of ``setting`` with the median samples/s (the lower of two middles)."""
        ordered = sorted(self.measurements(setting), key=lambda t: t.result.samples_per_s)
        return ordered[(len(ordered) - 1) // 2] if ordered else None

    @property
    def lerobot_default(self) -> TrialRecord | None:
        trial = next((t for t in self.trials if t.is_lerobot_default and t.result.fits), None)
        return self.representative(trial.setting) if trial else None


def over_host_budget(result: ProbeResult, host_budget_bytes: int | None) -> ProbeResult:
    """``result``, marked out of memory where the loader's processes used more host memory than
    ``host_budget_bytes``: such a setting is never recommended."""
    if result.fits and host_budget_bytes is not None and result.loader_rss_bytes > host_budget_bytes:
        result.status = "oom"
        result.message = (
            f"the loader's processes used {result.loader_rss_bytes} B of host memory, over the "
            f"{host_budget_bytes} B host budget (--host-memory-limit)"
        )
    return result


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
    records = _measured(study, study_name, default_prefetch)
    _enqueue(study, records, n_trials, first_guesses, prefetch_choices, default_prefetch)
    objective = _Objective(
        trial_fn, high, prefetch_choices, host_budget_bytes, default_prefetch, on_trial, records
    )
    to_run = n_trials - len(records)
    if to_run > 0:
        study.optimize(objective, n_trials=to_run, catch=(), gc_after_trial=False)
    scored = [r for r in records if r.result.fits and math.isfinite(r.result.samples_per_s)]
    if not scored:
        raise ProbeError("no worker setting could feed the training step; see worker_trials.csv")
    best = max(scored, key=lambda r: r.result.samples_per_s)
    storage = fleet_url_shown(storage_url) if storage_url else f"sqlite:///{storage_path}"
    return StudyOutcome(best=best, trials=records, storage=storage, study_name=study_name)


def _measured(study: optuna.Study, study_name: str, default_prefetch: int) -> list[TrialRecord]:
    """The trials an earlier run of the study measured: resumed, not measured again."""
    records: list[TrialRecord] = []
    for frozen in study.get_trials(deepcopy=False, states=_MEASURED):
        record = _record_from_frozen(frozen, default_prefetch)
        if record is not None:
            records.append(record)
    if records:
        log.info("resuming study %s: %d trial(s) already measured", study_name, len(records))
    return records


def _enqueue(
    study: optuna.Study,
    records: list[TrialRecord],
    n_trials: int,
    first_guesses: list[tuple[int, int]] | None,
    prefetch_choices: tuple[int, ...],
    default_prefetch: int,
) -> None:
    """Queue the settings to try first: those that failed with an error, the first guesses and
    LeRobot's default, as far as the trials left allow."""
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


@dataclass
class _Objective:
    """One trial: the setting Optuna suggests, measured; samples/s, or a measured failure."""

    trial_fn: TrialFn
    high: int
    prefetch_choices: tuple[int, ...]
    host_budget_bytes: int | None
    default_prefetch: int
    on_trial: Callable[[TrialRecord], None] | None
    records: list[TrialRecord]

    def __call__(self, trial: optuna.trial.Trial) -> float:
        workers = trial.suggest_int("num_workers", 0, self.high)
        prefetch = trial.suggest_categorical("prefetch_factor", self.prefetch_choices)
        prefetch_used = prefetch if workers > 0 else None
        log.info("trial %d: num_workers=%d prefetch_factor=%s", trial.number, workers, prefetch_used)
        result = over_host_budget(self.trial_fn(workers, prefetch_used), self.host_budget_bytes)
        trial.set_user_attr("result", result.to_json())
        record = TrialRecord(
            trial.number, workers, prefetch_used, result, default_prefetch=self.default_prefetch
        )
        if self.on_trial is not None:
            self.on_trial(record)
        if result.status == "error":
            # Stored as failed, not measured: the next run tries this setting again.
            raise ProbeError(f"worker trial (num_workers={workers}) failed: {result.message or 'no message'}")
        self.records.append(record)
        if not result.fits:
            # Out of memory or hung: a measured failure, not a score.
            raise optuna.TrialPruned(f"{result.status}: {result.message}")
        return result.samples_per_s
