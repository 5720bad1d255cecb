"""Runs one probe in an isolated child process and returns its typed result.

The child is a process of its own, in its own process group (forked from a warm server, or a fresh
interpreter: probe_start.py): an out-of-memory, a crash or a hang stays there. A child that
outlives its timeout is killed with its whole group (DataLoader workers included) and reported as
``timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autotune.errors import Terminated
from autotune.run import probe_start
from autotune.run.probe_start import launcher as launcher  # re-exported
from probes.protocol import ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 4000
CUDA_DEVICE_ORDER = "PCI_BUS_ID"  # the order NVML numbers GPUs in
FOLDER_PREFIX = "autotune-probe-"  # then the tuner's pid: autotune-probe-<pid>-<random>
PARENT_ENV = "AUTOTUNE_PARENT_PID"


# Children running now (pids, each its process group), and whether the tuner is stopping: a command
# that runs probes in threads (autotune estimate) takes them all down with stop_children() when it
# is interrupted or terminated, and no new one starts after.
_live: set[int] = set()
_live_lock = threading.Lock()
_stopping = False


def stop_children() -> None:
    """Kill every probe child still running, with its process group, and start no new one: the
    tuner is stopping (SIGTERM, Ctrl-C). A probe thread whose child is killed then raises
    :class:`~autotune.errors.Terminated` instead of running it again."""
    global _stopping
    with _live_lock:
        _stopping = True
        pids = list(_live)
    for pid in pids:
        for kill in (os.killpg, os.kill):  # os.kill: a forked child not yet in its own session
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def allow_children() -> None:
    """Undo :func:`stop_children` (for a process that goes on, such as a test)."""
    global _stopping
    with _live_lock:
        _stopping = False


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
    (:func:`autotune.machine.fingerprint.gpu_info`) on a machine with mixed cards."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    env["CUDA_DEVICE_ORDER"] = CUDA_DEVICE_ORDER
    env[PARENT_ENV] = str(os.getpid())  # the child leaves with us (probes/orphan.py)
    return env


def remove_orphaned_folders() -> None:
    """Probe folders of tuners that are gone (killed before their child could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _cgroup_oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed in this process's cgroup:
    cgroup v2's ``memory.events`` (its subtree included) or v1's ``memory.oom_control``; None where
    neither can be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            places.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            places.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    for place in places:
        try:
            for entry in place.read_text().splitlines():
                name, _, value = entry.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def combine(request: ProbeRequest, ranks: list[ProbeResult | None]) -> ProbeResult | None:
    """One result for a DDP job from its ranks' (None where a rank wrote none): it fits only if
    every rank fits; its peak is the largest rank's; its times are the slowest rank's (what
    LeRobot logs under DDP) and its samples/s counts every rank's batch. An out of memory in any
    rank is the job's out of memory; failing that, a rank's error of a known kind (an ambiguous
    out-of-memory, a kernel's limit) is the job's. None when no rank answered."""
    answered = [(r, res) for r, res in enumerate(ranks) if res is not None]
    if not answered:
        return None
    failed = [(r, res) for r, res in answered if not res.fits]
    if failed:
        # The rank that ran out of memory (or whose library said what may mean it, or hit a
        # kernel's limit) tells why; the others mostly fail in a collective waiting for it.
        r, worst = next(
            ((r, res) for r, res in failed if res.status == "oom"),
            next(((r, res) for r, res in failed if res.error_kind), failed[0]),
        )
        worst.message = f"rank {r} of {request.world_size}: {worst.message}"
        worst.world_size = request.world_size
        return worst
    if len(answered) < len(ranks):
        missing = [str(r) for r, res in enumerate(ranks) if res is None]
        return ProbeResult(
            status="error",
            batch_size=request.batch_size,
            world_size=request.world_size,
            message=f"rank(s) {', '.join(missing)} of {request.world_size} gave no answer",
        )
    results = [res for _, res in answered]
    top = max(results, key=lambda res: res.peak_reserved_bytes)
    job = ProbeResult.from_json(top.to_json())
    job.world_size = request.world_size
    job.rank_peaks_bytes = [res.peak_reserved_bytes for res in results]
    job.step_time_s = max(res.step_time_s for res in results)
    job.updt_s = max(res.updt_s for res in results)
    job.data_s = max(res.data_s for res in results)
    per_step = job.data_s + job.updt_s if request.kind == "workers" else job.step_time_s
    job.samples_per_s = request.world_size * request.batch_size / per_step if per_step > 0 else 0.0
    job.drained = all(res.drained for res in results)
    job.loader_rss_bytes = sum(res.loader_rss_bytes for res in results)  # every rank has its loader
    return job


def run_probe(
    request: ProbeRequest,
    timeout_s: float,
    on_start: Callable[[int], None] | None = None,
    *,
    retry_killed: bool = True,
) -> ProbeResult:
    """Run ``request`` in a child; never raises for what happens inside the child.

    ``on_start`` receives the child's pid (also its process group id) once it is started. A child
    killed by a signal that was not the kernel's out-of-memory killer is an error, not an out of
    memory: it is run once more in a fresh child before it counts (``retry_killed``).
    """
    result, killed = _run_once(request, timeout_s, on_start)
    if killed and retry_killed:
        log.warning("%s; running it once more in a fresh child", result.message)
        result, _ = _run_once(request, timeout_s, on_start)
    return result


def _run_once(
    request: ProbeRequest, timeout_s: float, on_start: Callable[[int], None] | None
) -> tuple[ProbeResult, bool]:
    """One child's result, and whether a signal from outside killed it (not the OOM killer)."""
    oom_kills_before = _cgroup_oom_kills()
    with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as tmp:
        request_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        request_path.write_text(request.to_json())
        started = time.perf_counter()
        proc, timed_out = _start_and_wait(
            request, request_path, result_path, stderr_path, timeout_s, on_start
        )
        if _stopping:
            probe_start.kill_group(proc)
            raise Terminated()  # killed by stop_children: no result, and no second try
        # Workers the child left behind belong to its group: clean them up.
        probe_start.kill_group(proc)
        wall_s = time.perf_counter() - started
        stderr_text = stderr_path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]
        if timed_out:
            return ProbeResult(
                status="timeout",
                batch_size=request.batch_size,
                wall_s=wall_s,
                message=f"killed after {timeout_s:.0f} s without an answer (hung or far too slow)",
            ), False
        answered = _answer(request, result_path, stderr_text, wall_s)
        if answered is not None:
            return answered, False
        return _no_answer(request, proc.returncode or 0, oom_kills_before, stderr_text, wall_s)


