"""The probe child: ``python -m probes.child REQUEST.json RESULT.json``.

Runs one isolated measurement in its own process, so that running out of memory, a crash or a
hang never takes the tuner down, and writes a :class:`~probes.protocol.ProbeResult`. The tuner
starts it in its own process group, as a fresh interpreter (spawn semantics), or, for a probe that
measures no memory, forked from the warm server (probes/warm.py), and kills the group (with any
DataLoader workers) if it outlives its timeout.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probes import distributed
from probes.orphan import leave_with_parent
from probes.protocol import ProbeRequest, ProbeResult

log = logging.getLogger("probes.child")

Runner = Callable[[ProbeRequest, Any], dict[str, Any]]


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def runner_for(kind: str, backend: str = "rebuilt") -> Runner:
    """The function that runs a request of ``kind`` (imported only when that kind runs); with the
    ``lerobot`` backend, LeRobot's own code measures (probes/lerobot_backend.py)."""
    if backend == "lerobot" and kind in ("batch", "workers", "decode", "describe"):
        from probes import lerobot_backend

        return getattr(lerobot_backend, f"run_{'worker' if kind == 'workers' else kind}_probe")
    if kind == "batch":
        from probes.training import run_batch_probe

        return run_batch_probe
    if kind in ("workers", "decode"):
        from probes import loading

        return loading.run_worker_probe if kind == "workers" else loading.run_decode_probe
    if kind == "estimate":
        from probes.estimate import run_estimate_probe

        return run_estimate_probe
    if kind in ("ppo", "rrd"):
        from probes.rl import ppo, rrd

        return ppo.run_ppo_probe if kind == "ppo" else rrd.run_rrd_probe
    from probes import info

    runners: dict[str, Runner] = {
        "dataset": info.run_dataset_probe,
        "environment": info.run_environment_probe,
        "describe": info.run_describe_probe,
    }
    if kind not in runners:
        raise ValueError(f"unknown probe kind {kind!r}")
    return runners[kind]


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("AUTOTUNE_PROBE_LOG", "WARNING"),
        format="[probe %(process)d] %(message)s",
        stream=sys.stderr,
    )
    request_path, result_path = Path(argv[0]), Path(argv[1])
    leave_with_parent(request_path.parent, launched=distributed.active())
    request = ProbeRequest.from_json(request_path.read_text())
    os.environ["AUTOTUNE_PROBE_DIR"] = str(request_path.parent)  # where a probe may write
    ranked = distributed.active()
    if ranked:  # one rank of a DDP job: its own GPU, its own result file
        request.device = distributed.rank_device(request.device)
        result_path = distributed.rank_result(result_path)
    started = time.perf_counter()

    def on_exceed(peak_bytes: int) -> None:
        # The CPU's out-of-memory: report at once and leave, from the watcher thread, before the
        # probe can take the host's memory.
        ProbeResult(
            status="oom",
            batch_size=request.batch_size,
            peak_allocated_bytes=peak_bytes,
            peak_reserved_bytes=peak_bytes,
            memory_cap_bytes=request.memory_limit_bytes,
            wall_s=time.perf_counter() - started,
            message=f"measured peak memory passed the {request.memory_limit_bytes} B budget",
        ).write(result_path)
        os._exit(1 if ranked else 0)  # non-zero: torchrun stops the other ranks

    try:
        if ranked:
            distributed.start(request.device)
        backend = request.model.backend if request.model is not None else "rebuilt"
        fields = runner_for(request.kind, backend)(request, on_exceed)
        result = ProbeResult(batch_size=request.batch_size, **fields)
    except BaseException as exc:  # every outcome must be reported to the tuner
        from probes.device import current_cap
        from probes.device_errors import error_kind, is_out_of_memory

        if is_out_of_memory(exc):
            # In any form and any step, warm-up included; the CSV keeps the library's own words.
            result = ProbeResult(
                status="oom", batch_size=request.batch_size, message=_one_line(exc), **current_cap()
            )
        else:
            traceback.print_exc(file=sys.stderr)
            # A status that next to the limit means out of memory, or a kernel's size limit: the
            # child can only name it; the search, which knows the sizes around it, decides.
            kind = error_kind(exc)
            result = ProbeResult(
                status="error",
                batch_size=request.batch_size,
                message=_one_line(exc),
                error_kind=kind,
                **(current_cap() if kind else {}),
            )
        gc.collect()
    result.wall_s = time.perf_counter() - started
    result.write(result_path)
    sys.stderr.flush()
    # Leave without waiting on DataLoader workers or CUDA teardown; a rank that failed leaves
    # non-zero, so that torchrun stops the ranks still waiting for it in a collective.
    os._exit(1 if ranked and not result.fits else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
