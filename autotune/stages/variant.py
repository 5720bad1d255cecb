"""Tune one variant (precision x checkpointing): the certified maximum, then throughput and soak;
and pick the fastest variant that fits."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autotune.batch import BatchDecision, decide_batch
from autotune.config import Variant
from autotune.context import RunContext
from autotune.errors import UserError
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
    with progress.stage("search", f"search ({variant.label})", total=None):
        search = find_max_batch(
            lambda size: prober.batch(variant, size, "search"), ctx.memory_limit, max_batch=cfg.max_batch
        )
    progress.search_done(search.max_batch)
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
    overhead = max((p.device_overhead_bytes for p in search.probes), default=0)
    outcome.model = fit_model(search, overhead)
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
        )
    d = outcome.decision
    log.info(
        "%s: batch %d recommended (headroom allows %d%s), %.2f samples/s",
        variant.label,
        d.batch_size,
        d.headroom_batch,
        ", lowered by the soak" if d.lowered_by_soak else "",
        outcome.samples_per_s,
    )
    return outcome


def pick_winner(ctx: RunContext, outcomes: list[VariantOutcome]) -> VariantOutcome:
    """The fastest variant that fits; a UserError when not even batch 1 fits in any."""
    fitting = [o for o in outcomes if o.decision is not None]
    if not fitting:
        first = outcomes[0].search.probes[0]
        remedies = ["raise --memory-limit", "lower the image size"]
        if not any(o.variant.grad_checkpointing for o in outcomes):
            remedies.append("turn on --grad-checkpointing")
        raise UserError(
            f"even batch 1 does not fit in {format_bytes(ctx.memory_limit)} "
            f"({first.message or 'out of memory'}); {', '.join(remedies[:-1])} or {remedies[-1]}"
        )
    winner = max(fitting, key=lambda o: o.samples_per_s)
    if len(outcomes) > 1:
        log.info("fastest that fits: %s", winner.variant.label)
    return winner
