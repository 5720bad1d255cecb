"""What a card would take, from the count and its terms: the largest batch, the smallest card, and
the search's starting line (see :mod:`autotune.estimate`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from autotune.estimate.count import CARD_SIZES_GIB, Estimate, GiB, from_result
from autotune.estimate.terms import Terms, calibrate, default_terms
from autotune.tuning.memory_fit import MemoryFit
from autotune.units import format_bytes

log = logging.getLogger(__name__)


@dataclass
class CardPrediction:
    """What a card of ``memory_bytes`` would take for one variant."""

    memory_bytes: int
    precision: str
    grad_checkpointing: bool
    max_batch_size: int  # 0: even batch 1 does not fit
    batch_size: int  # recommended: the largest that keeps the headroom
    overhead_bytes: int  # every term at the maximum (fragmentation included)


def peak_bytes(est: Estimate, terms: Terms, batch: int) -> float:
    """The allocator's peak at ``batch``: live tensors and fragmentation, and the terms inside it."""
    return est.live_at(batch) * (1 + terms.fragmentation_share) + terms.inside()


def largest_batch(est: Estimate, terms: Terms, budget_bytes: float, cap: int = 1 << 20) -> int:
    """The largest batch whose predicted peak stays within ``budget_bytes`` (0 if none)."""
    low, high = 0, cap
    while high - low > 1:
        mid = (low + high) // 2
        if peak_bytes(est, terms, mid) <= budget_bytes:
            low = mid
        else:
            high = mid
    return low


def predict_card(est: Estimate, terms: Terms, memory_bytes: int, headroom: float) -> CardPrediction:
    """The largest and the recommended batch for a card (or, on a CPU, a budget) of ``memory_bytes``."""
    budget = memory_bytes - terms.outside()
    best = largest_batch(est, terms, budget)
    keep = min(best, largest_batch(est, terms, (1 - headroom) * budget))
    overhead = terms.total() + est.live_at(max(best, 1)) * terms.fragmentation_share
    return CardPrediction(
        memory_bytes=memory_bytes,
        precision=est.precision,
        grad_checkpointing=est.grad_checkpointing,
        max_batch_size=best,
        batch_size=keep,
        overhead_bytes=int(overhead),
    )


def search_prior(est: Estimate, terms: Terms, budget_bytes: float) -> MemoryFit:
    """The estimate as the search's line, in its budget's units (the allocator's peak): the counted
    segment where the estimate puts the maximum under ``budget_bytes``, extended, so that the
    line crosses the budget where the estimate does (memory is steeper further up)."""
    best = max(1, largest_batch(est, terms, budget_bytes))
    sizes = [b for b, _ in est.points]
    b1, b2 = next(((a, b) for a, b in zip(sizes, sizes[1:], strict=False) if a <= best < b), sizes[-2:])
    slope = (peak_bytes(est, terms, b2) - peak_bytes(est, terms, b1)) / (b2 - b1)
    if slope <= 0:  # a flat stretch at tiny sizes: the slope further up
        slope = est.per_sample_bytes * (1 + terms.fragmentation_share)
    return MemoryFit(
        fixed_bytes=peak_bytes(est, terms, best) - slope * best,
        per_sample_bytes=slope,
        points=len(est.points),
    )


def smallest_card(est: Estimate, terms: Terms) -> int | None:
    """The smallest common card size (GiB) that takes batch 1, or None."""
    for size in CARD_SIZES_GIB:
        if predict_card(est, terms, size * GiB, 0.0).max_batch_size >= 1:
            return size
    return None


def describe_line(est: Estimate) -> str:
    return (
        f"{est.precision}, checkpointing {'on' if est.grad_checkpointing else 'off'}: "
        f"{format_bytes(est.fixed_bytes)} fixed + {format_bytes(est.per_sample_bytes)} per sample "
        f"(weights {format_bytes(est.weights_bytes)}, optimizer state "
        f"{format_bytes(est.optimizer_state_bytes)}; counted in {est.wall_s:.1f} s)"
    )


def search_start(ctx: Any, prober: Any, variant: Any) -> MemoryFit | None:
    """The estimate ``variant``'s search starts from (logged), or None: the search starts blind.

    ``ctx`` is the run's context, ``prober`` its :class:`~autotune.run.prober.Prober`. A prober that
    cannot estimate (the tests' fakes) or an estimate that fails costs nothing but the head start.
    """
    ask = getattr(prober, "estimate", None)
    if ask is None or not ctx.cfg.estimate:
        return None
    spec = ctx.spec(variant)
    if spec.backend != "rebuilt":
        return None  # the estimate counts autotune's rebuilt models only
    try:
        est = from_result(ask(variant), spec)
    except ValueError as exc:
        log.warning("%s: no estimate (%s); the search starts without one", variant.label, exc)
        return None
    terms = calibrate(default_terms(est), est, spec, ctx.cfg.results)
    # A CUDA budget is a card's memory (the default, its free memory; --memory-limit, a card of
    # that size): the child's context and the kernels' slack come off it before its allocator is
    # capped (probes/device.py, MemoryMeter).
    outside = terms.outside()
    prior = search_prior(est, terms, ctx.memory_limit - outside)
    prior.fixed_bytes += outside
    log.info(
        "%s: estimated on the meta device: %s fixed + %s per sample, %s on top%s: batch %d "
        "predicted within %s",
        variant.label,
        format_bytes(est.fixed_bytes),
        format_bytes(est.per_sample_bytes),
        format_bytes(terms.inside()),
        f" and {terms.fragmentation_share:.0%} of the peak" if terms.fragmentation_share else "",
        prior.max_batch_under(ctx.memory_limit),
        format_bytes(ctx.memory_limit),
    )
    return prior
