"""How fast the DataLoader feeds the step: a model from two measurements, and the input-bound diagnosis.

One worker reads a sample (decoding every camera, reading the action chunk) in
``decode_s_per_sample``; the training step consumes a batch in ``updt_s``. With ``W`` workers a batch
is ready every ``batch x decode_s / W`` seconds, so the step waits
``data_s ~ max(0, batch x decode_s / W - updt_s)``, and ``ceil(batch x decode_s / updt_s)`` workers
hide decoding entirely, cores permitting. The study tries that number first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

INPUT_BOUND_FRACTION = 0.10  # the step waits on data for more than this share of its time


def data_fraction(data_s: float, updt_s: float) -> float | None:
    """The share of a step spent waiting on data; None when nothing was timed."""
    total = data_s + updt_s
    return data_s / total if total > 0 else None


def is_input_bound(data_s: float, updt_s: float) -> bool:
    fraction = data_fraction(data_s, updt_s)
    return fraction is not None and fraction > INPUT_BOUND_FRACTION


@dataclass
class FeedModel:
    batch_size: int
    decode_s_per_sample: float
    updt_s: float
    cores: int

    def produce_s_per_batch(self, workers: int) -> float:
        """Seconds between batches with ``workers`` workers (0: the main process reads inline)."""
        return self.batch_size * self.decode_s_per_sample / max(1, workers)

    def predicted_data_s(self, workers: int) -> float:
        if workers == 0:
            return self.batch_size * self.decode_s_per_sample
        return max(0.0, self.produce_s_per_batch(workers) - self.updt_s)

    def predicted_samples_per_s(self, workers: int) -> float:
        return self.batch_size / (self.predicted_data_s(workers) + self.updt_s)

    @property
    def workers_needed(self) -> int:
        """Workers that produce batches at least as fast as the step consumes them."""
        if self.updt_s <= 0:
            return self.cores
        return max(1, math.ceil(self.batch_size * self.decode_s_per_sample / self.updt_s))

    def first_guess(self, max_workers: int) -> int:
        return min(self.workers_needed, max(1, max_workers))


@dataclass
class Remedy:
    """One thing that would help an input-bound run, with what autotune measured or estimated."""

    what: str
    measured: bool
    data_s: float | None = None
    updt_s: float | None = None
    samples_per_s: float | None = None
    detail: str = ""


@dataclass
class InputBound:
    """The tuned setting still leaves the step waiting on data for ``data_fraction`` of its time."""

    data_fraction: float
    data_s: float
    updt_s: float
    samples_per_s: float
    samples_per_s_if_fed: float  # if the step never waited
    workers_needed: int
    cores: int
    remedies: list[Remedy] = field(default_factory=list)
    decoder: str = ""  # the video decoder the workers read with (torchcodec or pyav)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        decoding = f", decoding video with {self.decoder}" if self.decoder else ""
        return (
            f"input-bound: the step waits on data {self.data_fraction:.0%} of the time "
            f"(data_s {self.data_s:.3f} s against updt_s {self.updt_s:.3f} s{decoding}); fed fully it would "
            f"train {self.samples_per_s_if_fed:.1f} samples/s instead of {self.samples_per_s:.1f}"
        )


def diagnose(
    *,
    batch_size: int,
    data_s: float,
    updt_s: float,
    model: FeedModel,
    cameras: int,
    remedies: list[Remedy],
    decoder: str = "",
) -> InputBound | None:
    """An :class:`InputBound` if the step waits on data over 10% of its time, else None.

    ``remedies`` are the measured alternatives (smaller images, denser keyframes); estimates for
    more cores and fewer cameras are added here from the loader model.
    """
    if not is_input_bound(data_s, updt_s):
        return None
    total = data_s + updt_s
    bound = InputBound(
        data_fraction=data_s / total,
        data_s=data_s,
        updt_s=updt_s,
        samples_per_s=batch_size / total,
        samples_per_s_if_fed=batch_size / updt_s if updt_s > 0 else 0.0,
        workers_needed=model.workers_needed,
        cores=model.cores,
        decoder=decoder,
    )
    all_remedies = list(remedies)
    if model.workers_needed > model.cores:
        all_remedies.append(
            Remedy(
                what=f"more cores: {model.workers_needed} workers would hide decoding, this machine has {model.cores}",
                measured=False,
                data_s=0.0,
                updt_s=updt_s,
                samples_per_s=batch_size / updt_s if updt_s > 0 else None,
                detail=f"one worker reads a sample in {model.decode_s_per_sample * 1000:.1f} ms (measured)",
            )
        )
    if cameras > 1:
        fewer = FeedModel(
            batch_size, model.decode_s_per_sample * (cameras - 1) / cameras, updt_s, model.cores
        )
        workers = min(model.cores, fewer.workers_needed)
        all_remedies.append(
            Remedy(
                what=f"{cameras - 1} camera(s) instead of {cameras}",
                measured=False,
                data_s=fewer.predicted_data_s(workers),
                updt_s=updt_s,
                samples_per_s=fewer.predicted_samples_per_s(workers),
                detail="decoding scales with the cameras read; the step would also shrink",
            )
        )
    bound.remedies = all_remedies
    return bound
