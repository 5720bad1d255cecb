"""The nightly check of an up-to-date profile, and the alarm every run ends with.

When nothing that the profile depends on changed, a run does not tune again, but it does not
skip either: it trains the recommended batch for a few steps and runs the chosen worker setting for
one trial, so a slow disk, a thermal throttle or a firmware change shows. Either way the run's
figures then go to the regression alarm (:mod:`autotune.nightly.alarm`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from autotune.errors import ProbeError
from autotune.nightly.alarm import Alert, alert_row, compare, history, step_noise
from autotune.outputs.profile import Profile
from autotune.run.config import Variant
from autotune.run.context import RunContext
from autotune.run.prober import Prober
from autotune.tuning.study import TrialRecord
from autotune.units import format_bytes
from probes.protocol import ProbeResult

log = logging.getLogger(__name__)


@dataclass
class CheckOutcome:
    batch: ProbeResult  # the recommended batch, trained again
    trial: ProbeResult  # the chosen worker setting, run again
    summary: str

    def row(self, profile: Profile) -> dict[str, Any]:
        """The runs.csv fields of a check (the maximum is the profile's: not searched again)."""
        t = self.trial
        return {
            "status": "checked",
            "precision": profile.precision,
            "grad_checkpointing": profile.grad_checkpointing,
            "max_batch_size": profile.max_batch_size,
            "certified": profile.certified,
            "batch_size": profile.batch_size,
            "grad_accum_steps": profile.grad_accum_steps,
            "num_workers": profile.num_workers,
            "prefetch_factor": profile.prefetch_factor,
            "data_s": t.data_s,
            "updt_s": t.updt_s,
            "samples_per_s": t.samples_per_s,
            "peak_reserved_bytes": self.batch.peak_reserved_bytes,
            "trials": 1,
            "message": self.summary,
        }


def check_profile(ctx: RunContext, prober: Prober, profile: Profile) -> CheckOutcome:
    """Train the profile's batch for a few steps and run its worker setting once."""
    variant = Variant(profile.precision, profile.grad_checkpointing)
    batch_size = profile.batch_size
    log.info(
        "checking the profile: batch %d for a few steps, then %d worker(s)",
        batch_size,
        profile.num_workers,
    )
    batch = prober.batch(variant, batch_size, "check")
    if batch.status in ("error", "timeout"):
        raise ProbeError(f"the check at batch {batch_size} ended with {batch.status}: {batch.message}")
    trial = prober.trial(variant, batch_size, profile.num_workers, profile.prefetch_factor)
    prober.record_trial(
        variant, TrialRecord(-1, profile.num_workers, profile.prefetch_factor, trial)
    )  # trial -1: a check, not a study trial
    if trial.status == "error":
        raise ProbeError(f"the check's worker trial failed: {trial.message}")
    parts = [
        f"batch {batch_size} {'still fits' if batch.fits else 'no longer fits: ' + batch.message}",
        f"peak {format_bytes(batch.peak_reserved_bytes)} (profile {format_bytes(profile.peak_reserved_bytes)})",
    ]
    if trial.fits:
        parts.append(f"{trial.samples_per_s:.2f} samples/s (profile {profile.samples_per_s:.2f})")
    return CheckOutcome(batch, trial, "checked: " + ", ".join(parts))


def sound_alarm(ctx: RunContext, row: dict[str, Any], result: ProbeResult | None) -> list[Alert]:
    """Compare the run's ``runs.csv`` row with the history of its conditions; alerts to alerts.csv.

    ``result``: the worker trial whose steps give the run's own spread.
    """
    noise = step_noise(result.batch_size, result.data_times_s, result.step_times_s) if result else {}
    row = {**ctx.writer.key, **row}  # the run key (run_id, conditions) and the run's figures
    alerts = compare(history(ctx.cfg.results / "runs.csv", row), row, noise)
    for alert in alerts:
        ctx.writer.add("alerts.csv", alert_row(alert))
        (log.warning if alert.kind == "regression" else log.info)("%s", alert.text)
    return alerts
