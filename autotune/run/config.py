"""The run's configuration, validated once at the edge, and the defaults it falls back on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.trainer.versions import NEWEST_RELEASE, Trainer
from autotune.tuning.search import DEFAULT_MAX_BATCH
from autotune.units import format_bytes
from probes.catalogue import POLICIES
from probes.protocol import PRECISIONS

DEFAULT_IMAGE_SIZE = (480, 640)  # an SO-101 camera
DEFAULT_CAMERAS = 2
DEFAULT_STATE_DIM = 6
DEFAULT_ACTION_DIM = 6
DEFAULT_HEADROOM = 0.10
DEFAULT_TRIALS = 8
DEFAULT_PROBE_TIMEOUT_S = 900.0
# The soak: steps the recommended batch trains for after warm-up, and how many sizes at or below
# the headroom batch to time, per device type; a CPU step is slow, so it gets fewer.
BACKENDS = ("rebuilt", "lerobot")
# The synthetic dataset's cameras: AV1 in yuv420p wants even sides, the writer at least 8
# (probes/synthetic/spec.py); over 4096 a side (a DCI 4K camera) the dataset alone would be tens of GB.
CAMERA_MIN_SIDE = 8
CAMERA_MAX_SIDE = 4096
# No policy trains in less: ResNet-18's weights alone take 45 MB in fp32, and the optimizer triples
# them. A smaller --memory-limit is a typo (1KiB for 1GiB), refused before anything is written.
MIN_MEMORY_LIMIT_BYTES = 64 * 1024**2
SOAK_STEPS = {"cuda": 20, "cpu": 5}
THROUGHPUT_POINTS = {"cuda": 3, "cpu": 2}


def check_rebuilt(policy: str) -> None:
    """``ValueError`` unless autotune rebuilds ``policy``, saying how to tune the others."""
    if policy not in POLICIES:
        raise ValueError(
            f"unknown policy {policy!r}: autotune rebuilds {', '.join(POLICIES)}; with LeRobot "
            "installed in this Python (pip install autotune into its environment), --backend "
            "lerobot tunes any policy it has"
        )


def check_camera_size(image_size: tuple[int, int]) -> None:
    """``ValueError`` naming ``--image-size`` unless the synthetic dataset can be written at it."""
    h, w = image_size
    given = f"--image-size {h}x{w}"
    if min(h, w) < CAMERA_MIN_SIDE:
        raise ValueError(f"{given}: each side must be at least {CAMERA_MIN_SIDE} pixels, e.g. 48x64")
    if max(h, w) > CAMERA_MAX_SIDE:
        raise ValueError(
            f"{given}: each side must be at most {CAMERA_MAX_SIDE} pixels (a 4K camera is 2160x3840)"
        )
    if h % 2 or w % 2:
        raise ValueError(
            f"{given}: the synthetic videos are yuv420p, which needs even sides, e.g. {h + h % 2}x{w + w % 2}"
        )


def cuda_index(device: str) -> int | None:
    """The GPU index of ``cuda`` / ``cuda:N``; None for ``cpu``. ``ValueError`` for anything else."""
    name = device.strip().lower()
    if name == "cpu":
        return None
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2] or "0"
        if index.isdigit():
            return int(index)
    raise ValueError(f"--device {device}: use cuda, cuda:N or cpu")


def device_type(device: str) -> str:
    """``cuda`` or ``cpu``."""
    return "cpu" if cuda_index(device) is None else "cuda"


@dataclass(frozen=True)
class Variant:
    """One way to train: the precision and whether gradient checkpointing is on. A variant
    measured ``beside`` the trainer's is reported, never printed as the command to run."""

    precision: str
    grad_checkpointing: bool
    beside: bool = False

    @property
    def label(self) -> str:
        return f"{self.precision}, checkpointing {'on' if self.grad_checkpointing else 'off'}"

    def columns(self) -> dict[str, Any]:
        """The CSV columns that say which variant a row measured."""
        return {"precision": self.precision, "grad_checkpointing": self.grad_checkpointing}


