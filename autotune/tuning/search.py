"""Find the largest batch that trains within a memory budget, with few probes.

The search is a pure function over "try this batch size" (:data:`ProbeFn`), so it is tested with
fakes and runs unchanged against real probe children. Only an out-of-memory outcome steers it;
any other failure raises :class:`~autotune.errors.ProbeError`. Memory here is a probe's peak
*reserved* memory: what the budget counts (on CUDA the caching allocator's reserve, which is what
runs out; on CPU the growth of the probe's resident set).

How it chooses each size to probe, and how an estimate (``estimate=``) starts and aims it, is told
in :mod:`autotune.tuning.next_probe`; the memory line and the budget the probes really had are
:mod:`autotune.tuning.memory_fit`'s.

Two kinds of probe error steer it too, as the child names them from the library's words (it cannot
know more). A status that next to the limit means out of memory and anywhere else another fault
(cuBLAS's ``EXECUTION_FAILED``, cuDNN's ``INTERNAL_ERROR`` and ``NOT_SUPPORTED``, NCCL's ``Cuda
failure 'out of memory'``) counts as out of memory at a size of at least :data:`AMBIGUOUS_NEAR` of
one that ran out of memory or of the maximum the peaks (or the estimate) predict, and stops the
search as an error well below both (and where neither is known yet). A kernel's size limit
(``invalid configuration argument``, tensors past ``INT_MAX`` elements, 32-bit indexing) is neither
a fit nor out of memory: the search takes that size as its upper bound, as it takes ``max_batch``,
and says so in a note.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from autotune.errors import ProbeError
from autotune.tuning.memory_fit import DEFAULT_MAX_BATCH, MemoryFit, effective_budget, fit_memory
from autotune.tuning.next_probe import Bracket, next_size, start_bracket
from probes.protocol import AMBIGUOUS_OOM, KERNEL_LIMIT, ProbeResult

log = logging.getLogger(__name__)

ProbeFn = Callable[[int], ProbeResult]

# An ambiguous out-of-memory (a library status that means it only next to the limit) counts as one
# at a size at least this share of the smallest size that ran out of memory, or of the maximum the
# memory line predicts; below both it is an error.
AMBIGUOUS_NEAR = 0.5


@dataclass
class SearchOutcome:
    """The largest fitting batch, and the evidence for it."""

    max_batch: int  # 0 when even batch 1 does not fit
    certified: bool  # a probe at max_batch fitted and one at max_batch + 1 did not
    capped: bool  # stopped at the search's upper bound without running out of memory
    budget_bytes: int  # the budget the probes really had: the smallest cap they reported, if less
    probes: list[ProbeResult] = field(default_factory=list)
    fit: MemoryFit | None = None
    limit_batch_size: int = 0  # the smallest size past a kernel's limit (0: none met)
    limit_reason: str = ""  # that probe's message
    notes: list[str] = field(default_factory=list)  # what a person should read beside the numbers

    @property
    def evidence(self) -> str:
        """What bounds ``max_batch``, in words."""
        if self.certified:
            return "certified"
        if self.limit_batch_size and self.limit_batch_size == self.max_batch + 1:
            return f"bounded by a kernel's limit at batch {self.limit_batch_size}"
        if self.capped:
            return "capped at --max-batch"
        return "not certified"

    @property
    def fitting(self) -> list[ProbeResult]:
        return [p for p in self.probes if p.fits]

    def result_at(self, batch_size: int) -> ProbeResult | None:
        for p in reversed(self.probes):
            if p.batch_size == batch_size:
                return p
        return None


def find_max_batch(
    probe: ProbeFn,
    budget_bytes: int,
    *,
    start: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
    on_probe: Callable[[ProbeResult], None] | None = None,
    estimate: MemoryFit | None = None,
) -> SearchOutcome:
    """Search the largest batch in ``[1, max_batch]`` whose probe fits ``budget_bytes``.

    Returns a certified answer (``max_batch`` fits, ``max_batch + 1`` does not) unless the
    search reached ``max_batch`` without an out-of-memory, in which case ``capped`` is set.
    A probe that reports a smaller allocator cap than ``budget_bytes`` (the device had less: a MIG
    slice, other processes, the CUDA context and libraries) lowers the budget the search aims at
    and reports (:func:`effective_budget`).

    ``estimate``, a predicted peak memory line (the budget's units: reserved bytes inside the
    allocator's cap), starts the search at the maximum it predicts (unless ``start`` is given) and
    lends its slope until the probes measure their own; the answer is still certified by probes.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget must be positive, got {budget_bytes}")
    if not 1 <= start <= max_batch:
        raise ValueError(f"start batch {start} must lie in [1, {max_batch}]")

    outcome = SearchOutcome(max_batch=0, certified=False, capped=False, budget_bytes=budget_bytes)
    state, start = start_bracket(budget_bytes, start, max_batch, estimate)
    search = _Search(probe, on_probe, state, outcome)
    search.run(start)
    while state.hi - state.lo > 1:
        before, bounded = (state.lo, state.hi), state.seen_oom
        candidate = next_size(state, search.fit_points, outcome.budget_bytes)
        result = search.run(candidate)
        state.after_probe(before, bounded, candidate, result.fits)
        log.debug("bracket [%d, %d) after probing %d", state.lo, state.hi, candidate)
    return search.finish()


@dataclass
class _Search:
    """One search under way: the bracket, the outcome it fills, and the peaks of the sizes that fit."""

    probe: ProbeFn
    on_probe: Callable[[ProbeResult], None] | None
    state: Bracket
    outcome: SearchOutcome
    fit_points: list[tuple[int, float]] = field(default_factory=list)

    def run(self, size: int) -> ProbeResult:
        """Probe ``size``, record it, and narrow the bracket by what it says."""
        outcome, state = self.outcome, self.state
        result = self.probe(size)
        outcome.probes.append(result)
        outcome.budget_bytes = effective_budget(outcome.probes, outcome.budget_bytes)
        if self.on_probe is not None:
            self.on_probe(result)
        if result.status == "ok":
            state.lo = max(state.lo, size)
            if result.peak_reserved_bytes > 0:
                self.fit_points.append((size, float(result.peak_reserved_bytes)))
        elif result.status == "oom" or (
            result.error_kind == AMBIGUOUS_OOM and self._near_limit(size, result)
        ):
            state.hi_by_limit = state.hi_by_limit and state.hi <= size
            state.hi = min(state.hi, size)
            state.oom_hi = min(state.oom_hi or size, size)
            state.seen_oom = True
        elif result.error_kind == KERNEL_LIMIT:
            if not outcome.limit_batch_size or size < outcome.limit_batch_size:
                outcome.limit_batch_size, outcome.limit_reason = size, result.message
            state.hi_by_limit = state.hi_by_limit or size < state.hi
            state.hi = min(state.hi, size)
        else:
            raise self._fault(size, result)
        if state.lo >= state.hi:
            raise ProbeError(
                f"memory is not monotonic in batch size: batch {state.lo} fit but batch {state.hi} "
                "ran out of memory; another process may be using the memory"
            )
        return result

    def _fault(self, size: int, result: ProbeResult) -> ProbeError:
        """The error a probe that neither fitted nor ran out of memory stops the search with."""
        if result.error_kind == AMBIGUOUS_OOM:
            return ProbeError(
                f"probe at batch {size} ended with {result.status}: {result.message}; next to the memory "
                f"limit this can mean out of memory, but batch {size} is well below "
                f"{self._what_is_near()}, so it is a fault, not out of memory"
            )
        return ProbeError(
            f"probe at batch {size} ended with {result.status}: {result.message or 'no message'}"
        )

    def finish(self) -> SearchOutcome:
        """The outcome: the maximum, what bounds it (with a note on a kernel's limit), the memory line."""
        outcome, state = self.outcome, self.state
        outcome.max_batch = state.lo
        outcome.capped = not state.seen_oom and not outcome.limit_batch_size
        outcome.certified = state.seen_oom and state.hi == state.lo + 1 and not state.hi_by_limit
        if outcome.limit_batch_size:
            note = (
                f"batch {outcome.limit_batch_size} is past a kernel's limit ({outcome.limit_reason}): neither "
                f"a fit nor out of memory, so the search took it as its upper bound; batch {outcome.max_batch} "
                + (
                    "is the largest that fitted below it, bounded by the kernel, not certified by running out "
                    "of memory"
                    if not outcome.certified
                    else "is certified below it by running out of memory"
                )
            )
            log.warning("%s", note)
            outcome.notes.append(note)
        outcome.fit = fit_memory(self.fit_points)
        if outcome.fit is None and self.fit_points and state.prior_slope > 0:
            # Started from the estimate, the search may certify its maximum having fitted at one size
            # only: the estimate's slope through that measured peak places the headroom (the soak
            # then checks the recommended batch against it for real).
            size, peak = max(self.fit_points)
            outcome.fit = MemoryFit(peak - state.prior_slope * size, state.prior_slope, points=1)
        return outcome

    def _predicted_max(self) -> int:
        """The maximum the measured peaks predict (their line, or the estimate's slope through the
        largest fit), else the estimate's own; 0 where nothing predicts one yet."""
        state, fit_points = self.state, self.fit_points
        fit = fit_memory(fit_points)
        if fit is not None and fit.per_sample_bytes > 0:
            return fit.max_batch_under(self.outcome.budget_bytes)
        if fit_points and state.prior_slope > 0:
            size, peak = max(fit_points)
            return max(size, size + math.floor((self.outcome.budget_bytes - peak) / state.prior_slope))
        return state.prior_max

    def _near_limit(self, size: int, result: ProbeResult) -> bool:
        """Whether an ambiguous out-of-memory at ``size`` is next to the limit (then it is one, and
        the run says so in a note): at least AMBIGUOUS_NEAR of a size that ran out of memory or of
        the predicted maximum."""
        predicted = self._predicted_max()
        near = [
            what
            for what, bound in (
                (f"batch {self.state.oom_hi}, which ran out of memory", self.state.oom_hi),
                (f"the predicted maximum {predicted}", predicted),
            )
            if bound and size >= AMBIGUOUS_NEAR * bound
        ]
        if not near:
            return False
        note = f"batch {size}: {result.message}, counted as out of memory next to {near[0]}"
        log.warning("%s", note)
        self.outcome.notes.append(note)
        return True

    def _what_is_near(self) -> str:
        """The sizes an ambiguous out-of-memory was judged against, in words."""
        predicted = self._predicted_max()
        known = [f"batch {self.state.oom_hi}, which ran out of memory"] if self.state.oom_hi else []
        known += [f"the predicted maximum {predicted}"] if predicted else []
        return (
            " and ".join(known)
            if known
            else "any size known to run out of memory (none yet, nor a prediction)"
        )
