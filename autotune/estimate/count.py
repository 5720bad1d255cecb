"""The estimate probe's count: a step's peak live tensor bytes against batch size, on the meta device.

See :mod:`autotune.estimate` for what the count is and the terms added on top of it."""

from __future__ import annotations

from dataclasses import dataclass

from probes.protocol import ModelSpec, ProbeRequest, ProbeResult

MiB = 1024**2
GiB = 1024**3
CARD_SIZES_GIB = (8, 12, 16, 24, 32, 48, 80)
# Sizes counted: on the meta device a size costs no memory and no compute, one step's dispatch only.
# The peak of a step is the largest of its phases' peaks (forward's end, a backward block, the
# optimizer), each linear in the batch with its own slope, so memory steepens where a steeper phase
# takes over (the cut-down ACT on the CPU: 2.58 MiB per sample up to batch 104, 3.0 from 112,
# counted and measured alike). Between sizes a factor of 2 apart the chord overstates the peak by
# at most a quarter of the slope's change over the segment (1.5% of the peak there).
ESTIMATE_BATCH_SIZES = tuple(2**k for k in range(13))  # 1 to 4096
ESTIMATE_TIMEOUT_S = 600.0


@dataclass
class Estimate:
    """One variant's count: the peak live tensor bytes of a step against batch size."""

    policy: str
    device_type: str  # the device it was counted for: cuda or cpu
    precision: str
    grad_checkpointing: bool
    points: list[tuple[int, int]]  # (batch size, peak live tensor bytes)
    segment_rounding_bytes: int = 0  # large blocks' segment rounding at the largest size's peak
    weights_bytes: int = 0
    optimizer_state_bytes: int = 0
    wall_s: float = 0.0
    total_params: int = 0

    @property
    def per_sample_bytes(self) -> float:
        (b1, p1), (b2, p2) = self.points[-2:]
        return (p2 - p1) / (b2 - b1)

    @property
    def fixed_bytes(self) -> float:
        b2, p2 = self.points[-1]
        return p2 - self.per_sample_bytes * b2

    def live_at(self, batch: float) -> float:
        """Peak live bytes at ``batch``: between counted sizes linear, beyond them the line."""
        for (b1, p1), (b2, p2) in zip(self.points, self.points[1:], strict=False):
            if batch <= b2:
                return p1 + (p2 - p1) * (batch - b1) / (b2 - b1) if batch >= b1 else p1
        return self.fixed_bytes + self.per_sample_bytes * batch


def estimate_request(spec: ModelSpec, device: str, precision: str, seed: int = 0) -> ProbeRequest:
    return ProbeRequest(
        kind="estimate",
        model=spec,
        device=device,
        precision=precision,
        seed=seed,
        estimate_batch_sizes=list(ESTIMATE_BATCH_SIZES),
    )


def from_result(result: ProbeResult, spec: ModelSpec) -> Estimate:
    """The estimate a probe child reported (``ValueError`` when it reported none)."""
    data = result.estimate
    if result.status != "ok" or not data or len(data.get("points", [])) < 2:
        raise ValueError(result.message or f"the estimate probe ended with {result.status}")
    waste = data.get("segment_rounding") or [[0, 0]]
    return Estimate(
        policy=spec.policy,
        device_type=data["target"],
        precision=data["precision"],
        grad_checkpointing=spec.gradient_checkpointing,
        points=[(int(b), int(p)) for b, p in data["points"]],
        segment_rounding_bytes=int(waste[-1][1]),
        weights_bytes=int(data.get("weights_bytes", 0)),
        optimizer_state_bytes=int(data.get("optimizer_state_bytes", 0)),
        wall_s=float(data.get("wall_s", 0.0)),
        total_params=result.total_params,
    )
