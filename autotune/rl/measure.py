"""Measuring RL batch sizes in isolated probe children, as ``autotune run`` measures LeRobot's.

PPO: only sizes that divide the batch can be used (rl_games asserts it), so the search bisects
the valid sizes (:func:`search_valid`): the largest valid minibatch that fits is certified by the
next valid size running out of memory, in about log2 of their count probes (4 for a batch of
4096). A line fitted through the fitting peaks (:func:`autotune.tuning.search.fit_memory`) places the
headroom between them. Then, as
``--target-batch`` does for LeRobot (:func:`autotune.tuning.batch.decide_batch`), the largest valid sizes
at or below the largest one within the headroom are timed, the fastest wins (a smaller one only by
more than 3%), and it soaks: a whole update (``mini_epochs`` passes) must fit under the headroom
line, else the next valid size down is tried.

RRD: two searches, each holding the other knob as given: the largest ``BATCH_SIZE``, and the
largest subsequence count (``RRD_BATCH_SIZE = count x RRD_SAMPLE_SIZE``, always valid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from autotune.errors import UserError
from autotune.outputs.results import describe_probe
from autotune.rl.ppo import PpoBatch, largest_valid_at_most, valid_minibatch_sizes
from autotune.rl.records import Recorder
from autotune.rl.rrd import RrdBatch
from autotune.rl.spec import NetSpec, PpoProbe, RrdProbe
from autotune.run.probe_client import run_probe
from autotune.tuning.batch import BatchDecision, decide_batch, headroom_batch
from autotune.tuning.memory_fit import effective_budget, fit_memory
from autotune.tuning.search import SearchOutcome, find_max_batch
from autotune.units import format_bytes
from probes.protocol import ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

WARMUP_STEPS = 1
MEASURE_STEPS = 3  # minibatch (PPO) or batch (RRD) steps a search probe times
SOAK_MAX_STEPS = 256  # a PPO soak times a whole update, at most this many minibatch steps


@dataclass(frozen=True)
class Budget:
    """Where and under what budget the probes run."""

    device: str
    precision: str
    memory_limit_bytes: int
    headroom: float
    probe_timeout_s: float
    seed: int = 0


@dataclass
class PpoMeasurement:
    search: SearchOutcome
    decision: BatchDecision
    max_valid_minibatch: int  # the largest valid minibatch at or below the largest that fits
    headroom_valid_minibatch: int  # the largest valid one within the headroom
    probes: int

    @property
    def minibatch_size(self) -> int:
        return self.decision.batch_size

    @property
    def samples_per_s(self) -> float:
        point = next((p for p in self.decision.curve if p.batch_size == self.minibatch_size), None)
        return point.samples_per_s if point else 0.0


@dataclass
class RrdMeasurement:
    batch_search: SearchOutcome  # BATCH_SIZE, subsequences as given
    subsequence_search: SearchOutcome  # subsequence count, BATCH_SIZE as given
    headroom_batch_size: int
    headroom_subsequences: int
    probes: int


def _request(kind: str, budget: Budget, size: int, rl: dict, measure_steps: int) -> ProbeRequest:
    return ProbeRequest(
        kind=kind,  # type: ignore[arg-type]
        device=budget.device,
        precision=budget.precision,
        batch_size=size,
        memory_limit_bytes=budget.memory_limit_bytes,
        warmup_steps=WARMUP_STEPS,
        measure_steps=measure_steps,
        seed=budget.seed,
        rl=rl,
    )


class _Counter:
    """Runs probes, counts and logs them, and writes each one's row."""

    def __init__(self, budget: Budget, recorder: Recorder) -> None:
        self.budget = budget
        self.recorder = recorder
        self.count = 0

    def run(self, request: ProbeRequest, label: str, row: Callable[[ProbeResult], None]) -> ProbeResult:
        self.count += 1
        result = run_probe(request, self.budget.probe_timeout_s)
        log.info(
            "probe %d (%s): %s", self.count, label, describe_probe(result, step_digits=4, say_reserved=False)
        )
        row(result)
        return result


