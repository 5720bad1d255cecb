"""Watching a training: each logged step into ``results/train_runs.csv``, and a warning, once, when it
runs slower than the profile promised or starts waiting on data."""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.outputs.profile import Profile
from autotune.outputs.results import ResultsWriter, profile_run_key
from autotune.trainer.train_log import StepLog, parse_step
from autotune.tuning.noise import NOISE_FLOOR, Z

log = logging.getLogger(__name__)

WINDOW = 3  # logged steps in a row that must agree before a warning (the first is set apart)
# Without a verification in the trainer, its samples/s may differ from autotune's by this share (its
# decoder, preprocessing and sampler; autotune.trainer.verify.SAMPLES_TOLERANCE) before it counts.
UNVERIFIED_TOLERANCE = 0.25
WAITING_SHARE = 0.10  # data_s over the step beyond the profile's share by this much: waiting on data
GiB = 1024**3


@dataclass
class Reference:
    """What the training is held to: samples/s, the share of a step spent waiting, and the drop
    allowed before it counts (the noise, or the trainer's tolerance where it was never verified)."""

    samples_per_s: float
    wait_share: float
    allowed_drop: float
    source: str  # "verified in lerobot-train 0.6.1" or "autotune's probes"


def history_noise(results: Path, profile: Profile) -> float:
    """The relative run-to-run noise of samples/s: the spread of the tuned runs under the same
    conditions in ``runs.csv`` (three or more), else the noise the profile's decisions were judged
    against, never below the floor."""
    noise = max([NOISE_FLOOR, *(float(d.get("noise") or 0) for d in profile.decisions)])
    runs = results / "runs.csv"
    if not runs.exists():
        return noise
    from autotune.nightly.runs import read_runs

    frame, _ = read_runs(runs)
    same = frame[(frame.policy == profile.policy) & frame.status.isin(["ok", "checked"])]
    same = same[same.batch_size.astype(str) == str(profile.batch_size)]
    values = [float(v) for v in same.samples_per_s if str(v) not in ("", "nan")]
    if len(values) >= 3 and statistics.fmean(values) > 0:
        noise = max(noise, statistics.stdev(values) / statistics.fmean(values))
    return noise


def reference(results: Path, profile: Profile) -> Reference:
    noise = history_noise(results, profile)
    verified = profile.verification or {}
    step = profile.data_s + profile.updt_s
    share = profile.data_s / step if step > 0 else 0.0
    if verified.get("status") == "verified" and verified.get("samples_per_s"):
        return Reference(
            float(verified["samples_per_s"]), share, Z * noise, f"verified in lerobot-train {verified.get('lerobot_version', '')}".rstrip()
        )  # fmt: skip
    return Reference(profile.samples_per_s, share, max(Z * noise, UNVERIFIED_TOLERANCE), "autotune's probes")


def remedy(profile: Profile) -> str:
    """What the input-bound diagnosis says would help, or the way to measure it."""
    for found in (profile.input_bound or {}).get("remedies", []):
        return f"would help ({'measured' if found.get('measured') else 'estimated'}): {found['what']}"
    return f"re-tune to measure what would help: autotune run --policy {profile.policy} --force"


class Watch:
    """Reads the trainer's lines: rows for its logged steps, warnings once."""

    def __init__(self, results: Path, profile: Profile, key: dict[str, Any], ref: Reference, log_freq: int):
        self.results, self.profile, self.ref, self.log_freq = results, profile, ref, log_freq
        self.writer = ResultsWriter(results, key)
        self.last_step: int | None = None
        self.steps_seen = 0
        self.recent: deque[StepLog] = deque(maxlen=WINDOW)
        self.warned: set[str] = set()
        self.attempt, self.batch_size, self.accumulation = 0, profile.batch_size, 1

    def start(self, attempt: int, batch_size: int, accumulation: int) -> None:
        self.attempt, self.batch_size, self.accumulation = attempt, batch_size, accumulation
        self.recent.clear()
        self.steps_seen = 0

    def line(self, text: str) -> StepLog | None:
        step = parse_step(text, self.last_step, self.log_freq)
        if step is None:
            return None
        self.last_step = step.step
        self.steps_seen += 1
        samples = step.samples_per_s(self.batch_size)
        self.event("step", step=step.step, data_s=step.data_s, prep_s=step.prep_s, updt_s=step.updt_s,
                   samples_per_s=round(samples, 4), peak_bytes=int(step.mem_gb * GiB) if step.mem_gb else None,
                   loss=step.loss)  # fmt: skip
        if self.steps_seen > 1:  # the first window starts the DataLoader's workers
            self.recent.append(step)
            self._judge()
        return step

    def event(self, event: str, **row: Any) -> None:
        self.writer.add(
            "train_runs.csv",
            {"attempt": self.attempt, "event": event, "batch_size": self.batch_size,
             "grad_accum_steps": self.accumulation, "profile_samples_per_s": self.ref.samples_per_s, **row},
        )  # fmt: skip

    def _judge(self) -> None:
        if len(self.recent) < WINDOW:
            return
        rates = [s.samples_per_s(self.batch_size) for s in self.recent]
        floor = self.ref.samples_per_s * (1 - self.ref.allowed_drop)
        if "slow" not in self.warned and all(r < floor for r in rates):
            self.warned.add("slow")
            log.warning(
                "training runs at %.2f samples/s, below the %.2f of %s by more than the noise (%.0f%%); %s",
                statistics.fmean(rates),
                self.ref.samples_per_s, self.ref.source, 100 * self.ref.allowed_drop, remedy(self.profile),
            )  # fmt: skip
        shares = [s.wait_s / (s.wait_s + s.updt_s) if s.wait_s + s.updt_s > 0 else 0.0 for s in self.recent]
        if "waiting" not in self.warned and all(x > self.ref.wait_share + WAITING_SHARE for x in shares):
            self.warned.add("waiting")
            log.warning(
                "the step waits on data: data_s %.3f s of %.3f s a step (%.0f%%; tuned %.0f%%); %s",
                statistics.fmean(s.wait_s for s in self.recent),
                statistics.fmean(s.wait_s + s.updt_s for s in self.recent),
                100 * statistics.fmean(shares), 100 * self.ref.wait_share, remedy(self.profile),
            )  # fmt: skip


def run_key(profile: Profile, run_id: str, lerobot_version: str) -> dict[str, Any]:
    return {
        **profile_run_key(profile, run_id),
        "profile_run_id": profile.run_id,
        "lerobot_version": lerobot_version,
    }
