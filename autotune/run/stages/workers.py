"""Tune the DataLoader: the Optuna study over num_workers and prefetch_factor at the chosen batch."""

from __future__ import annotations

import logging

from autotune.outputs.profile import conditions_key
from autotune.run.context import RunContext
from autotune.run.prober import Prober
from autotune.run.stages.variant import VariantOutcome
from autotune.tuning.feed_model import FeedModel
from autotune.tuning.noise import TRIAL_REPEATS
from autotune.tuning.study import (
    LEROBOT_DEFAULT_PREFETCH,
    PREFETCH_CHOICES,
    StudyOutcome,
    TrialRecord,
    run_study,
    worker_range,
)
from autotune.tuning.worker_choice import confirm_best
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

FIRST_GUESS_PREFETCH = 2
FIRST_GUESS_MAX_WORKERS = 8
TORCH_DEFAULT_PREFETCH = 2  # what a DataLoader with workers prefetches when not told  # without a feed model, try this many workers (cores permitting) first


def tune_workers(
    ctx: RunContext, prober: Prober, winner: VariantOutcome, feed: FeedModel | None
) -> StudyOutcome:
    cfg = ctx.cfg
    decision = winner.decision
    assert decision is not None
    variant = winner.variant
    batch = decision.batch_size
    cores = ctx.fingerprint.cpu_cores
    # The study's name keys the measurements it may resume: same machine, conditions and batch.
    key = conditions_key(
        ctx.conditions,
        ctx.fingerprint,
        {"batch_size": batch, "policy": cfg.policy, "variant": variant.columns()},
    )
    first = feed.first_guess(cores) if feed else min(cores, FIRST_GUESS_MAX_WORKERS)
    # What the trainer lets a user set: without --prefetch_factor (LeRobot before 0.6) the
    # prefetch is fixed, so only the workers are tuned.
    abilities = cfg.trainer.abilities
    fixed = None if abilities.prefetch_flag else (abilities.fixed_prefetch or TORCH_DEFAULT_PREFETCH)
    choices = (fixed,) if fixed else PREFETCH_CHOICES
    log.info(
        "worker study at batch %d: %d trial(s), num_workers 0..%d", batch, cfg.trials, worker_range(cores)
    )

    def trial(workers: int, prefetch: int | None) -> ProbeResult:
        return prober.trial(variant, batch, workers, prefetch)

    def record(t: TrialRecord) -> None:
        prober.record_trial(variant, t)

    # The bar counts the trials, and the repeats that decide against LeRobot's default (at most).
    with prober.progress.stage("workers", "worker study", total=cfg.trials + TRIAL_REPEATS, unit="trial"):
        outcome = run_study(
            trial,
            storage_path=cfg.results / "studies" / f"{cfg.policy}.db",
            storage_url=cfg.storage,
            study_name=f"{cfg.policy}-{key}",
            n_trials=cfg.trials,
            max_workers=cores,
            seed=cfg.seed,
            first_guesses=[(first, FIRST_GUESS_PREFETCH)],
            host_budget_bytes=ctx.host_budget,
            on_trial=record,
            prefetch_choices=choices,
            default_prefetch=fixed or LEROBOT_DEFAULT_PREFETCH,
        )
        # The study's fastest against LeRobot's default, in paired trials against the noise.
        return confirm_best(outcome, trial, host_budget_bytes=ctx.host_budget, on_trial=record)