def measure_ppo(ppo: PpoBatch, net: NetSpec, budget: Budget, recorder: Recorder) -> PpoMeasurement:
    """The largest valid minibatch that fits, and the fastest valid one within the headroom."""
    counter = _Counter(budget, recorder)
    batch = ppo.batch_size

    def probe(size: int, phase: str) -> ProbeResult:
        soak = phase == "soak"
        rl = PpoProbe(net, batch, ppo.mini_epochs, full_update=soak, max_steps=SOAK_MAX_STEPS).to_dict()
        request = _request("ppo", budget, size, rl, MEASURE_STEPS)
        valid = batch % size == 0
        label = f"{phase}, minibatch {size}{'' if valid else ' (does not divide the batch)'}"
        return counter.run(request, label, lambda r: recorder.ppo_row(r, phase, ppo, net))

    search = search_valid(
        lambda size: probe(size, "search"), budget.memory_limit_bytes, valid_minibatch_sizes(batch)
    )
    if search.max_batch == 0:
        first = search.probes[0] if search.probes else None
        raise UserError(
            f"even minibatch 1 does not fit in {format_bytes(search.budget_bytes)} "
            f"({first.message if first and first.message else 'out of memory'}); raise --memory-limit, "
            "or measure a smaller network (--hidden) or fewer envs (the rollout sits on the device)"
        )
    decision = decide_batch(search, probe, headroom=budget.headroom, soak=True, target_batch=batch)
    return PpoMeasurement(
        search=search,
        decision=decision,
        max_valid_minibatch=largest_valid_at_most(batch, search.max_batch),
        headroom_valid_minibatch=largest_valid_at_most(batch, decision.headroom_batch),
        probes=counter.count,
    )


def search_valid(probe: Callable[[int], ProbeResult], budget_bytes: int, sizes: list[int]) -> SearchOutcome:
    """The largest of ``sizes`` (ascending) whose probe fits, by bisection: certified when the next
    size ran out of memory, capped when the largest fits. An error or a timeout stops it."""
    outcome = SearchOutcome(max_batch=0, certified=False, capped=False, budget_bytes=budget_bytes)
    lo, hi = -1, len(sizes)  # sizes[lo] fits (-1: none known), sizes[hi] does not (len: none seen)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result = probe(sizes[mid])
        outcome.probes.append(result)
        outcome.budget_bytes = effective_budget(outcome.probes, outcome.budget_bytes)
        if result.status == "ok":
            lo = mid
        elif result.status == "oom":
            hi = mid
        else:
            raise UserError(
                f"probe at minibatch {sizes[mid]} ended with {result.status}: {result.message or 'no message'}"
            )
    if lo >= 0:
        outcome.max_batch = sizes[lo]
        outcome.capped = hi == len(sizes)
        outcome.certified = not outcome.capped
    points = [
        (p.batch_size, float(p.peak_reserved_bytes)) for p in outcome.fitting if p.peak_reserved_bytes > 0
    ]
    if len({b for b, _ in points}) >= 2:
        outcome.fit = fit_memory(points)
    return outcome


def measure_rrd(
    rrd: RrdBatch, net: NetSpec, budget: Budget, recorder: Recorder, max_batch: int
) -> RrdMeasurement:
    """The largest BATCH_SIZE (subsequences as given) and the largest subsequence count
    (BATCH_SIZE as given) whose training step fits."""
    counter = _Counter(budget, recorder)
    sample = rrd.rrd_sample_size

    def probe(size: int, vary: str) -> ProbeResult:
        rl = RrdProbe(net, rrd.batch_size, sample, rrd.subsequences_per_batch, vary=vary).to_dict()
        request = _request("rrd", budget, size, rl, MEASURE_STEPS)
        batch_size, subsequences = (
            (size, rrd.subsequences_per_batch) if vary == "batch_size" else (rrd.batch_size, size)
        )
        label = f"BATCH_SIZE {batch_size}, RRD_BATCH_SIZE {subsequences * sample}"
        return counter.run(
            request, label, lambda r: recorder.rrd_row(r, vary, rrd, net, batch_size, subsequences * sample)
        )

    limit = budget.memory_limit_bytes
    by_batch = find_max_batch(lambda n: probe(n, "batch_size"), limit, max_batch=max_batch)
    by_subsequences = find_max_batch(
        lambda k: probe(k, "subsequences"), limit, max_batch=max(1, max_batch // sample)
    )
    if by_batch.max_batch == 0 and by_subsequences.max_batch == 0:
        raise UserError(
            f"even BATCH_SIZE 1 with one subsequence of {sample} does not fit in "
            f"{format_bytes(by_batch.budget_bytes)}; raise --memory-limit or measure smaller networks"
        )
    return RrdMeasurement(
        batch_search=by_batch,
        subsequence_search=by_subsequences,
        headroom_batch_size=headroom_batch(by_batch, budget.headroom) if by_batch.max_batch else 0,
        headroom_subsequences=headroom_batch(by_subsequences, budget.headroom)
        if by_subsequences.max_batch
        else 0,
        probes=counter.count,
    )
