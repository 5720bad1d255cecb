"""``autotune run``, end to end: the stages in order, one screen."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from autotune.nightly.alarm import Alert
from autotune.nightly.check import check_profile, sound_alarm
from autotune.outputs.plots import draw_run
from autotune.outputs.profile import Profile, profile_path, up_to_date, write_profile
from autotune.run.config import RunConfig
from autotune.run.context import RunContext, describe_run, open_run
from autotune.run.eta import WorkPlan
from autotune.run.prober import BATCH_MEASURE_STEPS, BATCH_WARMUP_STEPS, Prober
from autotune.run.progress import Progress
from autotune.run.record import run_record
from autotune.run.stages.assemble import assemble, charts
from autotune.run.stages.feed import measure_feed
from autotune.run.stages.input_bound import diagnose_input
from autotune.run.stages.variant import pick_winner, tune_variant
from autotune.run.stages.workers import tune_workers
from autotune.tuning.noise import VARIANT_REPEATS
from probes import catalogue
from probes.protocol import Environment

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    profile: Profile  # the new profile, or the current one when nothing changed
    fresh: bool  # tuned now (False: the existing profile was up to date)
    notes: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)  # changes beyond the noise, against history


def run(cfg: RunConfig, environment: Environment) -> RunOutcome:
    with open_run(cfg, environment) as ctx:  # dataset, budgets, fingerprint, LeRobot args; the lock
        return tune(ctx)


def tune(ctx: RunContext) -> RunOutcome:
    cfg = ctx.cfg
    if not cfg.force and (current := up_to_date(cfg.results, cfg.policy, ctx.fingerprint, ctx.conditions)):
        log.info("profile %s is up to date for this machine; --force re-tunes", cfg.policy)
        notes = ["up to date: nothing changed since the last tune"]
        if not cfg.check:
            return RunOutcome(current, fresh=False, notes=notes)
        prober = Prober(ctx, progress_for(ctx))
        with run_record(ctx, prober) as record:
            check = check_profile(ctx, prober, current)
            record.checked(check.row(current), profile_path(cfg.results, cfg.policy))
        alerts = sound_alarm(ctx, record.row, check.trial)
        share(ctx, record.row, current, alerts)
        return RunOutcome(current, fresh=False, notes=[*notes, check.summary], alerts=alerts)
    log.info("%s", describe_run(ctx))
    prober = Prober(ctx, progress_for(ctx))
    with run_record(ctx, prober) as record:
        outcomes = [tune_variant(ctx, prober, v) for v in cfg.variants()]
        winner = pick_winner(ctx, outcomes, prober)
        record.update(
            **winner.variant.columns(),
            max_batch_size=winner.search.max_batch,
            certified=winner.search.certified,
        )
        feed = measure_feed(ctx, prober, winner)
        workers = tune_workers(ctx, prober, winner, feed)
        bound = diagnose_input(ctx, prober, winner, workers, feed)
        profile = assemble(ctx, winner, outcomes, workers, feed, bound)
        profile.plots = draw_run(charts(ctx, winner, workers))
        profile.decode_s_by_backend = prober.decoded.get(str(ctx.data.root), {})
        path = write_profile(cfg.results, profile)
        record.finish(profile, path)
    alerts = sound_alarm(ctx, record.row, workers.best.result)
    share(ctx, record.row, profile, alerts)
    return RunOutcome(profile, fresh=True, notes=list(profile.notes), alerts=alerts)


def share(ctx: RunContext, row: dict[str, Any], profile: Profile, alerts: list[Alert]) -> None:
    """With ``--storage``, the run's row, its profile and its regressions go to the shared database
    too (after the results folder has them: a storage that fails now loses nothing here)."""
    if ctx.cfg.storage is None:
        return
    from autotune import fleet

    regressions = [a.text for a in alerts if a.kind == "regression"]
    fleet.record(ctx.cfg.storage, {**ctx.writer.key, **row}, profile.to_dict(), regressions)
    log.info("run %s recorded in %s", ctx.run_id, fleet.shown(ctx.cfg.storage))


def progress_for(ctx: RunContext) -> Progress:
    cfg = ctx.cfg
    plan = WorkPlan(
        variants=len(cfg.variants()),
        budget_bytes=ctx.memory_limit,
        headroom=cfg.headroom,
        warmup_steps=BATCH_WARMUP_STEPS,
        measure_steps=BATCH_MEASURE_STEPS,
        throughput_points=cfg.effective_throughput_points(),
        soak_steps=cfg.effective_soak_steps(),
        trials=cfg.trials,
        trial_steps=Prober.trial_steps_for(cfg.device_type),
        # Paired probes between variants only where two or more compete for the command.
        variant_repeats=VARIANT_REPEATS if sum(not v.beside for v in cfg.variants()) > 1 else 0,
    )
    hints = quicker(cfg, ctx.data.image_size, ctx.data.kind)
    return Progress(plan, max_batch_cap=cfg.max_batch, device_type=cfg.device_type, hints=hints)


def quicker(cfg: RunConfig, image_size: tuple[int, int], dataset_kind: str) -> list[str]:
    """What would make a long CPU run quicker, leaving out what this run already does."""
    hints = []
    overrides = {k: str(v) for k, v in cfg.policy_overrides.items()}
    quick = [
        q
        for q in (catalogue.POLICIES[cfg.policy].quick if cfg.policy in catalogue.POLICIES else ())
        if overrides.get(q.partition("=")[0]) != q.partition("=")[2]
    ]
    if quick:
        hints.append("cut the model down (" + " ".join(f"--set {q}" for q in quick) + ")")
    h, w = image_size
    if dataset_kind == "synthetic" and min(h, w) >= 64:
        hints.append(f"smaller cameras (--image-size {h // 4 * 2}x{w // 4 * 2})")
    if cfg.trials > 3:
        hints.append(f"fewer worker trials (--trials 3; now {cfg.trials})")
    if len(cfg.variants()) > 1:
        hints.append("one variant (--trainer-only)")
    hints.append("or run on a GPU")
    return hints
