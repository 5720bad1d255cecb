"""Which device and precision a run uses: what NVML sees, and what torch (asked in a child) can use.

Before a run chooses CUDA it checks that torch can run on the card at all: the driver must run the
CUDA that torch was built with, and torch must hold code for the card's compute capability. A
mismatch is one line naming the driver or card and what to install (exit 2), not a probe that dies.
"""

from __future__ import annotations

import logging
import re

from autotune.errors import ProbeError, UserError
from autotune.machine.fingerprint import GpuInfo, gpu_info, torch_device
from autotune.run.config import cuda_index
from autotune.run.probe_client import run_probe
from probes.protocol import Environment, ProbeRequest

log = logging.getLogger(__name__)

ENVIRONMENT_TIMEOUT_S = 300.0
BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bf16 natively (torch's is_bf16_supported
# also says yes where bf16 is only emulated, slowly)
# The oldest driver that runs each CUDA major version (CUDA's release notes, Linux).
MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580.65"}


def probe_environment(timeout_s: float = ENVIRONMENT_TIMEOUT_S) -> Environment:
    """torch's version, its CUDA build and the devices it sees, read in a probe child."""
    result = run_probe(ProbeRequest(kind="environment"), timeout_s)
    if not result.fits or result.environment is None:
        raise ProbeError(f"could not start torch in a probe child: {result.message or result.status}")
    return result.environment


def _version(text: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def _arch(name: str) -> tuple[str, int, int, str] | None:
    """``sm_86`` -> ("sm", 8, 6, ""); ``sm_90a`` -> ("sm", 9, 0, "a"); ``compute_120`` -> ("compute", 12, 0, "")."""
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([a-z]?)", name.strip())
    return (match[1], int(match[2]), int(match[3]), match[4]) if match else None


def arch_runs_on(arch_list: list[str], capability: tuple[int, int]) -> bool:
    """Whether code built for ``arch_list`` runs on a card of ``capability``: machine code for the
    same major version and a minor version at most the card's (``sm_90a``: exactly 9.0), or PTX
    (``compute_XY``) for at most the card's capability, which the driver compiles. True when the
    list is unknown."""
    archs = [a for a in map(_arch, arch_list) if a is not None]
    if not archs:
        return True
    major, minor = capability
    for kind, a_major, a_minor, suffix in archs:
        if kind == "sm" and a_major == major and (a_minor == minor if suffix == "a" else a_minor <= minor):
            return True
        if kind == "compute" and not suffix and (a_major, a_minor) <= capability:
            return True
    return False


def check_torch_runs(gpu: GpuInfo, environment: Environment, index: int) -> None:
    """One line (UserError, exit 2) when this torch cannot run on ``gpu``: a driver too old for
    torch's CUDA, a card torch holds no code for, or a GPU torch does not see."""
    card = gpu.name or f"GPU {index}"
    driver, build = _version(gpu.cuda_driver_version), _version(environment.torch_cuda_version)
    if driver is not None and build is not None and driver[0] < build[0]:
        needed = MIN_DRIVER.get(build[0])
        raise UserError(
            f"the NVIDIA driver {gpu.driver_version or '(version unknown)'} runs CUDA up to "
            f"{gpu.cuda_driver_version}, but torch {environment.torch_version} is built for CUDA "
            f"{environment.torch_cuda_version}: install driver {needed or 'a newer driver'}"
            f"{' or newer' if needed else ''}, or a torch built for CUDA {driver[0]}.x "
            "(set AUTOTUNE_TORCH_INDEX, see the README), or run with --device cpu"
        )
    if driver is not None and build is not None and driver < build:
        log.warning(
            "the NVIDIA driver %s runs CUDA up to %s, older than torch's CUDA %s: it should run "
            "(CUDA's minor version compatibility), but a newer driver is safer",
            gpu.driver_version,
            gpu.cuda_driver_version,
            environment.torch_cuda_version,
        )
    facts = torch_device(environment, index)
    capability = gpu.compute_capability if gpu.compute_capability != (0, 0) else None
    capability = capability or (facts.capability if facts else None)
    if capability is not None and not arch_runs_on(environment.arch_list, capability):
        major, minor = capability
        raise UserError(
            f"{card} (compute capability {major}.{minor}) cannot run torch "
            f"{environment.torch_version}, built for {', '.join(environment.arch_list)}: install a "
            f"torch built for sm_{major}{minor} (set AUTOTUNE_TORCH_INDEX, see the README), "
            "or run with --device cpu"
        )
    if not environment.cuda_available or facts is None:
        raise UserError(
            f"NVML sees {card} as CUDA device {index}, but torch {environment.torch_version} does "
            f"not ({len(environment.devices)} device(s) visible to it); check CUDA_VISIBLE_DEVICES "
            "and the driver with nvidia-smi, or run with --device cpu"
        )


def check_one_mig_device(requested: str, index: int, environment: Environment) -> None:
    """One line (UserError) for ``cuda:N``, N > 0, where this process sees a MIG device: CUDA shows
    a process one MIG device at most, so there is no second one to choose by index."""
    if index == 0 or len(environment.devices) > 1:
        return
    first = gpu_info(0, environment)
    if first is None or not first.mig:
        return
    raise UserError(
        f"--device {requested}: this process sees one MIG device ({first.name}), and CUDA shows a "
        "process one MIG device at most; choose the slice with CUDA_VISIBLE_DEVICES=MIG-<uuid> "
        "(nvidia-smi -L lists them) and run with --device cuda:0"
    )


def resolve_device(requested: str | None, environment: Environment) -> str:
    """``cpu`` or ``cuda:N`` for ``--device`` (default: ``cuda:0`` when a usable GPU is present).

    ``cuda:N`` counts GPUs as the probe children do: in PCI bus order (as nvidia-smi does) among
    those ``CUDA_VISIBLE_DEVICES`` shows; ``CUDA_VISIBLE_DEVICES=""`` means no GPU. Where NVML is
    missing or fails, the GPUs torch sees in the environment probe stand in, with a warning: a GPU
    is never silently replaced by the CPU.
    """
    if requested is None:
        gpu = gpu_info(0, environment)
        if gpu is None or not environment.torch_cuda_version:
            return "cpu"
        check_torch_runs(gpu, environment, 0)
        return "cuda:0"
    try:
        index = cuda_index(requested)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if index is None:
        return "cpu"
    check_one_mig_device(requested, index, environment)
    gpu = gpu_info(index, environment)
    if gpu is None:
        raise UserError(
            f"--device {requested}: no NVIDIA GPU {index} found (NVML sees none, or "
            "CUDA_VISIBLE_DEVICES hides it); run with --device cpu, or check the driver with nvidia-smi"
        )
    if not environment.torch_cuda_version:
        raise UserError(
            f"--device {requested}: the installed torch is a CPU-only build; reinstall a CUDA "
            "build of torch (see README) or run with --device cpu"
        )
    check_torch_runs(gpu, environment, index)
    return f"cuda:{index}"


def resolve_precision(requested: str | None, device: str, environment: Environment | None = None) -> str:
    """``--precision`` or the device's default: bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 on CPU.

    bf16 needs compute capability 8.0 or newer, read from NVML (from torch's view in
    ``environment`` where NVML cannot tell).
    """
    index = cuda_index(device)
    if index is None:
        return requested or "fp32"
    gpu = gpu_info(index, environment)
    capability = gpu.compute_capability if gpu is not None else (0, 0)
    facts = torch_device(environment, index) if environment is not None else None
    if capability == (0, 0) and facts is not None:
        capability = facts.capability
    precision = requested or "bf16"
    if precision == "bf16" and capability < BF16_CAPABILITY:
        log.warning(
            "%s cannot compute in bf16 (compute capability %d.%d < 8.0): using fp16",
            gpu.name if gpu else device,
            *capability,
        )
        return "fp16"
    return precision
