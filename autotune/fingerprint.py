"""The machine fingerprint: what, when it changes, makes a tuned profile stale.

GPU facts come from NVML (``pynvml``, from nvidia-ml-py), which reads the driver without creating a
CUDA context, so the tuner process never allocates on the GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, TypeVar

from autotune import host
from autotune.config import cuda_index
from probes.protocol import Environment, GpuFacts

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    "cudnn_version",
    "torchcodec_version",
)


@dataclass
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int  # 0 where NVML cannot tell (memory info "Not Supported")
    memory_free_bytes: int
    driver_version: str
    cuda_driver_version: str  # the newest CUDA the driver runs ("13.0"); "" where unknown
    compute_capability: tuple[int, int]  # (0, 0) where unknown
    mig: bool = False  # a MIG slice of a GPU, not the whole GPU


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
    cudnn_version: str = ""
    torchcodec_version: str = ""  # in autotune's environment ("" when not installed)
    lerobot_version: str = ""  # of the lerobot-train the profile is made for

    def to_dict(self) -> dict:
        return asdict(self)

    def changes_from(self, other: dict) -> list[str]:
        """Names of the staleness-relevant fields that differ from an older fingerprint (a field
        an older autotune did not record counts as unchanged)."""
        return [k for k in STALE_WHEN_CHANGED if k in other and other[k] != getattr(self, k)]


def visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: None when unset (every GPU); otherwise its
    entries up to the first one CUDA rejects, so that ``""`` and ``"-1"`` mean no GPU at all.
    An entry is an index, a GPU UUID (``GPU-...``, or a unique start of one) or a MIG device
    (``MIG-<uuid>``, or ``MIG-GPU-<uuid>/<gpu instance>/<compute instance>`` before driver R470)."""
    if value is None:
        return None
    entries = []
    for raw in value.split(","):
        entry = raw.strip()
        if not (entry.isdigit() or entry.upper().startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Nvml:
    """NVML lookups, each degrading to a default where the device does not support the call."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml

    def get(self, call: Callable[[], T], default: T, what: str) -> T:
        try:
            return call()
        except self.nvml.NVMLError as exc:
            log.debug("NVML: %s: %s", what, exc)
            return default

    def gpus(self) -> list[Any]:
        """Every GPU, in PCI bus order: CUDA's order in the probe children (CUDA_DEVICE_ORDER)."""
        n = self.nvml
        handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
        buses = [
            self.get(lambda h=h: _text(n.nvmlDeviceGetPciInfo(h).busId).lower(), "", "bus") for h in handles
        ]
        if not all(buses):
            return handles  # NVML's own order, which is the bus order on every driver seen so far
        return [h for _, h in sorted(zip(buses, handles, strict=True), key=lambda pair: pair[0])]

    def uuid(self, handle: Any) -> str:
        return self.get(lambda: _text(self.nvml.nvmlDeviceGetUUID(handle)), "", "UUID")

    def migs(self, gpu: Any) -> list[Any]:
        """The MIG devices of ``gpu`` (none unless MIG mode is on)."""
        n = self.nvml
        mode = self.get(lambda: n.nvmlDeviceGetMigMode(gpu)[0], 0, "MIG mode")
        if mode != getattr(n, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        found = []
        for i in range(self.get(lambda: n.nvmlDeviceGetMaxMigDeviceCount(gpu), 0, "MIG count")):
            handle = self.get(lambda i=i: n.nvmlDeviceGetMigDeviceHandleByIndex(gpu, i), None, "MIG device")
            if handle is not None:
                found.append(handle)
        return found

    def by_uuid(self, handles: list[Any], prefix: str) -> Any | None:
        """The one handle whose UUID starts with ``prefix`` (CUDA accepts a unique start)."""
        matches = [h for h in handles if self.uuid(h).upper().startswith(prefix.upper())]
        return matches[0] if len(matches) == 1 else None

    def resolve(self, entry: str, gpus: list[Any]) -> tuple[Any, Any | None] | None:
        """The NVML handle of one ``CUDA_VISIBLE_DEVICES`` entry, and its parent GPU if it is a
        MIG device; None where CUDA would find nothing."""
        if entry.isdigit():
            if int(entry) >= len(gpus):
                return None
            gpu = gpus[int(entry)]
            migs = self.migs(gpu)
            # With MIG on and no MIG device named, a CUDA process sees the first MIG device.
            return (migs[0], gpu) if migs else (gpu, None)
        if entry.upper().startswith("MIG-GPU-"):
            gpu_uuid, _, instances = entry[len("MIG-") :].partition("/")
            gpu = self.by_uuid(gpus, gpu_uuid)
            ids = instances.split("/")
            if gpu is None or len(ids) != 2 or not all(i.isdigit() for i in ids):
                return None
            n = self.nvml
            for mig in self.migs(gpu):
                found = (
                    self.get(lambda m=mig: n.nvmlDeviceGetGpuInstanceId(m), -1, "GPU instance"),
                    self.get(lambda m=mig: n.nvmlDeviceGetComputeInstanceId(m), -1, "compute instance"),
                )
                if found == (int(ids[0]), int(ids[1])):
                    return mig, gpu
            return None
        if entry.upper().startswith("MIG-"):
            pairs = [(mig, gpu) for gpu in gpus for mig in self.migs(gpu)]
            found = [pair for pair in pairs if self.uuid(pair[0]).upper().startswith(entry.upper())]
            return found[0] if len(found) == 1 else None
        gpu = self.by_uuid(gpus, entry)
        return (gpu, None) if gpu is not None else None


def _describe(nvml: _Nvml, index: int, handle: Any, parent: Any | None) -> GpuInfo:
    """What NVML tells of one device; a call the device does not support leaves its field empty."""
    n = nvml.nvml
    memory = nvml.get(lambda: n.nvmlDeviceGetMemoryInfo(handle), None, "memory")
    capability = nvml.get(lambda: tuple(n.nvmlDeviceGetCudaComputeCapability(handle)), (0, 0), "capability")
    if capability == (0, 0) and parent is not None:
        capability = nvml.get(
            lambda: tuple(n.nvmlDeviceGetCudaComputeCapability(parent)), (0, 0), "capability"
        )
    cuda = nvml.get(n.nvmlSystemGetCudaDriverVersion, 0, "CUDA driver version")
    return GpuInfo(
        index=index,
        name=nvml.get(lambda: _text(n.nvmlDeviceGetName(handle)), "", "name"),
        uuid=nvml.uuid(handle),
        memory_total_bytes=int(memory.total) if memory is not None else 0,
        memory_free_bytes=int(memory.free) if memory is not None else 0,
        driver_version=nvml.get(lambda: _text(n.nvmlSystemGetDriverVersion()), "", "driver version"),
        cuda_driver_version=f"{cuda // 1000}.{(cuda % 1000) // 10}" if cuda else "",
        compute_capability=(int(capability[0]), int(capability[1])),
        mig=parent is not None,
    )


def gpu_info(gpu: int = 0) -> GpuInfo | None:
    """NVML's view of CUDA device ``gpu`` as a probe child numbers it (``CUDA_VISIBLE_DEVICES``
    honoured, PCI bus order); None when there is no such NVIDIA GPU."""
    entries = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if entries is not None and gpu >= len(entries):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    nvml = _Nvml(pynvml)
    try:
        gpus = nvml.gpus()
        if entries is None:
            found = nvml.resolve(str(gpu), gpus)
        else:
            resolved = []
            for entry in entries[: gpu + 1]:
                one = nvml.resolve(entry, gpus)
                if one is None:
                    break  # CUDA ignores this entry and every one after it
                resolved.append(one)
            found = resolved[gpu] if gpu < len(resolved) else None
        if found is None:
            return None
        return _describe(nvml, gpu, *found)
    except pynvml.NVMLError as exc:
        log.debug("NVML could not find GPU %d: %s", gpu, exc)
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def torch_device(environment: Environment, index: int | None) -> GpuFacts | None:
    """CUDA device ``index`` as torch saw it in the environment probe; None if it saw none."""
    if index is None:
        return None
    return next((d for d in environment.devices if d.index == index), None)


def take(device: str, environment: Environment, lerobot_version: str = "") -> Fingerprint:
    """Fingerprint the machine as seen for ``device`` (``cpu`` or ``cuda:N``); ``environment`` is
    what a probe child reported of torch (the tuner never imports it)."""
    index = cuda_index(device)
    gpu = gpu_info(index) if index is not None else None
    # Where NVML could not tell (a call "Not Supported"), torch's view in the child fills in.
    facts = torch_device(environment, index)
    return Fingerprint(
        device=device,
        device_type="cuda" if gpu else "cpu",
        gpu_name=(gpu.name or (facts.name if facts else "")) if gpu else "",
        gpu_uuid=gpu.uuid if gpu else "",
        gpu_memory_bytes=(gpu.memory_total_bytes or (facts.total_memory_bytes if facts else 0)) if gpu else 0,
        driver_version=gpu.driver_version if gpu else "",
        cuda_driver_version=gpu.cuda_driver_version if gpu else "",
        torch_version=environment.torch_version,
        torch_cuda_version=environment.torch_cuda_version,
        torchvision_version=environment.torchvision_version,
        cpu_model=host.cpu_model(),
        cpu_cores=host.cpu_cores(),
        host_memory_bytes=host.total_bytes(),
        python_version=platform.python_version(),
        cudnn_version=environment.cudnn_version,
        torchcodec_version=environment.torchcodec_version,
        lerobot_version=lerobot_version,
    )
