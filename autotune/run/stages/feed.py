"""Measure the feed: one worker's time to read a sample against the step's time at the chosen batch."""

from __future__ import annotations

import logging

from autotune.run.context import RunContext
from autotune.run.prober import Prober
from autotune.run.stages.variant import VariantOutcome
from autotune.tuning.feed_model import FeedModel

log = logging.getLogger(__name__)


def measure_feed(ctx: RunContext, prober: Prober, winner: VariantOutcome) -> FeedModel | None:
    """How many workers should keep up, from a decode probe and the measured step; None if the
    step time at the recommended batch is unknown."""
    decision = winner.decision
    assert decision is not None
    point = next((p for p in decision.curve if p.batch_size == decision.batch_size), None)
    if point is None or point.step_time_s <= 0:
        return None
    cores = ctx.fingerprint.cpu_cores
    with prober.progress.stage("feed", "reading samples", total=1):
        decode = prober.decode(winner.variant, ctx.data.root)
    model = FeedModel(decision.batch_size, decode, point.step_time_s, cores)
    log.info(
        "one worker reads a sample in %.1f ms and the step takes %.3f s at batch %d: "
        "%d worker(s) should keep up (this machine has %d cores)",
        decode * 1000,
        point.step_time_s,
        decision.batch_size,
        model.workers_needed,
        cores,
    )
    return model
