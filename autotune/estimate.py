"""The batch a card would take, estimated without the card: a meta-device count, a line, terms on top.

An estimate probe (:mod:`probes.estimate`, in a child like every probe) counts the live tensor bytes
of the real training step on the meta device at a few batch sizes, as the target device would run
it (CUDA's autocast rules and kernels even on a CPU-only machine). The step's peak is the largest of
its phases' peaks, each linear in the batch: the counted points, linear between them, are the
model, and beyond the largest the line through the two largest, ``live = fixed_bytes +
per_sample_bytes x batch`` (where the steepest phase sets the peak).

Live tensor bytes are not all a card needs. What the count leaves out is added as named terms
(:mod:`autotune.estimate_terms`), each with its value and where it comes from, and replaced by
measurement where a profile measured on a GPU exists:

- outside the caching allocator, taken off the card: the CUDA context and the kernels that load
  after the first step;
- inside it, counted against the budget: cuBLAS's and cuDNN's workspaces, the allocator's rounding
  of large blocks into segments (counted by the probe at the peak), and its fragmentation, a share
  of the peak.

On a CPU the probes measure the growth of the resident set, which also holds the runtime's own
memory (torchvision's import, oneDNN's kernels and scratch, thread pools): one term, ``cpu_runtime``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from autotune.estimate_terms import Terms, calibrate, default_terms
from autotune.search import MemoryFit
from autotune.units import format_bytes
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3
CARD_SIZES_GIB = (8, 12, 16, 24, 32, 48, 80)
# Sizes counted: on the meta device a size costs no memory and no compute, one step's dispatch only.
# The peak of a step is the largest of its phases' peaks (forward's end, a backward block, the
# optimizer), each linear in the batch with its own slope, so memory steepens where a steeper phase
# takes over (the cut-down ACT on the CPU: 2.58 MiB per sample up to batch 104, 3.0 from 112,
# counted and measured alike). Between sizes a factor of 2 apart the chord overstates the peak by
# at most a quarter of the slope's change over the segment (1.5% of the peak there).
ESTIMATE_BATCH_SIZES = tuple(2**k for k in range(13))  # 1 to 4096
ESTIMATE_TIMEOUT_S = 600.0


@dataclass
class Estimate:
    """One variant's count: the peak live tensor bytes of a step against batch size."""

    policy: str
    device_type: str  # the device it was counted for: cuda or cpu
    precision: str
    grad_checkpointing: bool
    points: list[tuple[int, int]]  # (batch size, peak live tensor bytes)
    segment_rounding_bytes: int = 0  # large blocks' segment rounding at the largest size's peak
    weights_bytes: int = 0
    optimizer_state_bytes: int = 0
    wall_s: float = 0.0
    total_params: int = 0

    @property
    def per_sample_bytes(self) -> float:
        (b1, p1), (b2, p2) = self.points[-2:]
        return (p2 - p1) / (b2 - b1)

    @property
    def fixed_bytes(self) -> float:
        b2, p2 = self.points[-1]
        return p2 - self.per_sample_bytes * b2

    def live_at(self, batch: float) -> float:
        """Peak live bytes at ``batch``: between counted sizes linear, beyond them the line."""
        for (b1, p1), (b2, p2) in zip(self.points, self.points[1:], strict=False):
            if batch <= b2:
                return p1 + (p2 - p1) * (batch - b1) / (b2 - b1) if batch >= b1 else p1
        return self.fixed_bytes + self.per_sample_bytes * batch


@dataclass
class CardPrediction:
    """What a card of ``memory_bytes`` would take for one variant."""

    memory_bytes: int
    precision: str
    grad_checkpointing: bool
    max_batch_size: int  # 0: even batch 1 does not fit
    batch_size: int  # recommended: the largest that keeps the headroom
    overhead_bytes: int  # every term at the maximum (fragmentation included)


def estimate_request(spec: ModelSpec, device: str, precision: str, seed: int = 0) -> ProbeRequest:
    return ProbeRequest(
        kind="estimate",
        model=spec,
        device=device,
        precision=precision,
        seed=seed,
        estimate_batch_sizes=list(ESTIMATE_BATCH_SIZES),
    )


def from_result(result: ProbeResult, spec: ModelSpec) -> Estimate:
    """The estimate a probe child reported (``ValueError`` when it reported none)."""
    data = result.estimate
    if result.status != "ok" or not data or len(data.get("points", [])) < 2:
        raise ValueError(result.message or f"the estimate probe ended with {result.status}")
    waste = data.get("segment_rounding") or [[0, 0]]
    return Estimate(
        policy=spec.policy,
        device_type=data["target"],
        precision=data["precision"],
        grad_checkpointing=spec.gradient_checkpointing,
        points=[(int(b), int(p)) for b, p in data["points"]],
        segment_rounding_bytes=int(waste[-1][1]),
        weights_bytes=int(data.get("weights_bytes", 0)),
        optimizer_state_bytes=int(data.get("optimizer_state_bytes", 0)),
        wall_s=float(data.get("wall_s", 0.0)),
        total_params=result.total_params,
    )


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

    ``ctx`` is the run's context, ``prober`` its :class:`~autotune.prober.Prober`. A prober that
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
