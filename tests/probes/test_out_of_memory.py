"""Out of memory in every form CUDA and its libraries raise it is an out-of-memory for the search,
the soak and the study (status ``oom``, the library's message kept). A status that only next to the
limit means out of memory, and a kernel's size limit, are errors the child names (``error_kind``)
for the search to decide; any other error stops the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probes.device_errors import HostMemoryExceeded, error_kind, is_out_of_memory
from probes.protocol import AMBIGUOUS_OOM, KERNEL_LIMIT, ModelSpec, ProbeRequest, ProbeResult
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
# Out of memory next to the limit, another fault anywhere else: the search decides.
AMBIGUOUS = [
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, m, n, k)`"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
    ("RuntimeError", "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."),
    ("RuntimeError", "Unable to find a valid cuDNN algorithm to run convolution"),
    ("RuntimeError", "NCCL error in: ProcessGroupNCCL.cpp:3117, unhandled cuda error, NCCL version 2.27.3\nLast error:\nCuda failure 'out of memory'"),
]  # fmt: skip
# A kernel's limit at a big batch: neither a fit nor out of memory.
KERNEL_LIMITS = [
    ("AcceleratorError", "CUDA error: invalid configuration argument\nCUDA kernel errors might be asynchronously reported"),
    ("RuntimeError", "Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output) to be true, but got false."),
    ("RuntimeError", "upsample_bilinear2d_nhwc only supports output tensors with less than INT_MAX elements, but got [4096, 3, 480, 640]"),
    ("RuntimeError", "numel needs to be smaller than int32 max; got 2415919104"),
    ("RuntimeError", "tensor is too large to fit in int"),
]  # fmt: skip
NOT_OUT_OF_MEMORY = [
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasSetStream(handle, stream)`"),
    ("AcceleratorError", "CUDA error: an illegal memory access was encountered"),
    ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (4x64 and 32x8)"),
    ("ValueError", "out of memory"),  # the words alone, from no allocator
    ("ValueError", "invalid configuration argument"),  # nor from CUDA
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


@pytest.mark.parametrize(("kind", "message"), NOT_OUT_OF_MEMORY + AMBIGUOUS + KERNEL_LIMITS)
def test_other_cuda_errors_are_not_out_of_memory(kind: str, message: str) -> None:
    assert not is_out_of_memory(TYPES[kind](message))


@pytest.mark.parametrize(("kind", "message"), AMBIGUOUS)
def test_statuses_that_mean_out_of_memory_only_next_to_the_limit_are_named_ambiguous(
    kind: str, message: str
) -> None:
    assert error_kind(TYPES[kind](message)) == AMBIGUOUS_OOM


@pytest.mark.parametrize(("kind", "message"), KERNEL_LIMITS)
def test_a_kernels_size_limit_is_named_as_such(kind: str, message: str) -> None:
    exc = TYPES[kind](message)
    if kind == "AcceleratorError":
        exc.error_code = 9  # cudaErrorInvalidConfiguration, as PyTorch's C10_CUDA_CHECK sets it
    assert error_kind(exc) == KERNEL_LIMIT


@pytest.mark.parametrize(("kind", "message"), NOT_OUT_OF_MEMORY)
def test_any_other_error_has_no_kind(kind: str, message: str) -> None:
    assert error_kind(TYPES[kind](message)) == ""


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
    message = "CUDA error: an illegal memory access was encountered"
    result = injected(tmp_path, "RuntimeError", 2, message)
    assert result.status == "error" and result.error_kind == ""
    assert result.message == f"RuntimeError: {message}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(handle)`", AMBIGUOUS_OOM),
        ("Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output) to be true", KERNEL_LIMIT),
    ],
)  # fmt: skip
def test_a_probe_child_names_what_only_the_search_can_decide(tmp_path: Path, message: str, kind: str) -> None:
    result = injected(tmp_path, "RuntimeError", 2, message)
    assert (result.status, result.error_kind) == ("error", kind)
    assert result.message == f"RuntimeError: {message}"
    assert result.memory_cap_bytes == 2048 * MiB  # the cap it had, for the budget the search counts


def test_an_out_of_memory_result_keeps_its_message_in_the_csv_row() -> None:
    from autotune.outputs.results import probe_row

    result = ProbeResult(
        status="oom", batch_size=8, message="RuntimeError: FIND was unable to find an engine"
    )
    row = probe_row(result, "soak")
    assert row["status"] == "oom" and row["message"] == result.message
