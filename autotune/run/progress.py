"""Progress a person can follow: a bar per stage on stderr (tqdm) and the time the run has left.

The bars show on a terminal only; the log keeps one line per finished probe either way. As soon as
two batch sizes have trained (the search's second probe, a minute or so into a CPU run), the whole
run's duration is estimated (:mod:`autotune.run.eta`) and said once, with what would make it quicker
when it is long, before anyone waits an hour for it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from autotune.run.eta import RunClock, WorkPlan, format_duration, plan_s, remaining_s
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

LONG_RUN_S = 10 * 60  # a run estimated longer than this on a CPU gets hints to make it quicker


class Progress:
    """Stage bars and the running estimate of one run."""

    def __init__(self, plan: WorkPlan, *, max_batch_cap: int, device_type: str, hints: list[str]) -> None:
        self.plan = plan
        self.cap = max_batch_cap
        self.device_type = device_type
        self.hints = hints
        self.clock = RunClock()
        self.done: list[str] = []
        self.current: str | None = None
        self.current_started = 0.0
        self.bar: Any = None
        self.announced = False

    @contextlib.contextmanager
    def stage(self, name: str, desc: str, total: int | None, unit: str = "probe") -> Iterator[None]:
        """Show a bar for stage ``name`` (one of :data:`autotune.run.eta.STAGES`) while it runs."""
        if name == "search" and "search" in self.done:
            # Another variant (checkpointing, another precision): its memory and step times are
            # its own; only the children's start-up carries over.
            self.clock = RunClock(startups_s=list(self.clock.startups_s))
        self.current, self.current_started = name, time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None)
        self._refresh()
        try:
            yield
        finally:
            self.bar.close()
            self.bar = None
            self.done.append(name)
            self.current = None

    def max_batch(self) -> int:
        return self.clock.max_batch(self.plan.budget_bytes, self.cap) or 1

    def remaining_s(self) -> float | None:
        if not self.announced:
            return None
        elapsed = time.perf_counter() - self.current_started if self.current else 0.0
        return remaining_s(self.clock, self.plan, self.max_batch(), self.done, self.current, elapsed)

    def probe_done(self, result: ProbeResult) -> None:
        """Take in a finished probe: refine the estimate, move the bar, say the estimate once."""
        self.clock.record(
            result.batch_size,
            result.fits,
            result.step_time_s,
            result.steps,
            result.wall_s,
            float(result.peak_reserved_bytes),
            result.total_params,
            result.trainable_params,
        )
        if self.bar is not None:
            self.bar.update(1)
        # One timed size cannot tell the fixed memory from the per-sample memory (on a CPU the
        # fixed part is far more than the weights and optimiser state): wait for the second.
        if not self.announced and len({b for b, _ in self.clock.step_points}) >= 2:
            self._announce()
        self._refresh()

    def search_done(self, max_batch: int) -> None:
        self.clock.known_max = max_batch
        if not self.announced and self.clock.step_points:
            self._announce()

    def _refresh(self) -> None:
        left = self.remaining_s()
        if self.bar is not None and left is not None:
            self.bar.set_postfix_str(f"about {format_duration(left)} left in the run", refresh=True)

    def _announce(self) -> None:
        self.announced = True
        batch, step = self.clock.step_points[-1]
        total = sum(plan_s(self.clock, self.plan, self.max_batch(), s) for s in ("search", "batch"))
        total = total * self.plan.variants + plan_s(self.clock, self.plan, self.max_batch(), "feed")
        total += plan_s(self.clock, self.plan, self.max_batch(), "workers")
        machine = "this CPU" if self.device_type == "cpu" else "this GPU"
        log.info(
            "estimate: this run takes about %s on %s (a training step at batch %d took %.2f s; the "
            "largest batch looks like about %d)",
            format_duration(total),
            machine,
            batch,
            step,
            self.max_batch(),
        )
        if self.device_type == "cpu" and total > LONG_RUN_S and self.hints:
            log.info("to finish sooner: %s", "; ".join(self.hints))
