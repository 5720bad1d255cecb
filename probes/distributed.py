"""A probe as one job of several ranks, started the way ``torchrun`` starts them.

The tuner launches ``python -m torch.distributed.run --standalone --nproc-per-node=N -m
probes.child ...``: one process per GPU (per rank on the CPU), each with ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE`` set. Each rank joins the process group (NCCL on CUDA, gloo on the CPU), trains
the real step under ``DistributedDataParallel`` with the options LeRobot's trainer uses
(``find_unused_parameters`` on, ``gradient_as_bucket_view`` off: DDP's gradient buckets are a
second copy of the gradients), and writes its own result, ``result.rank<R>.json``. A rank that
runs out of memory exits non-zero once it has written its result, and torchrun then stops the
others; a collective waits at most :data:`TIMEOUT_S` for a rank that is gone.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

TIMEOUT_S = 120.0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def active() -> bool:
    """Whether this probe is one rank of several."""
    return world_size() > 1


def rank_result(path: Path) -> Path:
    """Where this rank writes its result (``result.json`` itself for a single process)."""
    return path.with_name(f"{path.stem}.rank{rank()}{path.suffix}") if active() else path


def rank_device(device: str) -> str:
    """This rank's device: on CUDA one GPU per rank, counted from the job's first (``cuda:K``
    gives ranks K, K+1, ...); the CPU as it is."""
    if not device.startswith("cuda"):
        return device
    first = int(device.partition(":")[2] or 0)
    return f"cuda:{first + local_rank()}"


def start(device: str) -> None:
    """Join the job's process group: NCCL on CUDA, gloo on the CPU.

    On CUDA the rank's GPU is made current first and named to the group (``device_id``), as torch
    asks: NCCL then binds its communicator to that GPU at once, rather than guessing one (every
    rank on GPU 0, or a warning and a late, implicit binding)."""
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    if not device.startswith("cuda"):
        dist.init_process_group(backend="gloo", timeout=timeout)
        return
    from probes.device import note_memory_before_context

    gpu = torch.device(device)
    index = gpu.index or 0
    note_memory_before_context(index)  # before set_device creates this rank's context
    torch.cuda.set_device(index)
    dist.init_process_group(backend="nccl", timeout=timeout, device_id=torch.device("cuda", index))


def wrap(model: Any, device: Any) -> Any:
    """``model`` under DDP as LeRobot's trainer wraps it (accelerate's defaults in LeRobot)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        gradient_as_bucket_view=False,
    )
