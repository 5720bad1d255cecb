"""The machine fingerprint: what, when it changes, makes a tuned profile stale.

GPU facts come from NVML (``pynvml``, from nvidia-ml-py), which reads the driver without creating a
CUDA context, so the tuner process never allocates on the GPU.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from probes.memory import host_total_bytes

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


def _nvml_index(cuda_index: int) -> int | str:
    """The NVML index (or UUID) of CUDA device ``cuda_index``, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return cuda_index
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    if cuda_index >= len(entries):
        return cuda_index
    entry = entries[cuda_index]
    return int(entry) if entry.isdigit() else entry


def gpu_info(cuda_index: int = 0) -> GpuInfo | None:
    """NVML's view of CUDA device ``cuda_index``; None when there is no usable NVIDIA GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        target = _nvml_index(cuda_index)
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
            index=cuda_index,
            name=name.decode() if isinstance(name, bytes) else name,
            uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
            memory_total_bytes=int(memory.total),
            memory_free_bytes=int(memory.free),
            driver_version=driver.decode() if isinstance(driver, bytes) else driver,
            cuda_driver_version=f"{cuda // 1000}.{(cuda % 1000) // 10}",
            compute_capability=tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
        )
    except pynvml.NVMLError as exc:
        log.debug("NVML could not describe GPU %d: %s", cuda_index, exc)
        return None
    finally:
        pynvml.nvmlShutdown()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may run on (affinity), which is what DataLoader workers can use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def torch_cuda_version() -> str:
    """The CUDA version torch was built with ('' for a CPU build), without initialising CUDA."""
    import torch

    return torch.version.cuda or ""


def take(device: str) -> Fingerprint:
    """Fingerprint the machine as seen for ``device`` (``cpu`` or ``cuda:N``)."""
    gpu = gpu_info(int(device.split(":")[1])) if device.startswith("cuda") else None
    return Fingerprint(
        device=device,
        device_type="cuda" if gpu else "cpu",
        gpu_name=gpu.name if gpu else "",
        gpu_uuid=gpu.uuid if gpu else "",
        gpu_memory_bytes=gpu.memory_total_bytes if gpu else 0,
        driver_version=gpu.driver_version if gpu else "",
        cuda_driver_version=gpu.cuda_driver_version if gpu else "",
        torch_version=_version("torch"),
        torch_cuda_version=torch_cuda_version(),
        torchvision_version=_version("torchvision"),
        cpu_model=cpu_model(),
        cpu_cores=cpu_cores(),
        host_memory_bytes=host_total_bytes(),
        python_version=platform.python_version(),
    )
