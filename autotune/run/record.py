"""``runs.csv``: every run that got past its checks leaves one row, ``ok`` or ``failed``, from here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autotune.errors import ProbeError, UserError
from autotune.outputs.profile import Profile
from autotune.run.context import RunContext
from autotune.run.prober import Prober


class RunRecord:
    """The run's ``runs.csv`` row, filled in as the run learns things."""

    def __init__(self, ctx: RunContext, prober: Prober) -> None:
        self.ctx = ctx
        self.prober = prober
        fpr = ctx.fingerprint
        self.row: dict[str, Any] = {
            "dataset": str(ctx.data.root),
            "gpu_uuid": fpr.gpu_uuid,
            "driver_version": fpr.driver_version,
            "cuda_driver_version": fpr.cuda_driver_version,
            "torch_version": fpr.torch_version,
            "cpu_model": fpr.cpu_model,
            "cpu_cores": fpr.cpu_cores,
            "lerobot_version": ctx.cfg.trainer.version,
        }

    def update(self, **fields: Any) -> None:
        """Facts known so far (the winning variant, its maximum), kept should the run fail later."""
        self.row.update(fields)

    def _write(self, **fields: Any) -> None:
        self.row.update(fields, probes=self.prober.count, wall_s=round(self.ctx.elapsed_s, 3))
        self.ctx.writer.add("runs.csv", self.row)

    def checked(self, fields: dict[str, Any], path: Path) -> None:
        """The row of a check of the up-to-date profile at ``path``."""
        self._write(**fields, profile=str(path))

    def failed(self, exc: BaseException) -> None:
        # On a full disk this row cannot be written either: the run's own message matters more.
        with contextlib.suppress(UserError):
            self._write(status="failed", message=str(exc) or type(exc).__name__)
        if self.ctx.cfg.storage is not None:  # the fleet sees the failure too, when it can
            from autotune import fleet

            with contextlib.suppress(UserError):
                fleet.record(self.ctx.cfg.storage, {**self.ctx.writer.key, **self.row}, None, [])

    def finish(self, profile: Profile, path: Path) -> None:
        default = profile.lerobot_default
        self._write(
            status="ok",
            precision=profile.precision,
            grad_checkpointing=profile.grad_checkpointing,
            max_batch_size=profile.max_batch_size,
            certified=profile.certified,
            batch_size=profile.batch_size,
            grad_accum_steps=profile.grad_accum_steps,
            lowered_by_soak=any(s["lowered"] for s in profile.soaks),
            num_workers=profile.num_workers,
            prefetch_factor=profile.prefetch_factor,
            data_s=profile.data_s,
            updt_s=profile.updt_s,
            samples_per_s=profile.samples_per_s,
            peak_reserved_bytes=profile.peak_reserved_bytes,
            default_samples_per_s=default.samples_per_s if default else None,
            speedup_vs_default=profile.speedup_vs_default,
            trials=profile.study["trials"],
            profile=str(path),
        )


@contextlib.contextmanager
def run_record(ctx: RunContext, prober: Prober) -> Iterator[RunRecord]:
    """Yield the run's record; a run that fails (or is interrupted) inside leaves a ``failed`` row."""
    record = RunRecord(ctx, prober)
    try:
        yield record
    except (UserError, ProbeError, KeyboardInterrupt) as exc:
        record.failed(exc)
        raise
