"""Tune one variant (precision x checkpointing): the certified maximum, then throughput and soak;
and pick the fastest variant that fits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from autotune.errors import UserError
from autotune.estimate import search_start
from autotune.run.config import Variant
from autotune.run.context import RunContext
from autotune.run.prober import Prober
from autotune.trainer.command import can_reproduce
from autotune.tuning.batch import BatchDecision, decide_batch
from autotune.tuning.memory_model import MemoryModel, fit_model
from autotune.tuning.noise import MAX_PAIRS, Decision, challenge, groups, measurement_noise
from autotune.tuning.search import SearchOutcome, find_max_batch
from autotune.units import format_bytes

log = logging.getLogger(__name__)


@dataclass
class VariantOutcome:
    variant: Variant
    search: SearchOutcome
    decision: BatchDecision | None = None  # None when even batch 1 does not fit
    model: MemoryModel | None = None
    choice: Decision | None = None  # the winner against the variant asked for (--compare)

    @property
    def samples_per_s(self) -> float:
        """The mean of the counted measurements at the recommended batch."""
        if self.decision is None:
            return 0.0
        return self.decision.samples_per_s_at(self.decision.batch_size)


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
        search.evidence,
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
            "allocator cap %s: the %s free on the card less the %s this process holds outside "
            "the allocator (the CUDA context, cuBLAS, cuDNN, kernels) and room for kernels that "
            "load later; %s",
            format_bytes(cap),
            format_bytes(asked_bytes),
            format_bytes(outside),
            counted,
        )
        return
    if not any(p.memory_cap_bound == "device" for p in search.probes):
        # --memory-limit behaves like a card of that size: what the probe holds outside the
        # allocator comes off it, as it would on that card (probes/device.py, MemoryMeter).
        log.info(
            "allocator cap %s: the --memory-limit %s less %s this process holds outside the "
            "allocator (the CUDA context, cuBLAS, cuDNN, kernels) and room for kernels that load "
            "later, as on a card of %s; %s",
            format_bytes(cap),
            format_bytes(asked_bytes),
            format_bytes(outside),
            format_bytes(asked_bytes),
            counted,
        )
        return
    log.warning(
        "--memory-limit %s is more than the probes could use: their allocator cap was %s (what "
        "the device had free beside the %s this process holds outside the allocator: a MIG "
        "slice, other processes, or a limit above the card's memory); %s",
        format_bytes(asked_bytes),
        format_bytes(cap),
        format_bytes(outside),
        counted,
    )


def pick_winner(
    ctx: RunContext, outcomes: list[VariantOutcome], prober: Prober | None = None
) -> VariantOutcome:
    """The variant the printed command trains, among those that fit and the trainer can reproduce
    where any can (never one measured beside): the variant asked for (``--precision``,
    ``--grad-checkpointing``; else the first tuned), unless another is faster in paired runs
    beyond the measured noise (:mod:`autotune.tuning.noise`; without a ``prober`` no pairs run, and the
    default stands). A UserError when none fits at batch 1."""
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
    pool = reproducible or fitting
    winner = choose_variant(ctx, pool, prober)
    if len(candidates) > 1:
        log.info(
            "fastest that fits%s: %s",
            f" in {cfg.trainer.label}" if reproducible else "",
            winner.variant.label,
        )
    return winner


def choose_variant(ctx: RunContext, pool: list[VariantOutcome], prober: Prober | None) -> VariantOutcome:
    """The variant asked for, unless the fastest of ``pool`` beats it in paired runs, each at its
    own recommended batch; the decision is kept on the one returned (``choice``)."""
    cfg = ctx.cfg
    fastest = max(pool, key=lambda o: o.samples_per_s)
    asked = next(
        (
            o
            for o in pool
            if o.variant.precision == cfg.precision and o.variant.grad_checkpointing == cfg.grad_checkpointing
        ),
        None,
    )
    if len(pool) < 2:
        return fastest
    default = asked or pool[0]  # the variant asked for, else the first tuned

    label = variant_label

    def measure(o: VariantOutcome) -> Callable[[], float | None]:
        def run() -> float | None:
            if prober is None:
                return None
            assert o.decision is not None
            result = prober.batch(o.variant, o.decision.batch_size, "throughput")
            return result.samples_per_s if result.fits and result.samples_per_s > 0 else None

        return run

    judged = variant_noise(pool)
    other = fastest if fastest is not default else None
    choice = challenge(
        "variant",
        label(default),
        label(other) if other else "",
        default.samples_per_s,
        other.samples_per_s if other else 0.0,
        measure(default),
        measure(other) if other else (lambda: None),
        judged,
        max_pairs=0 if prober is None else MAX_PAIRS,
        why_default=f"the variant asked for ({label(default)})" if asked else label(default),
    )
    log.info("%s", choice.text)
    winner = other if other is not None and choice.chosen == label(other) else default
    winner.choice = choice
    return winner


def variant_label(o: VariantOutcome) -> str:
    """How a decision names a variant: ``fp32, checkpointing off at batch 30``."""
    assert o.decision is not None
    return f"{o.variant.label} at batch {o.decision.batch_size}"


def variant_noise(pool: list[VariantOutcome]) -> float:
    """The relative noise of one measurement between variants: the per-step spread of every counted
    timed point of ``pool``, and the spread of the repeats at each variant's recommended batch."""
    points = [p for o in pool if o.decision for p in o.decision.curve if p.counted]
    repeats = groups(
        [p.samples_per_s for p in o.decision.curve if p.counted and p.batch_size == o.decision.batch_size]
        for o in pool
        if o.decision
    )
    return measurement_noise([(p.step_spread, p.steps) for p in points], repeats)
