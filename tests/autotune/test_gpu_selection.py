"""The right GPU, or a clear no: ``CUDA_VISIBLE_DEVICES`` as CUDA reads it mapped to the right NVML
device (indices in PCI bus order, full and abbreviated UUIDs, MIG devices), an NVML call a device
does not support degrading one field, and a torch that cannot run on the card stopping the run in
one line (exit 2) before any probe. NVML is faked; no GPU is needed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pynvml
import pytest

from autotune.errors import UserError
from autotune.machine.devices import resolve_device, resolve_precision
from autotune.machine.fingerprint import gpu_info
from autotune.run.probe_client import child_environment
from probes.protocol import Environment, GpuFacts

GiB = 1024**3
ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130


@dataclass
class FakeDevice:
    uuid: str
    name: str
    bus: str
    total: int
    capability: tuple[int, int] = (9, 0)
    free: int | None = None
    unsupported: set[str] = field(default_factory=set)  # NVML calls answered "Not Supported"
    migs: list[FakeDevice] = field(default_factory=list)
    instance: tuple[int, int] = (0, 0)  # a MIG device's GPU and compute instance ids


class FakeNvml:
    """NVML over ``devices`` (NVML's index order), for a driver that runs CUDA ``cuda``."""

    def __init__(self, devices: list[FakeDevice], cuda: int = 13000, driver: str = "580.95.05") -> None:
        self.devices, self.cuda, self.driver = devices, cuda, driver

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(code: int):
            raise pynvml.NVMLError(code)

        def ask(device: FakeDevice, call: str, value):
            return fail(pynvml.NVML_ERROR_NOT_SUPPORTED) if call in device.unsupported else value

        def by_uuid(uuid: str) -> FakeDevice:
            every = self.devices + [m for d in self.devices for m in d.migs]
            return next((d for d in every if d.uuid == uuid), None) or fail(pynvml.NVML_ERROR_NOT_FOUND)

        calls = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: len(self.devices),
            "nvmlDeviceGetHandleByIndex": lambda i: self.devices[i],
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetPciInfo": lambda d: type("Pci", (), {"busId": d.bus.encode()})(),
            "nvmlDeviceGetUUID": lambda d: d.uuid,
            "nvmlDeviceGetName": lambda d: ask(d, "name", d.name),
            "nvmlDeviceGetMemoryInfo": lambda d: ask(
                d, "memory", type("Memory", (), {"total": d.total, "free": d.total if d.free is None else d.free})()
            ),
            "nvmlDeviceGetCudaComputeCapability": lambda d: ask(d, "capability", d.capability),
            "nvmlSystemGetDriverVersion": lambda: self.driver,
            "nvmlSystemGetCudaDriverVersion": lambda: self.cuda,
            "nvmlDeviceGetMigMode": lambda d: [1 if d.migs else 0, 1 if d.migs else 0],
            "nvmlDeviceGetMaxMigDeviceCount": lambda d: 7 if d.migs else 0,
            "nvmlDeviceGetMigDeviceHandleByIndex": lambda d, i: d.migs[i]
            if i < len(d.migs)
            else fail(pynvml.NVML_ERROR_NOT_FOUND),
            "nvmlDeviceGetGpuInstanceId": lambda m: m.instance[0],
            "nvmlDeviceGetComputeInstanceId": lambda m: m.instance[1],
        }  # fmt: skip
        for name, call in calls.items():
            monkeypatch.setattr(pynvml, name, call)


A100_UUID = "GPU-a1b2c3d4-1111-2222-3333-444455556666"
L4_UUID = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"
MIG_UUID = "MIG-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"


