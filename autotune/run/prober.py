"""The one place a run's probe requests are built: it runs them, counts them, logs them, writes rows."""

from __future__ import annotations

import logging
from pathlib import Path

from autotune.errors import ProbeError
from autotune.estimate import estimate_request
from autotune.outputs.results import describe_probe, probe_row, trial_row
from autotune.run.config import Variant
from autotune.run.context import RunContext
from autotune.run.probe_client import run_probe
from autotune.run.progress import Progress
from autotune.tuning.study import TrialRecord
from probes.protocol import ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

BATCH_WARMUP_STEPS = 1
BATCH_MEASURE_STEPS = 3
# Worker trials: one warm-up step (it pays for starting the workers), then steps until the
# prefetched batches are used up, then the measured steps. A GPU step is short, so it affords more
# measured steps and a longer drain than a CPU step does.
WORKER_WARMUP_STEPS = 1
WORKER_MEASURE_STEPS = {"cuda": 8, "cpu": 3}
WORKER_DRAIN_BUDGET_S = {"cuda": 120.0, "cpu": 30.0}
DECODE_SAMPLES = 8


class Prober:
    """Builds every probe request of one run from its context and runs it in an isolated child."""

    def __init__(self, ctx: RunContext, progress: Progress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.count = 0  # batch probes run for the search, throughput and soak
        self.at_size: dict[tuple[str, int], int] = {}  # probes so far per (variant, batch size)
        self.decoded: dict[str, dict[str, float]] = {}  # decode probes: seconds per sample per decoder

    def batch_request(
        self,
        variant: Variant,
        batch_size: int,
        phase: str,
        image_size: tuple[int, int] | None = None,
        root: Path | None = None,
    ) -> ProbeRequest:
        cfg = self.ctx.cfg
        soak = phase == "soak"
        # The LeRobot backend trains on real samples of the dataset; the rebuilt models on
        # synthetic tensors of its shapes.
        lerobot = cfg.backend == "lerobot"
        return ProbeRequest(
            dataset_root=str(root or self.ctx.data.root) if lerobot else None,
            world_size=cfg.gpus,
            kind="batch",
            model=self.ctx.spec(variant, image_size),
            device=cfg.device,
            precision=variant.precision,
            batch_size=batch_size,
            memory_limit_bytes=self.ctx.memory_limit,
            warmup_steps=BATCH_WARMUP_STEPS,
            measure_steps=cfg.effective_soak_steps() if soak else BATCH_MEASURE_STEPS,
            seed=cfg.seed,
            vary_padding=soak,
        )

    def batch(self, variant: Variant, batch_size: int, phase: str = "search") -> ProbeResult:
        """Train ``batch_size`` for ``phase`` (search, throughput or soak); one batch_probes.csv row."""
        self.count += 1
        number = self.count
        key = (variant.label, batch_size)
        repeat = self.at_size.get(key, 0)  # measured again to decide (autotune.tuning.noise)
        self.at_size[key] = repeat + 1
        log.debug("probe %d (%s, %s): batch %d ...", number, phase, variant.label, batch_size)
        result = run_probe(self.batch_request(variant, batch_size, phase), self.ctx.cfg.probe_timeout_s)
        log.info(
            "probe %d (%s, %s): batch %d%s %s",
            number,
            phase,
            variant.label,
            batch_size,
            f" (repeat {repeat})" if repeat else "",
            describe_probe(result),
        )
        self.ctx.writer.add("batch_probes.csv", {**variant.columns(), **probe_row(result, phase, repeat)})
        self.progress.probe_done(result)
        return result

    def estimate(self, variant: Variant) -> ProbeResult:
        """Count the training step's live tensor bytes on the meta device, as this run's device
        would run ``variant`` (seconds, no GPU memory): not counted, no row."""
        request = estimate_request(
            self.ctx.spec(variant), self.ctx.cfg.device, variant.precision, self.ctx.cfg.seed
        )
        return run_probe(request, self.ctx.cfg.probe_timeout_s)

    def measure(
        self, variant: Variant, batch_size: int, image_size: tuple[int, int], root: Path
    ) -> ProbeResult:
        """A probe outside the run's conditions (another camera size, a dataset of it at
        ``root``): not counted, no row."""
        request = self.batch_request(variant, batch_size, "search", image_size, root)
        return run_probe(request, self.ctx.cfg.probe_timeout_s)

    def trial(
        self, variant: Variant, batch_size: int, workers: int, prefetch: int | None, video_backend: str = ""
    ) -> ProbeResult:
        """One worker trial: the real DataLoader over the dataset into the real step."""
        cfg = self.ctx.cfg
        device_type = cfg.device_type
        abilities = cfg.trainer.abilities  # the DataLoader as this lerobot-train builds it
        request = ProbeRequest(
            kind="workers",
            model=self.ctx.spec(variant),
            device=cfg.device,
            precision=variant.precision,
            batch_size=batch_size,
            memory_limit_bytes=self.ctx.memory_limit,
            warmup_steps=WORKER_WARMUP_STEPS,
            measure_steps=WORKER_MEASURE_STEPS[device_type],
            drain_budget_s=WORKER_DRAIN_BUDGET_S[device_type],
            dataset_root=str(self.ctx.data.root),
            num_workers=workers,
            prefetch_factor=prefetch,
            seed=cfg.seed,
            persistent_workers=abilities.persistent_workers,
            multiprocessing_context=abilities.start_method,
            world_size=cfg.gpus,
            video_backend=video_backend or self.ctx.decoder.measured,
        )
        result = run_probe(request, cfg.probe_timeout_s)
        self.progress.probe_done(result)
        return result

    def record_trial(self, variant: Variant, t: TrialRecord) -> None:
        r = t.result
        log.info(
            "trial %d%s: num_workers=%d prefetch=%s -> %s",
            t.number,
            f" (repeat {t.repeat})" if t.repeat else "",
            t.num_workers,
            t.prefetch_factor,
            f"{r.samples_per_s:.2f} samples/s (data_s {r.data_s:.3f}, updt_s {r.updt_s:.3f})"
            if r.fits
            else f"{r.status}: {r.message}",
        )
        row = {
            **variant.columns(),
            **trial_row(t),
            "video_backend": t.video_backend or self.ctx.decoder.measured,
        }
        self.ctx.writer.add("worker_trials.csv", row)

    def decode(self, variant: Variant, root: Path) -> float:
        """One process's time to read one sample of the dataset at ``root`` (a decode probe) with
        the measured decoder; the other decoders' times, where they load, are kept in
        :attr:`decoded` (per dataset root)."""
        request = ProbeRequest(
            kind="decode",
            model=self.ctx.spec(variant),
            measure_steps=DECODE_SAMPLES,
            dataset_root=str(root),
            seed=self.ctx.cfg.seed,
            video_backend=self.ctx.decoder.measured,
        )
        result = run_probe(request, self.ctx.cfg.probe_timeout_s)
        if result.status != "ok":
            raise ProbeError(f"reading samples from {root} failed: {result.message}")
        self.decoded[str(root)] = dict(result.decode_s_by_backend)
        return result.decode_s_per_sample

    @staticmethod
    def trial_steps_for(device_type: str) -> int:
        """Warm-up and measured steps of one worker trial (draining aside)."""
        return WORKER_WARMUP_STEPS + WORKER_MEASURE_STEPS[device_type]
