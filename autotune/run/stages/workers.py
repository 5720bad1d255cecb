"""Tune the DataLoader: the Optuna study over num_workers and prefetch_factor at the chosen batch."""

from __future__ import annotations

import logging

from autotune.outputs.profile import conditions_key
from autotune.run.context import RunContext
from autotune.run.prober import Prober
from autotune.run.stages.variant import VariantOutcome
from autotune.tuning.decoder_choice import challenge_decoder, worth_challenging
from autotune.tuning.feed_model import FeedModel
from autotune.tuning.noise import MAX_PAIRS, TRIAL_REPEATS
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
        outcome = confirm_best(outcome, trial, host_budget_bytes=ctx.host_budget, on_trial=record)
    return tune_decoder(ctx, prober, winner, outcome)


def tune_decoder(
    ctx: RunContext, prober: Prober, winner: VariantOutcome, outcome: StudyOutcome
) -> StudyOutcome:
    """The other video decoder the trainer can use (PyAV always; torchcodec where it loads in the
    trainer and here), at the recommended setting, where the decode probe measured it faster."""
    decision = winner.decision
    assert decision is not None
    current = ctx.decoder.measured
    outcome.video_backend = current
    costs = prober.decoded.get(str(ctx.data.root), {})
    other = "pyav" if current == "torchcodec" else None  # the trainer's torchcodec is measured when it can be
    if not worth_challenging(current, other, costs):
        return outcome
    assert other is not None
    log.info(
        "%s read a sample in %.1f ms against %s's %.1f ms: measuring it at the recommended setting",
        other, costs[other] * 1000, current, costs[current] * 1000,
    )  # fmt: skip

    def trial(workers: int, prefetch: int | None, backend: str) -> ProbeResult:
        return prober.trial(winner.variant, decision.batch_size, workers, prefetch, video_backend=backend)

    def record(t: TrialRecord) -> None:
        prober.record_trial(winner.variant, t)

    with prober.progress.stage("decoder", "video decoder", total=1 + 2 * MAX_PAIRS, unit="trial"):
        return challenge_decoder(
            outcome, current, other, trial, host_budget_bytes=ctx.host_budget, on_trial=record
        )