def machine() -> list[FakeDevice]:
    """Two cards in NVML's order: an L4 on bus 0x81, an A100 with two MIG slices on bus 0x01."""
    name = "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    slices = [
        FakeDevice(uuid, name, "", 20 * GiB, unsupported={"capability"}, instance=(gi, 0))
        for uuid, gi in ((MIG_UUID, 1), ("MIG-ffffffff-0000-1111-2222-333344445555", 2))
    ]
    return [
        FakeDevice(L4_UUID, "NVIDIA L4", "00000000:81:00.0", 24 * GiB, (8, 9)),
        FakeDevice(A100_UUID, "NVIDIA A100-SXM4-40GB", "00000000:01:00.0", 40 * GiB, (8, 0), migs=slices),
    ]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml(machine())
    fake.install(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def environment(*capabilities: tuple[int, int], cuda: str = "13.0", archs: list[str] = ARCHS) -> Environment:
    devices = [GpuFacts(i, f"GPU {i}", c, 24 * GiB) for i, c in enumerate(capabilities)]
    return Environment("2.14.1", cuda, "91002", "0.29.1", bool(devices), archs, devices)


def test_an_empty_cuda_visible_devices_means_no_gpu(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_info(0) is None
    assert resolve_device(None, environment()) == "cpu"
    with pytest.raises(UserError, match="no NVIDIA GPU 0"):
        resolve_device("cuda", environment())


def test_cuda_indices_count_gpus_in_pci_bus_order_as_the_children_do(nvml: FakeNvml) -> None:
    # The A100 sits on the lower bus: it is cuda:0 (its first MIG slice, as CUDA runs there).
    assert gpu_info(0).name == "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    assert gpu_info(1).uuid == L4_UUID
    assert child_environment()["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_a_users_device_order_cannot_make_the_children_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    assert child_environment()["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize(
    ("visible", "uuid"),
    [
        ("1", L4_UUID),
        (L4_UUID, L4_UUID),
        ("GPU-9f8e7d6c", L4_UUID),  # abbreviated, as CUDA accepts
        ("gpu-9F8E", L4_UUID),
        (MIG_UUID, MIG_UUID),
        ("MIG-0a1b2c", MIG_UUID),
        (f"MIG-{A100_UUID}/2/0", "MIG-ffffffff-0000-1111-2222-333344445555"),
    ],
)
def test_visible_device_entries_map_to_the_right_nvml_device(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, visible: str, uuid: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{visible},0")
    assert gpu_info(0).uuid == uuid


def test_a_mig_slice_reports_its_own_memory(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_UUID)
    gpu = gpu_info(0)
    assert gpu.mig and gpu.memory_total_bytes == 20 * GiB
    assert gpu.compute_capability == (8, 0)  # the parent's, where the slice does not say


def test_entries_after_one_cuda_rejects_are_ignored(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.machine.fingerprint import visible_devices

    assert visible_devices("1,-1,0") == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,GPU-0000,0")
    assert gpu_info(0).uuid == L4_UUID
    assert gpu_info(1) is None


def test_an_nvml_call_the_device_does_not_support_degrades_that_field_only(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml.devices[0].unsupported = {"memory"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    gpu = gpu_info(0)
    assert gpu is not None
    assert (gpu.name, gpu.uuid, gpu.compute_capability) == ("NVIDIA L4", L4_UUID, (8, 9))
    assert gpu.memory_total_bytes == gpu.memory_free_bytes == 0
    assert gpu.cuda_driver_version == "13.0"


def test_a_driver_older_than_torchs_cuda_is_one_line_naming_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeNvml(machine(), cuda=12040, driver="550.54.15").install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    for requested in (None, "cuda:0"):
        with pytest.raises(UserError, match=r"driver 550\.54\.15 runs CUDA up to 12\.4.*install driver 580"):
            resolve_device(requested, environment((8, 9)))


def test_a_card_torch_holds_no_code_for_is_one_line_naming_the_card(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml.devices[0].name, nvml.devices[0].capability = "NVIDIA GeForce GTX 1080", (6, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    with pytest.raises(UserError, match=r"GTX 1080 \(compute capability 6\.1\).*sm_61"):
        resolve_device(None, environment((6, 1)))


def test_a_gpu_torch_does_not_see_is_one_line(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    with pytest.raises(UserError, match="NVIDIA L4.*torch 2.14.1 does not"):
        resolve_device("cuda:0", environment())  # torch saw no device


def test_a_usable_card_is_chosen(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    assert resolve_device(None, environment((8, 9))) == "cuda:0"
    assert resolve_device("cuda:0", environment((8, 9))) == "cuda:0"


@pytest.mark.parametrize(
    ("archs", "capability", "runs"),
    [
        (ARCHS, (8, 9), True),  # sm_86 code runs on 8.9
        (ARCHS, (7, 0), False),  # Volta: dropped
        (ARCHS, (6, 1), False),
        (["sm_90a"], (9, 0), True),
        (["sm_90a"], (9, 1), False),
        (["sm_80", "compute_80"], (12, 0), True),  # PTX, compiled by the driver
        (["sm_80"], (12, 0), False),
        ([], (3, 5), True),  # unknown list: nothing to say
    ],
)
def test_torchs_architecture_list_against_the_cards_capability(
    archs: list[str], capability: tuple[int, int], runs: bool
) -> None:
    from autotune.machine.devices import arch_runs_on

    assert arch_runs_on(archs, capability) is runs


def test_bf16_only_from_compute_capability_8(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", L4_UUID)
    assert resolve_precision(None, "cuda:0") == "bf16"
    nvml.devices[0].capability = (7, 5)  # a T4: torch's is_bf16_supported() would say yes (emulated)
    assert resolve_precision(None, "cuda:0") == "fp16"
    nvml.devices[0].unsupported = {"capability"}
    assert resolve_precision(None, "cuda:0", environment((9, 0))) == "bf16"  # torch's view fills in
