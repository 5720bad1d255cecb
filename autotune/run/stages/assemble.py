"""Assemble the profile from what the stages measured: the numbers, the notes, the command; and what
its plots draw. Nothing here writes a file."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from autotune.outputs.plots import RunCharts
from autotune.outputs.profile import Comparison, Profile, WorkerSetting
from autotune.run.context import RunContext
from autotune.run.stages.notes import run_notes
from autotune.run.stages.variant import VariantOutcome
from autotune.trainer.command import PENDING_CHECKPOINTING, Setting, command
from autotune.trainer.versions import RELEASES, Trainer
from autotune.tuning.feed_model import FeedModel, InputBound
from autotune.tuning.noise import Decision
from autotune.tuning.search import SearchOutcome
from autotune.tuning.study import StudyOutcome, TrialRecord
from probes.protocol import ProbeResult


def assemble(
    ctx: RunContext,
    winner: VariantOutcome,
    outcomes: list[VariantOutcome],
    workers: StudyOutcome,
    feed: FeedModel | None,
    bound: InputBound | None,
) -> Profile:
    cfg = ctx.cfg
    search, decision = winner.search, winner.decision
    assert decision is not None
    batch = decision.batch_size
    best, default = workers.best, workers.lerobot_default
    peak_alloc, peak_reserved = peaks(winner, best.result)
    at_max = search.result_at(search.max_batch)
    accum = decision.grad_accum_steps
    train = command(cfg.trainer, setting(ctx, winner, batch, *best.setting, accum, workers.video_backend))
    measured_params = next((p for p in search.probes if p.trainable_params), None)
    speedup, spread, pairs = speedup_vs_default(workers)
    beside = next((o for o in outcomes if o.variant.beside), None)
    notes = [
        *train.caveats,
        *run_notes(ctx, winner, outcomes, workers, peak_reserved),
        *([bound.summary()] if bound is not None else []),
        *([ctx.decoder.note] if ctx.decoder.note else []),
    ]
    return Profile(
        policy=cfg.policy,
        run_id=ctx.run_id,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        fingerprint=ctx.fingerprint.to_dict(),
        conditions=ctx.conditions,
        precision=winner.variant.precision,
        grad_checkpointing=winner.variant.grad_checkpointing,
        max_batch_size=search.max_batch,
        certified=search.certified,
        batch_size=batch,
        headroom_batch_size=decision.headroom_batch,
        grad_accum_steps=accum,
        num_workers=best.num_workers,
        prefetch_factor=best.prefetch_factor,
        data_s=best.result.data_s,
        updt_s=best.result.updt_s,
        samples_per_s=best.result.samples_per_s,
        peak_allocated_bytes=int(peak_alloc),
        peak_reserved_bytes=int(peak_reserved),
        max_batch_peak_reserved_bytes=at_max.peak_reserved_bytes if at_max else 0,
        memory_model=winner.model.to_dict() if winner.model else None,
        throughput_curve=[asdict(p) for p in decision.curve],
        soaks=[asdict(s) for s in decision.soaks],
        comparisons=[comparison(o) for o in outcomes],
        lerobot_default=worker_setting(default) if default else None,
        speedup_vs_default=speedup,
        speedup_vs_default_spread=spread,
        speedup_vs_default_pairs=pairs,
        decisions=[d.to_dict() for d in decisions(winner, workers)],
        search=search_summary(search),
        study=study_summary(workers),
        plots={},  # drawn beside the profile: pipeline's draw_run(charts(...))
        loader_model=asdict(feed) if feed else None,
        input_bound=bound.to_dict() if bound else None,
        lerobot_train_args=train.args,
        lerobot_train_command=train.text,
        lerobot_version=cfg.trainer.version,
        lerobot_source=cfg.trainer.source,
        backend=ctx.backend,
        gpus=cfg.gpus,
        effective_batch_size=batch * cfg.gpus * accum,
        lerobot_train_env=train.env,
        lerobot_train_reproduces=train.reproduces,
        lerobot_train_caveats=train.caveats,
        beside=beside_answer(ctx, beside) if beside else None,
        budget_bytes=search.budget_bytes,
        trainable_params=measured_params.trainable_params if measured_params else 0,
        total_params=measured_params.total_params if measured_params else 0,
        notes=notes,
        learned_headroom=cfg.learned_headroom,
        **decoder_fields(ctx, workers),
    )


def decoder_fields(ctx: RunContext, workers: StudyOutcome) -> dict[str, Any]:
    """The profile's video decoder: the one recommended, the trainer's own, and why they differ."""
    return {
        "video_backend": workers.video_backend or ctx.decoder.measured,
        "video_backend_default": ctx.decoder.trainer_default,
        "video_backend_note": ctx.decoder.note,
    }


def peaks(winner: VariantOutcome, best: ProbeResult) -> tuple[int, int]:
    """Peak allocated and reserved bytes at the recommended batch: its soak (or its probe), else the
    memory model's prediction, else the best worker trial's."""
    decision = winner.decision
    assert decision is not None
    batch = decision.batch_size
    measured = decision.soak_result or winner.search.result_at(batch)
    if measured is not None and measured.fits:
        return int(measured.peak_allocated_bytes), int(measured.peak_reserved_bytes)
    if winner.model is not None:
        peak = int(winner.model.fixed_bytes + winner.model.per_sample_bytes * batch)
        return peak, peak
    return int(best.peak_allocated_bytes), int(best.peak_reserved_bytes)


def worker_setting(record: TrialRecord) -> WorkerSetting:
    return WorkerSetting(
        num_workers=record.num_workers,
        prefetch_factor=record.prefetch_factor,
        data_s=record.result.data_s,
        updt_s=record.result.updt_s,
        samples_per_s=record.result.samples_per_s,
    )


def search_summary(search: SearchOutcome) -> dict[str, Any]:
    return {
        "probes": len(search.probes),
        "probed_batch_sizes": [p.batch_size for p in search.probes],
        "wall_s": round(sum(p.wall_s for p in search.probes), 3),
        "limit_batch_size": search.limit_batch_size,
        "limit_reason": search.limit_reason,
    }


def study_summary(workers: StudyOutcome) -> dict[str, Any]:
    return {
        "trials": len(workers.trials),
        "storage": workers.storage,
        "study_name": workers.study_name,
        "repeats": len(workers.repeats),
        "wall_s": round(
            sum(t.result.wall_s for t in [*workers.trials, *workers.repeats] if not t.resumed), 3
        ),
    }


def speedup_vs_default(workers: StudyOutcome) -> tuple[float | None, float | None, int]:
    """The recommended setting's samples/s over LeRobot's default's, its spread and the paired runs
    it rests on: 1.0 where the default is recommended; None where the default was not measured."""
    default = workers.lerobot_default
    if default is None or default.result.samples_per_s <= 0:
        return None, None, 0
    if workers.best.setting == default.setting:
        return 1.0, 0.0, 0
    d = workers.decision
    if d is not None and d.ratio is not None and d.chosen != d.default:
        return d.ratio, d.spread, d.pairs
    return workers.best.result.samples_per_s / default.result.samples_per_s, None, 0


def decisions(winner: VariantOutcome, workers: StudyOutcome) -> list[Decision]:
    """The comparisons weighed against the noise: the batch, the variant (--compare), the workers,
    the video decoder."""
    found = [
        winner.decision.decision if winner.decision else None,
        winner.choice,
        workers.decision,
        workers.decoder_decision,
    ]
    return [d for d in found if d is not None]


def setting(
    ctx: RunContext,
    outcome: VariantOutcome,
    batch: int,
    workers: int,
    prefetch: int | None,
    accum: int = 1,
    video_backend: str = "",
) -> Setting:
    """What the trainer should train with for ``outcome`` at ``batch``."""
    cfg = ctx.cfg
    return Setting(
        policy=cfg.policy,
        policy_args=tuple(ctx.policy_args),
        dataset_repo_id=ctx.data.repo_id,
        dataset_root=str(ctx.data.root.resolve()),
        dataset_format=ctx.data.version,
        device=cfg.device,
        precision=outcome.variant.precision,
        grad_checkpointing=outcome.variant.grad_checkpointing,
        batch_size=batch,
        num_workers=workers,
        prefetch_factor=prefetch,
        grad_accum_steps=accum,
        gpus=cfg.gpus,
        video_backend=video_backend or ctx.decoder.measured,
        trainer_video_backend=ctx.decoder.trainer_default,
    )


def beside_answer(ctx: RunContext, outcome: VariantOutcome) -> dict[str, Any]:
    """The answer measured beside the trainer's (bf16 + gradient checkpointing), with the command
    of the newest LeRobot that reproduces it, if any does."""
    cfg = ctx.cfg
    answer: dict[str, Any] = {
        "precision": outcome.variant.precision,
        "grad_checkpointing": outcome.variant.grad_checkpointing,
        "max_batch_size": outcome.search.max_batch,
        "batch_size": outcome.decision.batch_size if outcome.decision else 0,
        "samples_per_s": outcome.samples_per_s,
        "peak_reserved_bytes": 0,
        "lerobot_version": None,
        "lerobot_train_command": None,
        "why_no_command": "",
    }
    if outcome.decision is None:
        answer["why_no_command"] = "even batch 1 does not fit"
        return answer
    soaked = outcome.decision.soak_result or outcome.search.result_at(outcome.decision.batch_size)
    answer["peak_reserved_bytes"] = soaked.peak_reserved_bytes if soaked and soaked.fits else 0
    for row in reversed(RELEASES):
        trainer = Trainer(row.since, "flag")
        train = command(trainer, setting(ctx, outcome, outcome.decision.batch_size, 0, None))
        if train.reproduces:
            answer["lerobot_version"] = row.since
            answer["lerobot_train_command"] = train.text
            return answer
    answer["why_no_command"] = (
        f"no LeRobot version has gradient checkpointing for {cfg.policy} yet, main included"
        + (f" ({PENDING_CHECKPOINTING[cfg.policy]} adds it)" if cfg.policy in PENDING_CHECKPOINTING else "")
    )
    return answer


def comparison(o: VariantOutcome) -> Comparison:
    d = o.decision
    return Comparison(
        precision=o.variant.precision,
        grad_checkpointing=o.variant.grad_checkpointing,
        max_batch_size=o.search.max_batch,
        batch_size=d.batch_size if d else 0,
        samples_per_s=o.samples_per_s,
        per_sample_bytes=o.model.per_sample_bytes if o.model else None,
        probes=len(o.search.probes),
    )


def charts(ctx: RunContext, winner: VariantOutcome, workers: StudyOutcome) -> RunCharts:
    """What the run's plots draw (the pipeline draws them beside the profile)."""
    cfg = ctx.cfg
    decision = winner.decision
    assert decision is not None
    probe_rows = [
        {
            "batch_size": p.batch_size,
            "status": p.status,
            "peak_reserved_bytes": p.peak_reserved_bytes,
            "samples_per_s": p.samples_per_s,
        }
        for p in winner.search.probes
    ] + [
        {
            "batch_size": p.batch_size,
            "status": "ok",
            "peak_reserved_bytes": p.peak_reserved_bytes,
            "samples_per_s": p.samples_per_s,
        }
        for p in decision.curve
        if p.phase != "search"
    ]
    trial_rows = [
        {
            "num_workers": t.num_workers,
            "prefetch_factor": t.prefetch_factor,
            "samples_per_s": t.result.samples_per_s,
            "data_s": t.result.data_s,
            "updt_s": t.result.updt_s,
            "status": t.result.status,
        }
        for t in [*workers.trials, *workers.repeats]
    ]
    return RunCharts(
        folder=cfg.results / "plots",
        stem=f"{cfg.policy}-{ctx.run_id}",
        title=f"{cfg.policy}, {winner.variant.label}, run {ctx.run_id}",
        probes=probe_rows,
        budget_bytes=winner.search.budget_bytes,
        headroom=cfg.headroom,
        max_batch=winner.search.max_batch,
        batch_size=decision.batch_size,
        fit=(winner.model.fixed_bytes, winner.model.per_sample_bytes) if winner.model else None,
        trials=trial_rows,
        chosen_workers=workers.best.num_workers,
    )
