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

from autotune.machine import host
from autotune.run.config import cuda_index
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
    "cuda_alloc_conf",
)
# The caching allocator's settings as the environment gives them to torch (expandable_segments
# changes fragmentation, so the peaks): PyTorch reads PYTORCH_ALLOC_CONF (2.9 and newer) and the
# older PYTORCH_CUDA_ALLOC_CONF, in an order that has changed between releases; both are kept.
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def allocator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The allocator settings set in ``env`` (this process's environment): what the probe children
    inherit and what the printed command hands lerobot-train."""
    env = dict(os.environ) if env is None else env
    return {name: env[name] for name in ALLOC_CONF_VARIABLES if env.get(name)}


def allocator_conf(env: dict[str, str] | None = None) -> str:
    """Those settings in one string (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``), "" when
    none is set: the fingerprint's and the conditions' ``cuda_alloc_conf``."""
    return " ".join(f"{name}={value}" for name, value in allocator_env(env).items())


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
    cuda_alloc_conf: str = ""  # the caching allocator's settings the probes ran with (allocator_conf)

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


class NvmlUnavailable(Exception):
    """NVML is not installed, or it failed: it cannot say which GPUs there are."""


def _nvml_gpu(gpu: int, entries: list[str] | None) -> GpuInfo | None:
    """NVML's view of CUDA device ``gpu``; None when NVML finds no such device;
    :class:`NvmlUnavailable` when NVML cannot tell."""
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML did not start: {exc}") from None
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
        raise NvmlUnavailable(f"NVML failed: {exc}") from None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


_warned: set[str] = set()  # fallbacks said once per process


def _from_torch(facts: GpuFacts, why: str) -> GpuInfo:
    """CUDA device ``facts.index`` as torch saw it in the environment probe, for when NVML cannot
    tell: no UUID, free memory, driver or CUDA driver version (the fingerprint then cannot see a
    driver change), said once in a warning."""
    message = (
        f"{why}: using torch's view of CUDA device {facts.index} ({facts.name}) instead; the driver's "
        "version and the free memory are unknown, so install or repair nvidia-ml-py for a fingerprint "
        "that sees driver changes"
    )
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
    return GpuInfo(
        index=facts.index,
        name=facts.name,
        uuid="",
        memory_total_bytes=facts.total_memory_bytes,
        memory_free_bytes=0,
        driver_version="",
        cuda_driver_version="",
        compute_capability=facts.capability,
        mig=" MIG " in f" {facts.name} ",
    )


def gpu_info(gpu: int = 0, environment: Environment | None = None) -> GpuInfo | None:
    """NVML's view of CUDA device ``gpu`` as a probe child numbers it (``CUDA_VISIBLE_DEVICES``
    honoured, PCI bus order); None when there is no such NVIDIA GPU. Where NVML is missing or
    fails, torch's view of it in ``environment`` (the environment probe's), with a warning: a GPU
    that torch sees is never taken for none."""
    entries = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if entries is not None and gpu >= len(entries):
        return None
    try:
        return _nvml_gpu(gpu, entries)
    except NvmlUnavailable as exc:
        facts = torch_device(environment, gpu) if environment is not None else None
        if facts is None:
            log.debug("GPU %d: %s, and torch sees no such device", gpu, exc)
            return None
        return _from_torch(facts, str(exc))


def torch_device(environment: Environment, index: int | None) -> GpuFacts | None:
    """CUDA device ``index`` as torch saw it in the environment probe; None if it saw none."""
    if index is None:
        return None
    return next((d for d in environment.devices if d.index == index), None)


def take(device: str, environment: Environment, lerobot_version: str = "") -> Fingerprint:
    """Fingerprint the machine as seen for ``device`` (``cpu`` or ``cuda:N``); ``environment`` is
    what a probe child reported of torch (the tuner never imports it)."""
    index = cuda_index(device)
    gpu = gpu_info(index, environment) if index is not None else None
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
        cuda_alloc_conf=allocator_conf() if gpu else "",  # it shapes CUDA memory only
    )
