"""Assemble the profile from what the stages measured: the numbers, the notes, the plots, the command."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from autotune.outputs.plots import plot_batch, plot_workers
from autotune.outputs.profile import Comparison, Profile, WorkerSetting
from autotune.run.context import RunContext
from autotune.run.stages.variant import VariantOutcome, variant_label, variant_noise
from autotune.trainer.command import PENDING_CHECKPOINTING, Setting, command
from autotune.trainer.versions import RELEASES, Trainer
from autotune.tuning.feed_model import FeedModel, InputBound
from autotune.tuning.noise import NO_DIFFERENCE, Decision, Verdict, judge, single
from autotune.tuning.study import StudyOutcome
from autotune.units import format_bytes


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
    measured = decision.soak_result or search.result_at(batch)
    if measured is not None and measured.fits:
        peak_alloc, peak_reserved = measured.peak_allocated_bytes, measured.peak_reserved_bytes
    elif winner.model is not None:
        peak_alloc = peak_reserved = int(winner.model.fixed_bytes + winner.model.per_sample_bytes * batch)
    else:
        peak_alloc, peak_reserved = best.result.peak_allocated_bytes, best.result.peak_reserved_bytes
    at_max = search.result_at(search.max_batch)
    train = command(
        cfg.trainer,
        setting(ctx, winner, batch, best.num_workers, best.prefetch_factor, decision.grad_accum_steps),
    )
    measured_params = next((p for p in search.probes if p.trainable_params), None)
    speedup, spread, pairs = speedup_vs_default(workers)
    beside = next((o for o in outcomes if o.variant.beside), None)
    notes = run_notes(ctx, winner, outcomes, workers, peak_reserved)
    if bound is not None:
        notes.append(bound.summary())
    notes = [*train.caveats, *notes]
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
        grad_accum_steps=decision.grad_accum_steps,
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
        lerobot_default=(
            WorkerSetting(
                num_workers=default.num_workers,
                prefetch_factor=default.prefetch_factor,
                data_s=default.result.data_s,
                updt_s=default.result.updt_s,
                samples_per_s=default.result.samples_per_s,
            )
            if default
            else None
        ),
        speedup_vs_default=speedup,
        speedup_vs_default_spread=spread,
        speedup_vs_default_pairs=pairs,
        decisions=[d.to_dict() for d in decisions(winner, workers)],
        search={
            "probes": len(search.probes),
            "probed_batch_sizes": [p.batch_size for p in search.probes],
            "wall_s": round(sum(p.wall_s for p in search.probes), 3),
            "limit_batch_size": search.limit_batch_size,
            "limit_reason": search.limit_reason,
        },
        study={
            "trials": len(workers.trials),
            "storage": workers.storage,
            "study_name": workers.study_name,
            "repeats": len(workers.repeats),
            "wall_s": round(
                sum(t.result.wall_s for t in [*workers.trials, *workers.repeats] if not t.resumed), 3
            ),
        },
        plots=plots(ctx, winner, workers),
        loader_model=asdict(feed) if feed else None,
        input_bound=bound.to_dict() if bound else None,
        lerobot_train_args=train.args,
        lerobot_train_command=train.text,
        lerobot_version=cfg.trainer.version,
        lerobot_source=cfg.trainer.source,
        backend=ctx.backend,
        gpus=cfg.gpus,
        effective_batch_size=batch * cfg.gpus * decision.grad_accum_steps,
        lerobot_train_env=train.env,
        lerobot_train_reproduces=train.reproduces,
        lerobot_train_caveats=train.caveats,
        beside=beside_answer(ctx, beside) if beside else None,
        budget_bytes=search.budget_bytes,
        trainable_params=measured_params.trainable_params if measured_params else 0,
        total_params=measured_params.total_params if measured_params else 0,
        notes=notes,
    )


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
    """The comparisons weighed against the noise: the batch, the variant (--compare), the workers."""
    found = [winner.decision.decision if winner.decision else None, winner.choice, workers.decision]
    return [d for d in found if d is not None]


def setting(
    ctx: RunContext, outcome: VariantOutcome, batch: int, workers: int, prefetch: int | None, accum: int = 1
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


def run_notes(
    ctx: RunContext,
    winner: VariantOutcome,
    outcomes: list[VariantOutcome],
    workers: StudyOutcome,
    peak_reserved: int,
) -> list[str]:
    """Caveats a person should read beside the numbers."""
    cfg = ctx.cfg
    decision = winner.decision
    assert decision is not None
    batch = decision.batch_size
    notes = []
    if ctx.data.kind == "synthetic":
        notes.append(
            "tuned on autotune's synthetic dataset: point --dataset.repo_id/--dataset.root at "
            "your own data (or tune with --dataset) before training"
        )
    if winner.search.capped:
        notes.append(f"the search stopped at --max-batch {cfg.max_batch} without running out of memory")
    notes.extend(winner.search.notes)  # a kernel's limit, ambiguous out-of-memory taken as one
    budget = winner.search.budget_bytes  # the cap the probes really had
    if peak_reserved > (1 - cfg.headroom) * budget:
        notes.append(
            f"the {cfg.headroom:.0%} headroom cannot be kept: batch {batch} already peaks at "
            f"{format_bytes(peak_reserved)} of the {format_bytes(budget)} budget"
        )
    if decision.lowered_by_soak:
        failed = [s for s in decision.soaks if s.lowered]
        notes.append(
            "the soak lowered the batch: "
            + ", ".join(f"batch {s.batch_size} failed ({s.reason})" for s in failed)
        )
    # Each comparison that could have changed the answer, with its figures and spread.
    for d in (decision.decision, winner.choice):
        if d is not None and d.challenger and (d.pairs or d.chosen != d.default):
            notes.append(d.text)
    undrained = [t for t in workers.trials if t.result.fits and not t.result.drained]
    if undrained:
        notes.append(
            f"{len(undrained)} worker trial(s) stopped before their prefetched batches were used "
            "up; their data_s may be optimistic"
        )
    if len(outcomes) > 1:
        notes.extend(comparison_notes(outcomes, winner.choice))
    return notes


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


def comparison_notes(outcomes: list[VariantOutcome], choice: Decision | None = None) -> list[str]:
    """What gradient checkpointing costs in speed (with its spread, against the noise) and buys in
    memory, per precision."""
    notes = []
    by_key = {(o.variant.precision, o.variant.grad_checkpointing): o for o in outcomes}
    for precision in dict.fromkeys(o.variant.precision for o in outcomes):
        on, off = by_key.get((precision, True)), by_key.get((precision, False))
        if not on or not off or not on.decision or not off.decision:
            continue
        text = f"{precision}: checkpointing fits batch {on.search.max_batch} against {off.search.max_batch} without"
        if on.model and off.model:
            text += (
                f" ({format_bytes(on.model.per_sample_bytes)} per sample against "
                f"{format_bytes(off.model.per_sample_bytes)})"
            )
        if off.samples_per_s > 0 and on.samples_per_s > 0:
            verdict = checkpointing_verdict(on, off, outcomes, choice)
            text += f", at {verdict.figures()} the samples/s"
            text += "" if verdict.clears else f": {NO_DIFFERENCE}"
        notes.append(text)
    return notes


def checkpointing_verdict(
    on: VariantOutcome, off: VariantOutcome, outcomes: list[VariantOutcome], choice: Decision | None
) -> Verdict:
    """Checkpointing on against off, in samples/s: from the paired runs where the variant choice
    measured these two against each other, else from their single figures, against the noise."""
    pool = [o for o in outcomes if o.decision is not None and not o.variant.beside]
    if choice is not None and choice.pairs:
        names = {variant_label(on): "on", variant_label(off): "off"}
        roles = {"challenger": names.get(choice.challenger), "default": names.get(choice.default)}
        if set(roles.values()) == {"on", "off"}:
            figures = [(roles[m["role"]], m["samples_per_s"]) for m in choice.measurements]
            pairs = []
            for first, second in zip(figures[0::2], figures[1::2], strict=False):  # A B, A B
                rates = dict([first, second])
                if rates.keys() == {"on", "off"}:
                    pairs.append((rates["on"], rates["off"]))
            if pairs:
                return judge(pairs, choice.noise)
    return single(on.samples_per_s, off.samples_per_s, variant_noise(pool or [on, off]))


def plots(ctx: RunContext, winner: VariantOutcome, workers: StudyOutcome) -> dict[str, str]:
    cfg = ctx.cfg
    decision = winner.decision
    assert decision is not None
    folder = cfg.results / "plots"
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
    title = f"{cfg.policy}, {winner.variant.label}, run {ctx.run_id}"
    batch_png = plot_batch(
        folder / f"{cfg.policy}-{ctx.run_id}-batch.png",
        title=title,
        probes=probe_rows,
        budget_bytes=winner.search.budget_bytes,
        headroom=cfg.headroom,
        max_batch=winner.search.max_batch,
        batch_size=decision.batch_size,
        fit=(winner.model.fixed_bytes, winner.model.per_sample_bytes) if winner.model else None,
    )
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
    workers_png = plot_workers(
        folder / f"{cfg.policy}-{ctx.run_id}-workers.png",
        title=f"{title}, batch {decision.batch_size}",
        trials=trial_rows,
        chosen=workers.best.num_workers,
    )
    return {"batch": str(batch_png), "workers": str(workers_png)}
