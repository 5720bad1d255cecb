"""The video decoder, tuned with the workers: at the recommended worker setting, the other decoder the
trainer can use is measured against the trainer's own, in paired trials against the noise.

It is challenged only where the decode probe measured it reading a sample faster: where it reads
slower it cannot feed the step faster, and the trainer's own choice stands without a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autotune.errors import ProbeError
from autotune.tuning import noise
from autotune.tuning.study import StudyOutcome, TrialRecord, over_host_budget
from autotune.tuning.worker_choice import trial_noise
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)

BackendTrialFn = Callable[[int, int | None, str], ProbeResult]


def worth_challenging(current: str, other: str | None, decode_s: dict[str, float]) -> bool:
    """Whether ``other`` read a sample faster than ``current`` in the decode probe."""
    return bool(other) and other in decode_s and current in decode_s and decode_s[other] < decode_s[current]


def challenge_decoder(
    outcome: StudyOutcome,
    current: str,
    other: str,
    trial_fn: BackendTrialFn,
    *,
    host_budget_bytes: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    max_pairs: int = noise.MAX_PAIRS,
) -> StudyOutcome:
    """Measure ``outcome.best``'s setting with ``other`` and keep ``current`` unless ``other`` is
    faster beyond the noise; ``outcome.best`` becomes the chosen decoder's median measurement."""
    best = outcome.best
    workers, prefetch = best.setting
    mine: list[TrialRecord] = [best]
    theirs: list[TrialRecord] = []

    def measure(backend: str, kept: list[TrialRecord]) -> Callable[[], float | None]:
        def run() -> float | None:
            log.info(
                "trial %d with %s: num_workers=%d prefetch_factor=%s", best.number, backend, workers, prefetch
            )
            result = over_host_budget(trial_fn(workers, prefetch, backend), host_budget_bytes)
            record = TrialRecord(
                best.number, workers, prefetch, result, default_prefetch=best.default_prefetch,
                repeat=len(kept), video_backend=backend,
            )  # fmt: skip
            kept.append(record)
            outcome.decoder_trials.append(record)
            if on_trial is not None:
                on_trial(record)
            if result.status == "error":
                raise ProbeError(f"worker trial with {backend} failed: {result.message or 'no message'}")
            return result.samples_per_s if result.fits and result.samples_per_s > 0 else None

        return run

    first = measure(other, theirs)()
    judged = trial_noise(outcome.trials)
    outcome.decoder_decision = noise.challenge(
        "decoder",
        current,
        other if first else "",
        best.result.samples_per_s,
        first or 0.0,
        measure(current, mine),
        measure(other, theirs),
        judged,
        max_pairs=max_pairs,
        why_default=f"{current}, the trainer's own decoder",
    )
    log.info("%s", outcome.decoder_decision.text)
    chosen = outcome.decoder_decision.chosen == other
    kept = [t for t in (theirs if chosen else mine) if t.result.fits]
    ordered = sorted(kept, key=lambda t: t.result.samples_per_s)
    if ordered:
        outcome.best = ordered[(len(ordered) - 1) // 2]
    outcome.video_backend = other if chosen else current
    return outcome
