"""Runs one probe in an isolated child process and returns its typed result.

The child is a fresh interpreter (``python -m probes.child``) in its own process group: an
out-of-memory, a crash or a hang stays there. A child that outlives its timeout is killed with
its whole group (DataLoader workers included) and reported as ``timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from probes.protocol import ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 4000
CUDA_DEVICE_ORDER = "PCI_BUS_ID"  # the order NVML numbers GPUs in


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_error_line(stderr: str) -> str:
    """The most telling line of a child's stderr: the last exception line, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else ""


def child_environment() -> dict[str, str]:
    """The child's environment: ours, with glibc's allocator made to hand large blocks straight
    back to the system. By default glibc raises its mmap threshold as blocks are freed, after
    which freed tensors linger in the heap and a CPU probe's resident set no longer tracks the
    memory it uses; a fixed threshold keeps the measurement faithful (it does not change CUDA).

    GPUs are numbered in PCI bus order, as NVML and nvidia-smi number them, rather than CUDA's
    default (fastest first), so that ``cuda:N`` in a child is the GPU the tuner read with NVML
    (:func:`autotune.fingerprint.gpu_info`) on a machine with mixed cards."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    env["CUDA_DEVICE_ORDER"] = CUDA_DEVICE_ORDER
    return env


def run_probe(
    request: ProbeRequest, timeout_s: float, on_start: Callable[[int], None] | None = None
) -> ProbeResult:
    """Run ``request`` in a child; never raises for what happens inside the child.

    ``on_start`` receives the child's pid (also its process group id) once it is started.
    """
    with tempfile.TemporaryDirectory(prefix="autotune-probe-") as tmp:
        request_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        request_path.write_text(request.to_json())
        started = time.perf_counter()
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "probes.child", str(request_path), str(result_path)],
                env=child_environment(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
            if on_start is not None:
                on_start(proc.pid)
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                timed_out = True
            except BaseException:
                _kill_group(proc)  # Ctrl-C in the tuner: take the probe down with it
                raise
        # Workers the child left behind belong to its group: clean them up.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        wall_s = time.perf_counter() - started
        stderr_text = stderr_path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]
        if timed_out:
            return ProbeResult(
                status="timeout",
                batch_size=request.batch_size,
                wall_s=wall_s,
                message=f"killed after {timeout_s:.0f} s without an answer (hung or far too slow)",
            )
        if result_path.exists():
            result = ProbeResult.from_json(result_path.read_text())
            if result.status == "error" and not result.message:
                result.message = _last_error_line(stderr_text)
            return result
        code = proc.returncode
        if code == -signal.SIGKILL:
            # Nobody here killed it: on Linux that is the kernel's out-of-memory killer.
            return ProbeResult(
                status="oom",
                batch_size=request.batch_size,
                wall_s=wall_s,
                message="killed by the operating system (out of host memory)",
            )
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        detail = _last_error_line(stderr_text)
        return ProbeResult(
            status="error",
            batch_size=request.batch_size,
            wall_s=wall_s,
            message=f"the probe process {how} before answering" + (f": {detail}" if detail else ""),
        )
