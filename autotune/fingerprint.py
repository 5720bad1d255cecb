"""The machine fingerprint: what, when it changes, makes a tuned profile stale.

GPU facts come from NVML (``pynvml``, from nvidia-ml-py), which reads the driver without creating a
CUDA context, so the tuner process never allocates on the GPU.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass

from autotune import host
from autotune.config import cuda_index
from probes.protocol import Environment

log = logging.getLogger(__name__)

# Fields whose change means the profile must be re-tuned (gpu_uuid: the same model of card in
# another slot behaves the same, so the name and memory are what matter, not the serial).
STALE_WHEN_CHANGED = (
    "device_type",
    "gpu_name",
    "gpu_memory_bytes",
    "driver_version",
    "cuda_driver_version",
    "torch_version",
    "torch_cuda_version",
    "torchvision_version",
    "cpu_model",
    "cpu_cores",
)


@dataclass
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    driver_version: str
    cuda_driver_version: str
    compute_capability: tuple[int, int]


@dataclass
class Fingerprint:
    device: str
    device_type: str
    gpu_name: str
    gpu_uuid: str
    gpu_memory_bytes: int
    driver_version: str
    cuda_driver_version: str
    torch_version: str
    torch_cuda_version: str
    torchvision_version: str
    cpu_model: str
    cpu_cores: int
    host_memory_bytes: int
    python_version: str

    def to_dict(self) -> dict:
        return asdict(self)

    def changes_from(self, other: dict) -> list[str]:
        """Names of the staleness-relevant fields that differ from an older fingerprint."""
        return [k for k in STALE_WHEN_CHANGED if other.get(k) != getattr(self, k)]


def _nvml_index(gpu: int) -> int | str:
    """The NVML index (or UUID) of CUDA device ``gpu``, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return gpu
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if gpu >= len(entries):
        return gpu
    entry = entries[gpu]
    return int(entry) if entry.isdigit() else entry


def gpu_info(gpu: int = 0) -> GpuInfo | None:
    """NVML's view of CUDA device ``gpu``; None when there is no usable NVIDIA GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        target = _nvml_index(gpu)
        if isinstance(target, str):
            handle = pynvml.nvmlDeviceGetHandleByUUID(target)
        else:
            if target >= pynvml.nvmlDeviceGetCount():
                return None
            handle = pynvml.nvmlDeviceGetHandleByIndex(target)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        name = pynvml.nvmlDeviceGetName(handle)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return GpuInfo(
            index=gpu,
            name=name.decode() if isinstance(name, bytes) else name,
            uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
            memory_total_bytes=int(memory.total),
            memory_free_bytes=int(memory.free),
            driver_version=driver.decode() if isinstance(driver, bytes) else driver,
            cuda_driver_version=f"{cuda // 1000}.{(cuda % 1000) // 10}",
            compute_capability=tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
        )
    except pynvml.NVMLError as exc:
        log.debug("NVML could not describe GPU %d: %s", gpu, exc)
        return None
    finally:
        pynvml.nvmlShutdown()


def take(device: str, environment: Environment) -> Fingerprint:
    """Fingerprint the machine as seen for ``device`` (``cpu`` or ``cuda:N``); ``environment`` is
    what a probe child reported of torch (the tuner never imports it)."""
    index = cuda_index(device)
    gpu = gpu_info(index) if index is not None else None
    return Fingerprint(
        device=device,
        device_type="cuda" if gpu else "cpu",
        gpu_name=gpu.name if gpu else "",
        gpu_uuid=gpu.uuid if gpu else "",
        gpu_memory_bytes=gpu.memory_total_bytes if gpu else 0,
        driver_version=gpu.driver_version if gpu else "",
        cuda_driver_version=gpu.cuda_driver_version if gpu else "",
        torch_version=environment.torch_version,
        torch_cuda_version=environment.torch_cuda_version,
        torchvision_version=environment.torchvision_version,
        cpu_model=host.cpu_model(),
        cpu_cores=host.cpu_cores(),
        host_memory_bytes=host.total_bytes(),
        python_version=platform.python_version(),
    )
