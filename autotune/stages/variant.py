"""Tune one variant (precision x checkpointing): the certified maximum, then throughput and soak;
and pick the fastest variant that fits."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autotune.batch import BatchDecision, decide_batch
from autotune.config import Variant
from autotune.context import RunContext
from autotune.errors import UserError
from autotune.estimate import search_start
from autotune.lerobot import can_reproduce
from autotune.memory_model import MemoryModel, fit_model
from autotune.prober import Prober
from autotune.search import SearchOutcome, find_max_batch
from autotune.units import format_bytes

log = logging.getLogger(__name__)


@dataclass
class VariantOutcome:
    variant: Variant
    search: SearchOutcome
    decision: BatchDecision | None = None  # None when even batch 1 does not fit
    model: MemoryModel | None = None

    @property
    def samples_per_s(self) -> float:
        if self.decision is None:
            return 0.0
        point = next((p for p in self.decision.curve if p.batch_size == self.decision.batch_size), None)
        return point.samples_per_s if point else 0.0


def tune_variant(ctx: RunContext, prober: Prober, variant: Variant) -> VariantOutcome:
    """The certified maximum, then throughput and soak, for one variant."""
    cfg = ctx.cfg
    progress = prober.progress
    estimate = search_start(ctx, prober, variant)  # None: the search starts blind
    with progress.stage("search", f"search ({variant.label})", total=None):
        search = find_max_batch(
            lambda size: prober.batch(variant, size, "search"),
            ctx.memory_limit,
            max_batch=cfg.max_batch,
            estimate=estimate,
        )
    progress.search_done(search.max_batch)
    say_budget(ctx.memory_limit, search, asked_by_user=ctx.cfg.memory_limit_bytes is not None)
    outcome = VariantOutcome(variant=variant, search=search)
    if search.max_batch == 0:
        log.warning("%s: even batch 1 does not fit", variant.label)
        progress.done.append("batch")
        return outcome
    log.info(
        "%s: max batch %d (%s, %d probes)",
        variant.label,
        search.max_batch,
        "certified" if search.certified else "capped at --max-batch",
        len(search.probes),
    )
    points = cfg.effective_throughput_points()
    soak_steps = cfg.effective_soak_steps()
    with progress.stage("batch", f"throughput and soak ({variant.label})", total=points):
        outcome.decision = decide_batch(
            search,
            lambda size, phase: prober.batch(variant, size, phase),
            headroom=cfg.headroom,
            throughput_points=points,
            soak=soak_steps > 0,
            target_batch=cfg.target_batch,
            accumulate=cfg.trainer.abilities.grad_accumulation_flag is not None,
        )
    d = outcome.decision
    overhead = max((p.device_overhead_bytes for p in search.probes), default=0)
    timed = [(t.batch_size, t.peak_reserved_bytes) for t in d.curve if t.phase == "throughput"]
    outcome.model = fit_model(search, overhead, timed)
    log.info(
        "%s: batch %d recommended (headroom allows %d%s), %.2f samples/s",
        variant.label,
        d.batch_size,
        d.headroom_batch,
        ", lowered by the soak" if d.lowered_by_soak else "",
        outcome.samples_per_s,
    )
    return outcome


def say_budget(asked_bytes: int, search: SearchOutcome, *, asked_by_user: bool) -> None:
    """Say so when the probes' allocator cap, which the headroom, the soak and the memory model
    count against (``search.budget_bytes``), is not the budget asked for."""
    cap = search.budget_bytes
    if cap == asked_bytes:
        return
    outside = max((p.device_overhead_bytes for p in search.probes), default=0)
    counted = f"the headroom, the soak and the memory model count against {format_bytes(cap)}"
    if not asked_by_user:
        # The default budget is the card's free memory before any probe started; the probes
        # leave room for what runs outside the allocator.
        log.info(
            "allocator cap %s: the %s free on the card less what runs outside the allocator "
            "(%s in all: the CUDA context, cuBLAS, cuDNN, kernels, other processes); %s",
            format_bytes(cap),
            format_bytes(asked_bytes),
            format_bytes(outside),
            counted,
        )
        return
    log.warning(
        "--memory-limit %s is more than the probes could use: their allocator cap was %s (the "
        "device's memory less %s outside the allocator: a MIG slice, other processes, the CUDA "
        "context and libraries); %s",
        format_bytes(asked_bytes),
        format_bytes(cap),
        format_bytes(outside),
        counted,
    )


def pick_winner(ctx: RunContext, outcomes: list[VariantOutcome]) -> VariantOutcome:
    """The variant the printed command trains: the fastest that fits, among those the trainer can
    reproduce where any can (never one measured beside). A UserError when none fits at batch 1."""
    cfg = ctx.cfg
    candidates = [o for o in outcomes if not o.variant.beside]
    fitting = [o for o in candidates if o.decision is not None]
    if not fitting:
        first = candidates[0].search.probes[0]
        remedies = ["raise --memory-limit", "lower the image size"]
        if not any(o.variant.grad_checkpointing for o in outcomes):
            remedies.append("turn on --grad-checkpointing")
        beside = next((o for o in outcomes if o.variant.beside and o.decision is not None), None)
        also = (
            f"; with gradient checkpointing ({beside.variant.label}) batch {beside.search.max_batch} fits, "
            f"which {cfg.trainer.label} cannot train for {cfg.policy}"
            if beside
            else ""
        )
        raise UserError(
            f"even batch 1 does not fit in {format_bytes(candidates[0].search.budget_bytes)} "
            f"({first.message or 'out of memory'}); {', '.join(remedies[:-1])} or {remedies[-1]}{also}"
        )
    reproducible = [
        o
        for o in fitting
        if can_reproduce(
            cfg.trainer, cfg.policy, cfg.device_type, o.variant.precision, o.variant.grad_checkpointing
        )
    ]
    winner = max(reproducible or fitting, key=lambda o: o.samples_per_s)
    if len(candidates) > 1:
        log.info(
            "fastest that fits%s: %s",
            f" in {cfg.trainer.label}" if reproducible else "",
            winner.variant.label,
        )
    return winner
