"""The typed boundary between the tuner and a probe child: one request in, one result out, as JSON.

Every kind of work that needs torch, a model, a dataset or the GPU runs in a probe child; the tuner
sends a :class:`ProbeRequest` and reads a :class:`ProbeResult`. This module is torch-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "oom", "error", "timeout"]
STATUSES: tuple[str, ...] = ("ok", "oom", "error", "timeout")
PRECISIONS: tuple[str, ...] = ("bf16", "fp16", "fp32")
Kind = Literal["batch", "workers", "decode", "dataset", "environment", "describe", "ppo", "rrd", "estimate"]
# What a probe child can say of an error from the library's words alone; the tuner, which knows the
# sizes that fitted and ran out of memory, decides what it means (autotune/tuning/search.py).
AMBIGUOUS_OOM = "ambiguous_oom"  # a library status that next to the limit means out of memory
KERNEL_LIMIT = "kernel_limit"  # a kernel's size limit (launch configuration, 32-bit indexing)
ERROR_KINDS: tuple[str, ...] = ("", AMBIGUOUS_OOM, KERNEL_LIMIT)

# Where CUDA's libraries say, as a RuntimeError's text (probes/device_errors.py reads the
# exception; autotune train reads the trainer's traceback), that the device ran out of memory. Only an
# error of a known type or one of these texts counts: any other error stops the run.
OOM_TEXTS = (
    # The CUDA runtime's cudaErrorMemoryAllocation ("out of memory"), raised by PyTorch's
    # C10_CUDA_CHECK as torch.AcceleratorError (a RuntimeError before torch 2.8): a kernel module
    # that loads lazily, a stream, an event or a library's own cudaMalloc found no memory.
    "CUDA error: out of memory",
    # cuBLAS could not allocate its scratch (cublasStatus_t, via PyTorch's TORCH_CUDABLAS_CHECK).
    "CUBLAS_STATUS_ALLOC_FAILED",
    # cuDNN 9's statuses for a failed device or host allocation (cuDNN 8's CUDNN_STATUS_ALLOC_FAILED
    # no longer exists), via PyTorch's AT_CUDNN_CHECK ("cuDNN error: ...").
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    # PyTorch's cuDNN convolution (aten/src/ATen/native/cudnn/Conv_v8.cpp) once every candidate
    # plan failed, which near the limit means every plan's workspace failed to allocate: FIND with
    # cudnn.benchmark (what LeRobot turns on), GET without.
    "FIND was unable to find an engine",
    "GET was unable to find an engine",
)
# cuBLAS handle creation with no memory left (cublasCreate / cublasLtCreate, on the first matrix
# product of a stream): PyTorch's TORCH_CUDABLAS_CHECK says "CUBLAS_STATUS_NOT_INITIALIZED when
# calling `cublasCreate(handle)`".
CUBLAS_CREATE_FAILED = re.compile(r"CUBLAS_STATUS_NOT_INITIALIZED when calling `?cublas(Lt)?Create\(")


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
    # "rebuilt": autotune's own model (probes/policies); "lerobot": the LeRobot importable in the
    # probe child builds and trains it (probes/lerobot_backend.py), any policy it has.
    backend: str = "rebuilt"


@dataclass
class SyntheticRequest:
    """A synthetic LeRobot dataset to write (once) at ``root`` before it is read."""

    root: str
    cameras: int
    image_size: tuple[int, int]
    fps: int
    episodes: int
    episode_length: int
    state_dim: int
    action_dim: int
    codec: str = "libsvtav1"
    gop: int = 2
    seed: int = 0


@dataclass
class DatasetInfo:
    """What a dataset fixes about the model and the loader, as the child read it."""

    root: str
    cameras: int
    camera_shapes: dict[str, list[int]]  # camera key -> [H, W, C]
    state_dim: int
    action_dim: int
    fps: int
    codec: str | None  # of the first video camera; None when every camera is stored as images
    version: str  # "v3.0" or "v2.1"
    # Per video backend that loads but cannot decode samples of this dataset as LeRobot asks for
    # them, the first error (a decoder that decodes every sample checked is absent).
    undecodable: dict[str, str] = field(default_factory=dict)


@dataclass
class GpuFacts:
    """One CUDA device as torch sees it in the child."""

    index: int
    name: str
    capability: tuple[int, int]
    total_memory_bytes: int


@dataclass
class Environment:
    """The software the probes run with: torch, its CUDA build, and the devices it sees."""

    torch_version: str
    torch_cuda_version: str  # "" for a CPU-only build
    cudnn_version: str
    torchvision_version: str
    cuda_available: bool
    arch_list: list[str]  # compute architectures torch was built for (sm_80, ...)
    devices: list[GpuFacts] = field(default_factory=list)
    torchcodec_version: str = ""  # "" when torchcodec is not installed
    # Whether it loads (FFmpeg's shared libraries): "ok", "error" (installed, cannot load), "missing".
    torchcodec_state: str = "missing"
    torchcodec_error: str = ""  # why it does not load


@dataclass
class ProbeRequest:
    """What a probe child runs.

    ``kind="batch"`` trains on synthetic tensors of the real shapes at ``batch_size`` to measure
    memory and step time. ``kind="workers"`` drives a DataLoader over ``dataset_root`` with
    ``num_workers`` and ``prefetch_factor`` into the same training step and measures ``data_s``
    and ``updt_s`` per step. ``kind="decode"`` only reads samples from ``dataset_root`` in one
    process (what one DataLoader worker does) and reports ``decode_s_per_sample``.
    ``kind="dataset"`` writes ``synthetic`` (if given and not yet there) and reads the metadata of
    the dataset at ``dataset_root``. ``kind="environment"`` reports torch and its devices;
    ``kind="describe"`` the model's shapes and parameter counts (on the meta device).
    """

    kind: Kind
    model: ModelSpec | None = None
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 0
    memory_limit_bytes: int = 0
    warmup_steps: int = 1  # at least: a probe warms up until the optimizer holds its state
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
    # Worker probes: the DataLoader as the trainer builds it (lerobot-train 0.6.1: persistent
    # workers started with spawn; 0.4-0.5: neither, and prefetch fixed at 2).
    persistent_workers: bool = True
    multiprocessing_context: str | None = "spawn"  # None: the platform's default start method
    synthetic: SyntheticRequest | None = None
    # kind="ppo" / "rrd" (autotune rl): the networks and batch shape, read by probes/rl/spec.py; the
    # probed size is batch_size (PPO: the minibatch; RRD: BATCH_SIZE or the subsequence count).
    rl: dict[str, Any] | None = None
    # Ranks of one DDP job (autotune run --gpus N): batch_size is per rank; 1 is a single process.
    world_size: int = 1
    # Worker and decode probes: the decoder of the dataset's videos, as lerobot-train's
    # --dataset.video_backend ("torchcodec" or "pyav"); kind="decode" times every one that loads.
    video_backend: str = "pyav"
    # kind="estimate": the batch sizes to count the training step's live tensor bytes at, on the meta
    # device, as ``device`` (its type) would run it at ``precision`` (probes/estimate.py).
    estimate_batch_sizes: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProbeRequest:
        raw = json.loads(text)
        if raw.get("model") is not None:
            raw["model"] = ModelSpec(**{**raw["model"], "image_size": tuple(raw["model"]["image_size"])})
        if raw.get("synthetic") is not None:
            raw["synthetic"] = SyntheticRequest(
                **{**raw["synthetic"], "image_size": tuple(raw["synthetic"]["image_size"])}
            )
        return cls(**raw)


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
    # CUDA: memory this process holds outside the allocator after warm-up (context, cuBLAS, cuDNN,
    # kernels, NCCL; other processes' too where NVML cannot tell them apart)
    device_overhead_bytes: int = 0
    wall_s: float = 0.0
    drained: bool = True  # worker probes: steady state (buffer used up, or the loader keeps up)
    decode_s_per_sample: float = 0.0  # worker probes: one process reading one sample
    # kind="decode": one process's seconds per sample with each video backend that loads in the
    # child, and why each other one does not load.
    decode_s_by_backend: dict[str, float] = field(default_factory=dict)
    backend_errors: dict[str, str] = field(default_factory=dict)
    total_params: int = 0  # the model the probe trained
    trainable_params: int = 0
    message: str = ""
    invalid_input: bool = False  # the request's input is at fault (a broken dataset), not the probe
    # Batch probes: the allocator cap the measured steps ran under (CUDA: the budget less what this
    # process holds outside the allocator, or less where the device had less; CPU: the budget).
    memory_cap_bytes: int = 0
    # Which bound set that cap on CUDA: "limit" (the budget, as on a card of that size) or "device"
    # (what the device had free beside what runs outside the allocator); "" where not measured.
    memory_cap_bound: str = ""
    # status "error": what the library's words say it is (ERROR_KINDS; "" for any other error).
    error_kind: str = ""
    warmup_peak_reserved_bytes: int = 0  # the warm-up's own peak (cuDNN's algorithm search included)
    warmup_steps: int = 0  # taken: at least the request's, until the optimizer held its state
    # kind="estimate": ``points`` ([batch_size, peak live tensor bytes]), ``segment_rounding``, the
    # weights' and the optimizer state's bytes, the target device type and precision (probes/estimate.py).
    estimate: dict[str, Any] | None = None
    step_times_s: list[float] = field(default_factory=list)
    data_times_s: list[float] = field(default_factory=list)
    # A DDP job: its ranks, and each rank's peak (the job's peak above is the largest).
    world_size: int = 1
    rank_peaks_bytes: list[int] = field(default_factory=list)
    dataset: DatasetInfo | None = None
    environment: Environment | None = None
    description: dict[str, Any] | None = None

    @property
    def fits(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProbeResult:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        if raw.get("dataset") is not None:
            raw["dataset"] = DatasetInfo(**raw["dataset"])
        if raw.get("environment") is not None:
            env = raw["environment"]
            devices = [
                GpuFacts(**{**d, "capability": tuple(d["capability"])}) for d in env.pop("devices", [])
            ]
            raw["environment"] = Environment(**env, devices=devices)
        return cls(**raw)

    def write(self, path: Path) -> None:
        """Write atomically so the parent never reads half a result."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