@dataclass
class RunConfig:
    """One ``autotune run``. Sizes in bytes, times in seconds."""

    policy: str
    device: str  # "cpu" or "cuda:N", resolved
    precision: str  # of the variant the printed command trains
    grad_checkpointing: bool = False
    trainer: Trainer = field(default_factory=lambda: Trainer(NEWEST_RELEASE, "assumed"))
    # Also tune the mission's variant (bf16, or fp16 without bf16, with gradient checkpointing)
    # beside the trainer's, at this precision; None: do not.
    mission_precision: str | None = None
    memory_limit_bytes: int | None = None  # None: the device's default budget
    headroom: float = DEFAULT_HEADROOM
    learned_headroom: float = (
        0.0  # from lerobot-train's out-of-memory (autotune train): headroom is at least this
    )
    dataset: str | None = None  # None: the synthetic dataset
    image_size: tuple[int, int] | None = None  # synthetic dataset only
    cameras: int | None = None  # synthetic dataset only
    state_dim: int = DEFAULT_STATE_DIM
    action_dim: int = DEFAULT_ACTION_DIM
    trials: int = DEFAULT_TRIALS
    results: Path = Path("results")
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    max_batch: int = DEFAULT_MAX_BATCH
    force: bool = False
    seed: int = 0
    throughput_points: int | None = None  # None: per device type
    soak_steps: int | None = None  # None: per device type; 0 skips the soak
    target_batch: int | None = None
    compare: bool = False
    compare_precisions: list[str] | None = None
    host_memory_limit_bytes: int | None = None  # None: 80% of the available host memory
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    wait: bool = False  # wait for another run holding the results folder's lock, instead of failing
    check: bool = True  # an up-to-date profile is checked (a few steps, one trial), not just shown
    estimate: bool = True  # each search starts from the meta-device estimate (autotune estimate)
    # Who builds and trains the policy in the probes: "rebuilt" (autotune's own ACT and SmolVLA)
    # or "lerobot" (the LeRobot importable here, any policy it has); resolved from --backend.
    backend: str = "rebuilt"
    # Ranks of DistributedDataParallel the batch is tuned for (one per GPU; gloo ranks on the CPU):
    # every batch probe and worker trial runs as one torchrun job of this many ranks.
    gpus: int = 1
    # A shared database (any SQLAlchemy URL Optuna accepts) for the worker studies and each run's
    # row and profile (autotune/fleet.py); None: SQLite under the results folder, nothing shared.
    storage: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "rebuilt":
            check_rebuilt(self.policy)
        cuda_index(self.device)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose bf16, fp16 or fp32")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError(f"--memory-limit must be positive, got {self.memory_limit_bytes}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes < MIN_MEMORY_LIMIT_BYTES:
            raise ValueError(
                f"--memory-limit {format_bytes(self.memory_limit_bytes)} is below "
                f"{format_bytes(MIN_MEMORY_LIMIT_BYTES)}, "
                "less than any policy's weights and optimizer take; pass a budget such as 4GiB"
            )
        if self.image_size is not None:
            check_camera_size(self.image_size)
        if not 0 <= self.headroom < 1:
            raise ValueError(f"--headroom must be in [0, 1), got {self.headroom}")
        for name in ("cameras", "state_dim", "action_dim", "trials", "max_batch", "gpus"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.host_memory_limit_bytes is not None and self.host_memory_limit_bytes <= 0:
            raise ValueError(f"--host-memory-limit must be positive, got {self.host_memory_limit_bytes}")
        if self.soak_steps is not None and self.soak_steps < 0:
            raise ValueError(f"--soak-steps must be 0 or more, got {self.soak_steps}")
        if self.target_batch is not None and self.target_batch < 1:
            raise ValueError(f"--target-batch must be at least 1, got {self.target_batch}")
        if self.mission_precision is not None and self.mission_precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.mission_precision!r}: choose bf16, fp16 or fp32")
        for precision in self.compare_precisions or []:
            if precision not in PRECISIONS:
                raise ValueError(f"--compare-precision {precision!r}: choose from bf16, fp16, fp32")
        if not 0 < self.probe_timeout_s < float("inf"):
            raise ValueError(
                f"--probe-timeout must be a positive number of seconds, got {self.probe_timeout_s}"
            )
        if self.dataset is not None and (self.image_size is not None or self.cameras is not None):
            raise ValueError(
                "--image-size and --cameras shape the synthetic dataset; with --dataset they "
                "come from the dataset itself"
            )

    @property
    def uses_estimate(self) -> bool:
        """The meta-device estimate counts autotune's rebuilt models only."""
        return self.estimate and self.backend == "rebuilt"

    @property
    def device_type(self) -> str:
        return device_type(self.device)

    @property
    def gpu_index(self) -> int | None:
        return cuda_index(self.device)

    def variants(self) -> list[Variant]:
        """The variants to tune: the one asked for, or with ``--compare`` checkpointing on and off
        for each compared precision."""
        if self.compare:
            precisions = self.compare_precisions or [self.precision]
            return [Variant(p, gc) for p in precisions for gc in (True, False)]
        variants = [Variant(self.precision, self.grad_checkpointing)]
        mission = Variant(self.mission_precision or "", True, beside=True)
        if self.mission_precision is not None and mission.label != variants[0].label:
            variants.append(mission)
        return variants

    def effective_soak_steps(self) -> int:
        return SOAK_STEPS[self.device_type] if self.soak_steps is None else self.soak_steps

    def effective_throughput_points(self) -> int:
        return self.throughput_points or THROUGHPUT_POINTS[self.device_type]