def _start_and_wait(
    request: ProbeRequest,
    request_path: Path,
    result_path: Path,
    stderr_path: Path,
    timeout_s: float,
    on_start: Callable[[int], None] | None,
) -> tuple[probe_start.Child, bool]:
    """Start the child in its own process group and wait for it; its group is killed on a timeout,
    or when the tuner itself is interrupted. The process, and whether it timed out."""
    with _live_lock:
        if _stopping:
            raise Terminated()
        proc = probe_start.start(request, request_path, result_path, stderr_path, child_environment())
        _live.add(proc.pid)
    try:
        if on_start is not None:
            on_start(proc.pid)
        if proc.wait(timeout_s):
            return proc, False
        probe_start.kill_group(proc)
        return proc, True
    except BaseException:
        probe_start.kill_group(proc)  # Ctrl-C or SIGTERM in the tuner: take the probe down with it
        raise
    finally:
        with _live_lock:
            _live.discard(proc.pid)


def _answer(request: ProbeRequest, result_path: Path, stderr_text: str, wall_s: float) -> ProbeResult | None:
    """The result the child (or every rank of a job) wrote, or None where it wrote none."""
    if request.world_size > 1:
        ranks = [result_path.with_name(f"result.rank{r}.json") for r in range(request.world_size)]
        result = combine(
            request, [ProbeResult.from_json(p.read_text()) if p.exists() else None for p in ranks]
        )
        if result is None:
            return None
        result.wall_s = wall_s
    elif result_path.exists():
        result = ProbeResult.from_json(result_path.read_text())
    else:
        return None
    if result.status == "error" and not result.message:
        result.message = _last_error_line(stderr_text)
    return result


def _no_answer(
    request: ProbeRequest, code: int, oom_kills_before: int | None, stderr_text: str, wall_s: float
) -> tuple[ProbeResult, bool]:
    """A child that died before answering: the kernel's out-of-memory killer (out of host memory),
    or an error; and whether a signal from outside killed it (worth one more try)."""
    oom_kills_after = _cgroup_oom_kills()
    if (
        code == -signal.SIGKILL
        and None not in (oom_kills_before, oom_kills_after)
        and (
            oom_kills_after > oom_kills_before  # type: ignore[operator]
        )
    ):
        # The kernel's out-of-memory killer killed a process in our cgroup meanwhile: this one.
        return ProbeResult(
            status="oom",
            batch_size=request.batch_size,
            wall_s=wall_s,
            message="killed by the kernel's out-of-memory killer (out of host memory)",
        ), False
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    if code == -signal.SIGKILL:
        how += " (not by the out-of-memory killer)"
    detail = _last_error_line(stderr_text)
    return ProbeResult(
        status="error",
        batch_size=request.batch_size,
        wall_s=wall_s,
        message=f"the probe process {how} before answering" + (f": {detail}" if detail else ""),
    ), code < 0
