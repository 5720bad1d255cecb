"""The run's configuration, validated once at the edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probes.policy import POLICIES

PRECISIONS = ("bf16", "fp16", "fp32")
DEFAULT_IMAGE_SIZE = (480, 640)  # an SO-101 camera
DEFAULT_CAMERAS = 2
DEFAULT_STATE_DIM = 6
DEFAULT_ACTION_DIM = 6
DEFAULT_HEADROOM = 0.10
DEFAULT_TRIALS = 8
DEFAULT_PROBE_TIMEOUT_S = 900.0


@dataclass
class RunConfig:
    """One ``autotune run``. Sizes in bytes, times in seconds."""

    policy: str
    device: str  # "cpu" or "cuda:N", resolved
    precision: str
    grad_checkpointing: bool = True
    memory_limit_bytes: int | None = None  # None: the device's default budget
    headroom: float = DEFAULT_HEADROOM
    dataset: str | None = None  # None: the synthetic dataset
    image_size: tuple[int, int] | None = None  # synthetic dataset only
    cameras: int | None = None  # synthetic dataset only
    state_dim: int = DEFAULT_STATE_DIM
    action_dim: int = DEFAULT_ACTION_DIM
    trials: int = DEFAULT_TRIALS
    results: Path = Path("results")
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    max_batch: int = 8192
    force: bool = False
    seed: int = 0
    throughput_points: int | None = None  # None: per device type
    soak_steps: int | None = None  # None: per device type; 0 skips the soak
    target_batch: int | None = None
    compare: bool = False
    compare_precisions: list[str] | None = None
    host_memory_limit_bytes: int | None = None  # None: 80% of the available host memory
    policy_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose bf16, fp16 or fp32")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError(f"--memory-limit must be positive, got {self.memory_limit_bytes}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"--headroom must be in [0, 1), got {self.headroom}")
        for name in ("cameras", "state_dim", "action_dim", "trials", "max_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.host_memory_limit_bytes is not None and self.host_memory_limit_bytes <= 0:
            raise ValueError(f"--host-memory-limit must be positive, got {self.host_memory_limit_bytes}")
        if self.soak_steps is not None and self.soak_steps < 0:
            raise ValueError(f"--soak-steps must be 0 or more, got {self.soak_steps}")
        if self.target_batch is not None and self.target_batch < 1:
            raise ValueError(f"--target-batch must be at least 1, got {self.target_batch}")
        for precision in self.compare_precisions or []:
            if precision not in PRECISIONS:
                raise ValueError(f"--compare-precision {precision!r}: choose from bf16, fp16, fp32")
        if self.probe_timeout_s <= 0:
            raise ValueError(f"--probe-timeout must be positive, got {self.probe_timeout_s}")
        if self.dataset is not None and (self.image_size is not None or self.cameras is not None):
            raise ValueError(
                "--image-size and --cameras shape the synthetic dataset; with --dataset they "
                "come from the dataset itself"
            )
