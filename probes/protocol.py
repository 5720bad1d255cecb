"""The typed boundary between the tuner and a probe child: one request in, one result out, as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "oom", "error", "timeout"]
STATUSES: tuple[str, ...] = ("ok", "oom", "error", "timeout")


@dataclass
class ModelSpec:
    """Which policy to build and at what shapes; ``overrides`` are extra ``Config`` fields."""

    policy: str
    cameras: int
    image_size: tuple[int, int]
    state_dim: int
    action_dim: int
    gradient_checkpointing: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeRequest:
    """What a probe child runs.

    ``kind="batch"`` trains on synthetic tensors of the real shapes at ``batch_size`` to measure
    memory and step time. ``kind="workers"`` drives a DataLoader over ``dataset_root`` with
    ``num_workers`` and ``prefetch_factor`` into the same training step and measures ``data_s``
    and ``updt_s`` per step. ``kind="decode"`` only reads samples from ``dataset_root`` in one
    process (what one DataLoader worker does) and reports ``decode_s_per_sample``.
    """

    kind: Literal["batch", "workers", "decode"]
    model: ModelSpec
    device: str
    precision: str
    batch_size: int
    memory_limit_bytes: int
    warmup_steps: int = 1
    measure_steps: int = 3
    dataset_root: str | None = None
    num_workers: int = 0
    prefetch_factor: int | None = None
    seed: int = 0
    # Vary the action padding from step to step as episode boundaries do in real data (soak).
    vary_padding: bool = False
    # Worker probes: after warm-up, keep stepping until the batches the workers prefetched during
    # warm-up (num_workers x prefetch_factor) are used up, so the last ``measure_steps`` show the
    # steady state; stop draining once this many seconds have passed.
    drain_budget_s: float = 60.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProbeRequest:
        raw = json.loads(text)
        model = raw.pop("model")
        model["image_size"] = tuple(model["image_size"])
        return cls(model=ModelSpec(**model), **raw)


@dataclass
class ProbeResult:
    """What a probe child measured. Memory in bytes, times in seconds."""

    status: Status
    batch_size: int
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    alloc_retries: int = 0
    step_time_s: float = 0.0
    samples_per_s: float = 0.0
    steps: int = 0
    data_s: float = 0.0
    updt_s: float = 0.0
    loader_rss_bytes: int = 0
    device_overhead_bytes: int = 0  # CUDA: memory in use outside the allocator at start (context)
    wall_s: float = 0.0
    drained: bool = True  # worker probes: steady state (buffer used up, or the loader keeps up)
    decode_s_per_sample: float = 0.0  # worker probes: one process reading one sample
    message: str = ""
    step_times_s: list[float] = field(default_factory=list)
    data_times_s: list[float] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProbeResult:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def write(self, path: Path) -> None:
        """Write atomically so the parent never reads half a result."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
