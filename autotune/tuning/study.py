"""The DataLoader study: an Optuna study over ``num_workers`` and ``prefetch_factor``.

Each trial is a real measurement (a worker probe: the real DataLoader feeding the real training
step at the chosen batch); the objective is samples per second, ``batch / (data_s + updt_s)``.
The study lives in SQLite under the results folder, so an interrupted study resumes where it
stopped: trials already measured under the same conditions are not measured again.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from autotune.errors import ProbeError, UserError
from autotune.tuning import noise
from autotune.tuning.noise import Decision
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
CREATE_TRIES = 5  # a shared database's tables, created by machines that start at once


@dataclass
class TrialRecord:
    number: int
    num_workers: int
    prefetch_factor: int | None
    result: ProbeResult
    resumed: bool = False  # measured by an earlier, interrupted run of the same study
    default_prefetch: int = LEROBOT_DEFAULT_PREFETCH  # the trainer's own prefetch with 4 workers
    repeat: int = 0  # 0: the study's trial; 1, 2, ...: the same setting measured again to decide

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
        result = over_host_budget(trial_fn(workers, prefetch_used), host_budget_bytes)
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


def trial_noise(records: list[TrialRecord]) -> float:
    """The relative noise of one trial's samples/s (:func:`autotune.tuning.noise.measurement_noise`): the
    per-step spread within the fitting trials, and the spread of settings measured more than once."""
    fitting = [r for r in records if r.result.fits]
    within = []
    for r in fitting:
        rates = noise.per_step_rates(r.result.batch_size, r.result.step_times_s, r.result.data_times_s)
        within.append((noise.relative_spread(rates), len(rates)))
    settings = {r.setting for r in fitting}
    repeats = noise.groups([r.result.samples_per_s for r in fitting if r.setting == s] for s in settings)
    return noise.measurement_noise(within, repeats)


def confirm_best(
    outcome: StudyOutcome,
    trial_fn: TrialFn,
    *,
    host_budget_bytes: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    max_pairs: int = noise.MAX_PAIRS,
) -> StudyOutcome:
    """The study's fastest setting against LeRobot's default, decided against the measured noise.

    Where the fastest beats the default's trial by more than the noise, both are measured again,
    interleaved (fastest, default, ...), up to ``max_pairs`` pairs (:func:`autotune.tuning.noise.challenge`);
    unless the fastest clears the noise, LeRobot's default is recommended. Where the default could
    not be measured (over the host budget, out of memory), the setting that uses the least host
    memory among those within the noise of the fastest is. ``outcome.best`` becomes the recommended
    setting's median measurement; every repeat is kept in ``outcome.repeats`` (and passed to
    ``on_trial``).
    """
    fastest = outcome.best
    outcome.study_best = fastest
    default = next((t for t in outcome.trials if t.is_lerobot_default and t.result.fits), None)
    judged = trial_noise(outcome.trials)

    def measure(record: TrialRecord) -> Callable[[], float | None]:
        def run() -> float | None:
            workers, prefetch = record.setting
            log.info("trial %d again: num_workers=%d prefetch_factor=%s", record.number, workers, prefetch)
            result = over_host_budget(trial_fn(workers, prefetch), host_budget_bytes)
            again = TrialRecord(
                record.number,
                workers,
                prefetch,
                result,
                default_prefetch=record.default_prefetch,
                repeat=1 + sum(t.setting == record.setting for t in outcome.repeats),
            )
            outcome.repeats.append(again)
            if on_trial is not None:
                on_trial(again)
            if result.status == "error":
                raise ProbeError(
                    f"worker trial (num_workers={workers}) failed: {result.message or 'no message'}"
                )
            return result.samples_per_s if result.fits and result.samples_per_s > 0 else None

        return run

    if default is None:
        # LeRobot's default was not measured within the budgets: of the settings within the noise of
        # the fastest, the one whose loader uses the least host memory.
        scored = [t for t in outcome.trials if t.result.fits and t.result.samples_per_s > 0]
        near = [
            t
            for t in scored
            if not noise.single(fastest.result.samples_per_s, t.result.samples_per_s, judged).clears
        ]
        chosen = min(near or [fastest], key=lambda t: (t.result.loader_rss_bytes, -t.result.samples_per_s))
        outcome.decision = noise.decide("workers", chosen.label, "", None, extra=0, noise=judged)
        outcome.decision.verdict = "default not measured"
        outcome.decision.text = (
            f"{chosen.label} is recommended: LeRobot's default was not measured within the budgets, and "
            f"of the {len(near)} setting(s) within the noise ({judged:.0%}) of the fastest it uses the "
            "least host memory"
        )
        outcome.best = chosen
        return outcome
    outcome.decision = noise.challenge(
        "workers",
        default.label,
        fastest.label if fastest is not default else "",
        default.result.samples_per_s,
        fastest.result.samples_per_s,
        measure(default),
        measure(fastest),
        judged,
        max_pairs=max_pairs,
        why_default=default.label,
    )
    log.info("%s", outcome.decision.text)
    chosen = fastest if outcome.decision.chosen == fastest.label and fastest is not default else default
    outcome.best = outcome.representative(chosen.setting) or chosen
    return outcome
