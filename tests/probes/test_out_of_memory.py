"""Out of memory in every form CUDA and its libraries raise it is an out-of-memory for the search,
the soak and the study (status ``oom``, the library's message kept); any other error stops the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probes.device import HostMemoryExceeded, is_out_of_memory
from probes.protocol import ModelSpec, ProbeRequest, ProbeResult
from tests.cli import SMALL_ACT

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024**2

# What CUDA 13, cuBLAS, cuDNN 9 and PyTorch 2.14 say near the limit, as PyTorch raises it.
OUT_OF_MEMORY = [
    (
        "OutOfMemoryError",
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB",
    ),
    ("AcceleratorError", "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    (
        "RuntimeError",
        "CUDA error: out of memory\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
    ),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasLtCreate(&handle)`"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED"),
    ("RuntimeError", "FIND was unable to find an engine to execute this computation"),
    ("RuntimeError", "GET was unable to find an engine to execute this computation"),
]
NOT_OUT_OF_MEMORY = [
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k)`"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasSetStream(handle, stream)`"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
    ("AcceleratorError", "CUDA error: an illegal memory access was encountered"),
    ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (4x64 and 32x8)"),
    ("ValueError", "out of memory"),  # the words alone, from no allocator
]  # fmt: skip

TYPES: dict[str, type[BaseException]] = {
    "OutOfMemoryError": torch.OutOfMemoryError,
    "AcceleratorError": torch.AcceleratorError,
    "RuntimeError": RuntimeError,
    "ValueError": ValueError,
}


@pytest.mark.parametrize(("kind", "message"), OUT_OF_MEMORY)
def test_every_form_of_out_of_memory_is_recognised(kind: str, message: str) -> None:
    assert is_out_of_memory(TYPES[kind](message))


@pytest.mark.parametrize(("kind", "message"), NOT_OUT_OF_MEMORY)
def test_other_cuda_errors_are_not_out_of_memory(kind: str, message: str) -> None:
    assert not is_out_of_memory(TYPES[kind](message))


def test_the_cpu_budget_and_the_typed_errors_are_out_of_memory() -> None:
    assert is_out_of_memory(HostMemoryExceeded("over"))
    assert is_out_of_memory(torch.OutOfMemoryError("anything"))


def injected(tmp_path: Path, kind: str, at_step: int, message: str) -> ProbeResult:
    """A real CPU batch probe child (cut-down ACT) whose step ``at_step`` raises ``message``."""
    request = ProbeRequest(
        kind="batch",
        model=ModelSpec("act", 1, (48, 64), 6, 6, True, dict(SMALL_ACT)),
        device="cpu",
        precision="fp32",
        batch_size=2,
        memory_limit_bytes=2048 * MiB,
    )
    request_path, result_path = tmp_path / "request.json", tmp_path / "result.json"
    request_path.write_text(request.to_json())
    subprocess.run(
        [sys.executable, "-m", "tests.probes.inject", str(request_path), str(result_path), kind, str(at_step), message],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=300,
        check=True,
    )  # fmt: skip
    return ProbeResult.from_json(result_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "at_step", "message"),
    [
        ("AcceleratorError", 1, "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
        ("RuntimeError", 1, "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
        ("RuntimeError", 3, "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
        ("RuntimeError", 1, "FIND was unable to find an engine to execute this computation"),
    ],
)  # fmt: skip
def test_a_probe_child_reports_out_of_memory_in_any_step_with_the_librarys_message(
    tmp_path: Path, kind: str, at_step: int, message: str
) -> None:
    result = injected(tmp_path, kind, at_step, message)
    assert result.status == "oom", result.message
    assert result.message == f"{kind}: {message.splitlines()[0]}"  # the CSV keeps the original words
    assert result.memory_cap_bytes == 2048 * MiB  # the cap it had, though cut short


@pytest.mark.slow
def test_any_other_error_in_a_probe_child_stops_the_run_with_its_message(tmp_path: Path) -> None:
    message = "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(handle)`"
    result = injected(tmp_path, "RuntimeError", 2, message)
    assert result.status == "error"
    assert result.message == f"RuntimeError: {message}"


def test_an_out_of_memory_result_keeps_its_message_in_the_csv_row() -> None:
    from autotune.results import probe_row

    result = ProbeResult(
        status="oom", batch_size=8, message="RuntimeError: FIND was unable to find an engine"
    )
    row = probe_row(result, "soak")
    assert row["status"] == "oom" and row["message"] == result.message
