"""What an error from the device says it is: out of memory, perhaps out of memory, or a kernel's limit."""

from __future__ import annotations

import torch

from probes.protocol import AMBIGUOUS_OOM, CUBLAS_CREATE_FAILED, KERNEL_LIMIT, OOM_TEXTS

# Statuses that near the limit mean out of memory, and anywhere else another fault: the child
# reports them as errors of kind AMBIGUOUS_OOM and the search, which knows the sizes that fitted
# and ran out of memory, decides (autotune/tuning/search.py). Lightning's and Accelerate's batch-size
# finders count cuDNN's NOT_SUPPORTED as out of memory (pytorch/pytorch#4107), Lightning also
# CUDNN_STATUS_INTERNAL_ERROR.
AMBIGUOUS_OOM_TEXTS = (
    "CUBLAS_STATUS_EXECUTION_FAILED",  # a GEMM whose workspace or lazily loaded kernel found no memory
    "CUDNN_STATUS_INTERNAL_ERROR",  # without the allocation detail (OOM_TEXTS has those forms)
    "CUDNN_STATUS_NOT_SUPPORTED",
    "Unable to find a valid cuDNN algorithm",  # PyTorch's cuDNN v7 path: no algorithm's workspace fits
    "Cuda failure 'out of memory'",  # NCCL's own allocation (a DistBackendError)
)
# A kernel's limit at a big batch: neither a fit nor out of memory. The search takes the size as its
# upper bound. cudaErrorInvalidConfiguration (a grid or block past the device's limits), tensors
# past INT_MAX elements and kernels that index with 32 bits.
KERNEL_LIMIT_TEXTS = (
    "invalid configuration argument",
    "canUse32BitIndexMath",
    "32-bit index",
    "32 bit index",
    "INT_MAX",
    "numel needs to be smaller than int32",
    "too large to fit in int",
)
CUDA_ERROR_MEMORY_ALLOCATION = 2  # cudaErrorMemoryAllocation, torch.AcceleratorError.error_code
CUDA_ERROR_INVALID_CONFIGURATION = 9  # cudaErrorInvalidConfiguration


class HostMemoryExceeded(MemoryError):
    """A CPU probe's measured peak memory went over its budget: the CPU's out-of-memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every form an out-of-memory takes: the allocator's typed error first, then the
    CUDA runtime's, cuBLAS's and cuDNN's (see :data:`OOM_TEXTS`)."""
    if isinstance(exc, (torch.OutOfMemoryError, HostMemoryExceeded)):
        return True
    if _cuda_error_code(exc) == CUDA_ERROR_MEMORY_ALLOCATION:
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(t in text for t in OOM_TEXTS) or CUBLAS_CREATE_FAILED.search(text) is not None


def error_kind(exc: BaseException) -> str:
    """What an error that is not an out-of-memory says it is, from its words alone:
    ``AMBIGUOUS_OOM`` (:data:`AMBIGUOUS_OOM_TEXTS`), ``KERNEL_LIMIT`` (:data:`KERNEL_LIMIT_TEXTS`),
    or "" for any other error."""
    if _cuda_error_code(exc) == CUDA_ERROR_INVALID_CONFIGURATION:
        return KERNEL_LIMIT
    if not isinstance(exc, RuntimeError):
        return ""
    text = str(exc)
    if any(t in text for t in AMBIGUOUS_OOM_TEXTS):
        return AMBIGUOUS_OOM
    if any(t in text for t in KERNEL_LIMIT_TEXTS):
        return KERNEL_LIMIT
    return ""


def _cuda_error_code(exc: BaseException) -> int | None:
    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch 2.8 and newer
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return getattr(exc, "error_code", None)
    return None
