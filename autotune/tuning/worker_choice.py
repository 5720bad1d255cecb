"""The worker setting to recommend: the study's fastest against LeRobot's default, against the noise."""

from __future__ import annotations

import logging
from collections.abc import Callable

from autotune.errors import ProbeError
from autotune.tuning import noise
from autotune.tuning.study import StudyOutcome, TrialFn, TrialRecord, over_host_budget

log = logging.getLogger(__name__)


def trial_noise(records: list[TrialRecord]) -> float:
    """The relative noise of one trial's samples/s (:func:`autotune.tuning.noise.measurement_noise`): the
    per-step spread within the fitting trials, and the spread of settings measured more than once."""
    fitting = [r for r in records if r.result.fits]
    within = []
    for r in fitting:
        rates = noise.per_step_rates(r.result.batch_size, r.result.step_times_s, r.result.data_times_s)
        within.append((noise.relative_spread(rates), len(rates)))
    settings = {r.setting for r in fitting}
    repeats = noise.groups([r.result.samples_per_s for r in fitting if r.setting == s] for s in settings)
    return noise.measurement_noise(within, repeats)


def confirm_best(
    outcome: StudyOutcome,
    trial_fn: TrialFn,
    *,
    host_budget_bytes: int | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    max_pairs: int = noise.MAX_PAIRS,
) -> StudyOutcome:
    """The study's fastest setting against LeRobot's default, decided against the measured noise.

    Where the fastest beats the default's trial by more than the noise, both are measured again,
    interleaved (fastest, default, ...), up to ``max_pairs`` pairs (:func:`autotune.tuning.noise.challenge`);
    unless the fastest clears the noise, LeRobot's default is recommended. Where the default could
    not be measured (over the host budget, out of memory), the setting that uses the least host
    memory among those within the noise of the fastest is. ``outcome.best`` becomes the recommended
    setting's median measurement; every repeat is kept in ``outcome.repeats`` (and passed to
    ``on_trial``).
    """
    fastest = outcome.best
    outcome.study_best = fastest
    default = next((t for t in outcome.trials if t.is_lerobot_default and t.result.fits), None)
    judged = trial_noise(outcome.trials)

    if default is None:
        return _least_host_memory(outcome, fastest, judged)
    outcome.decision = noise.challenge(
        "workers",
        default.label,
        fastest.label if fastest is not default else "",
        default.result.samples_per_s,
        fastest.result.samples_per_s,
        _measure_again(outcome, default, trial_fn, host_budget_bytes, on_trial),
        _measure_again(outcome, fastest, trial_fn, host_budget_bytes, on_trial),
        judged,
        max_pairs=max_pairs,
        why_default=default.label,
    )
    log.info("%s", outcome.decision.text)
    chosen = fastest if outcome.decision.chosen == fastest.label and fastest is not default else default
    outcome.best = outcome.representative(chosen.setting) or chosen
    return outcome


def _measure_again(
    outcome: StudyOutcome,
    record: TrialRecord,
    trial_fn: TrialFn,
    host_budget_bytes: int | None,
    on_trial: Callable[[TrialRecord], None] | None,
) -> Callable[[], float | None]:
    """A measurement of ``record``'s setting again, kept in ``outcome.repeats``: its samples/s, or
    None where it did not fit."""

    def run() -> float | None:
        workers, prefetch = record.setting
        log.info("trial %d again: num_workers=%d prefetch_factor=%s", record.number, workers, prefetch)
        result = over_host_budget(trial_fn(workers, prefetch), host_budget_bytes)
        again = TrialRecord(
            record.number,
            workers,
            prefetch,
            result,
            default_prefetch=record.default_prefetch,
            repeat=1 + sum(t.setting == record.setting for t in outcome.repeats),
        )
        outcome.repeats.append(again)
        if on_trial is not None:
            on_trial(again)
        if result.status == "error":
            raise ProbeError(f"worker trial (num_workers={workers}) failed: {result.message or 'no message'}")
        return result.samples_per_s if result.fits and result.samples_per_s > 0 else None

    return run


def _least_host_memory(outcome: StudyOutcome, fastest: TrialRecord, judged: float) -> StudyOutcome:
    """LeRobot's default was not measured within the budgets: of the settings within the noise of
    the fastest, the one whose loader uses the least host memory."""
    scored = [t for t in outcome.trials if t.result.fits and t.result.samples_per_s > 0]
    near = [
        t
        for t in scored
        if not noise.single(fastest.result.samples_per_s, t.result.samples_per_s, judged).clears
    ]
    chosen = min(near or [fastest], key=lambda t: (t.result.loader_rss_bytes, -t.result.samples_per_s))
    outcome.decision = noise.decide("workers", chosen.label, "", None, extra=0, noise=judged)
    outcome.decision.verdict = "default not measured"
    outcome.decision.text = (
        f"{chosen.label} is recommended: LeRobot's default was not measured within the budgets, and "
        f"of the {len(near)} setting(s) within the noise ({judged:.0%}) of the fastest it uses the "
        "least host memory"
    )
    outcome.best = chosen
    return outcome
