"""Which device and precision a run uses: what NVML sees, and what torch (asked in a child) can use."""

from __future__ import annotations

import logging

from autotune.config import cuda_index
from autotune.errors import ProbeError, UserError
from autotune.fingerprint import gpu_info
from autotune.probe_client import run_probe
from probes.protocol import Environment, ProbeRequest

log = logging.getLogger(__name__)

ENVIRONMENT_TIMEOUT_S = 300.0
BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bf16 natively


def probe_environment(timeout_s: float = ENVIRONMENT_TIMEOUT_S) -> Environment:
    """torch's version, its CUDA build and the devices it sees, read in a probe child."""
    result = run_probe(ProbeRequest(kind="environment"), timeout_s)
    if not result.fits or result.environment is None:
        raise ProbeError(f"could not start torch in a probe child: {result.message or result.status}")
    return result.environment


def resolve_device(requested: str | None, environment: Environment) -> str:
    """``cpu`` or ``cuda:N`` for ``--device`` (default: ``cuda:0`` when a usable GPU is present)."""
    if requested is None:
        return "cuda:0" if gpu_info(0) is not None and environment.torch_cuda_version else "cpu"
    try:
        index = cuda_index(requested)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if index is None:
        return "cpu"
    if gpu_info(index) is None:
        raise UserError(
            f"--device {requested}: no NVIDIA GPU {index} found (NVML sees none); "
            "run with --device cpu, or check the driver with nvidia-smi"
        )
    if not environment.torch_cuda_version:
        raise UserError(
            f"--device {requested}: the installed torch is a CPU-only build; reinstall a CUDA "
            "build of torch (see README) or run with --device cpu"
        )
    return f"cuda:{index}"


def resolve_precision(requested: str | None, device: str) -> str:
    """``--precision`` or the device's default: bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 on CPU."""
    index = cuda_index(device)
    if index is None:
        return requested or "fp32"
    gpu = gpu_info(index)
    bf16_ok = gpu is not None and gpu.compute_capability >= BF16_CAPABILITY
    precision = requested or "bf16"
    if precision == "bf16" and not bf16_ok:
        log.warning(
            "%s cannot compute in bf16 (compute capability < 8.0): using fp16", gpu.name if gpu else device
        )
        return "fp16"
    return precision
