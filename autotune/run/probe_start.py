"""How a probe child starts: forked from the warm server, or as a fresh interpreter.

The probes that measure no memory (:data:`FORKED`: the environment, the dataset, the model's
description, the decoders) are forked from the warm server (probes/warm.py), which imported torch
and the probes once: each skips about 3 s of imports. Every probe that measures memory (a batch,
the workers, the estimate, RL) starts as a fresh interpreter, as the trainer does: a forked child's
resident set starts from the server's, and measured 145 MiB less than a fresh one for the same
cut-down ACT step (which the trainer, a fresh process, holds too). A DDP job (``world_size`` > 1)
is started by torchrun. Every probe starts fresh where ``AUTOTUNE_PROBE_START=spawn`` asks for it,
or once the server could not start or has died.

Either way the child runs ``probes.child.main`` in a session of its own (its process group is
killed with its workers), with its output in its own file and the environment it is given, and its
exit status reads as a ``subprocess`` return code (negative: killed by a signal).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Protocol

from autotune.errors import UserError
from probes.protocol import ProbeRequest

log = logging.getLogger(__name__)

START_ENV = "AUTOTUNE_PROBE_START"  # "spawn": a fresh interpreter for every probe
SERVER_ANSWER_S = 120.0  # the most the warm server may take to fork a child (its first: its imports)
FORKED = frozenset({"environment", "dataset", "describe", "decode"})  # they measure no memory


class Child(Protocol):
    pid: int

    def wait(self, timeout: float | None) -> bool:
        """Whether the child has ended within ``timeout`` seconds (None: wait for it)."""
        ...

    @property
    def returncode(self) -> int | None: ...


class _Spawned:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.pid = proc, proc.pid

    def wait(self, timeout: float | None) -> bool:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


class _Exit:
    """One forked child's end, as the server reports it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.code: int | None = None

    def set(self, code: int) -> None:
        self.code = code
        self.event.set()


class _Forked:
    def __init__(self, pid: int, end: _Exit) -> None:
        self.pid, self._end = pid, end

    def wait(self, timeout: float | None) -> bool:
        return self._end.event.wait(timeout)

    @property
    def returncode(self) -> int | None:
        return self._end.code


class _Server:
    """The warm server (probes/warm.py) as this process sees it: it asks for a child with one line,
    and a reader thread hands out the pids and the exit codes the server writes back."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "probes.warm"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is the tuner's; the server leaves with it
        )
        self.lock = threading.Lock()
        self.started = threading.Condition()
        self.pids: list[tuple[int, _Exit]] = []  # started, not yet handed out
        self.ends: dict[int, _Exit] = {}  # by pid, each replaced when the pid is used again
        self.alive = True
        threading.Thread(target=self._read, daemon=True, name="warm-server").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *numbers = line.decode().split()
            with self.started:
                if word == "pid":  # always before that child's exit
                    end = self.ends[int(numbers[0])] = _Exit()
                    self.pids.append((int(numbers[0]), end))
                    self.started.notify_all()
                elif word == "exit" and int(numbers[0]) in self.ends:
                    self.ends.pop(int(numbers[0])).set(int(numbers[1]))
        with self.started:  # the server is gone: its children take themselves down (probes/orphan.py)
            self.alive = False
            for end in self.ends.values():
                end.set(-signal.SIGKILL)
            self.started.notify_all()

    def fork(self, order: dict) -> _Forked | None:
        """A child for ``order``, or None where the server is gone."""
        with self.lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps(order).encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                return None
            with self.started:
                # Its first answer waits for its imports; a server that never answers is given up.
                if not self.started.wait_for(lambda: self.pids or not self.alive, SERVER_ANSWER_S):
                    log.warning(
                        "the warm server did not answer in %.0f s; probes start fresh", SERVER_ANSWER_S
                    )
                    self.proc.kill()
                    self.alive = False
                if not self.pids:
                    return None
                return _Forked(*self.pids.pop(0))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_server: _Server | None = None
_server_lock = threading.Lock()
_server_failed = False


def _warm_server(env: dict[str, str]) -> _Server | None:
    global _server, _server_failed
    with _server_lock:
        if _server is None and not _server_failed:
            try:
                _server = _Server(env)
                atexit.register(stop_server)
            except OSError as exc:
                log.debug("the warm server did not start (%s); probes start as fresh interpreters", exc)
                _server_failed = True
        return _server


def stop_server() -> None:
    """Stop the warm server (it holds torch in memory): at exit, or before a long job such as the
    training ``autotune train`` starts. A later probe starts a new one."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.stop()


def launcher(world_size: int) -> list[str]:
    """The command that starts a probe child's module in a fresh interpreter: one process, or
    ``world_size`` ranks started by torch's own launcher (``torchrun``), on this machine, with no
    restarts."""
    if world_size <= 1:
        return [sys.executable, "-m"]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
        "--max-restarts=0", "--monitor-interval=0.5", "-m",
    ]  # fmt: skip


def forks(request: ProbeRequest) -> bool:
    """Whether ``request`` runs in a child forked from the warm server."""
    how = os.environ.get(START_ENV, "").strip().lower()
    if how not in ("", "fork", "spawn"):
        raise UserError(
            f"{START_ENV}={how!r} is not a way to start probes: use spawn (each probe a fresh interpreter) or fork (the default)"
        )
    return request.kind in FORKED and request.world_size <= 1 and how != "spawn"


def start(
    request: ProbeRequest, request_path: Path, result_path: Path, output_path: Path, env: dict[str, str]
) -> Child:
    """Start the child that runs ``request``; its stdout and stderr go to ``output_path``."""
    if forks(request):
        output_path.touch(mode=0o600)  # read after the child, even one killed before it opened it
        server = _warm_server(env)
        order = {
            "request": str(request_path),
            "result": str(result_path),
            "output": str(output_path),
            "env": env,
        }
        child = server.fork(order) if server is not None else None
        if child is not None:
            return child
    with open(output_path, "w") as output:
        proc = subprocess.Popen(
            [*launcher(request.world_size), "probes.child", str(request_path), str(result_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    return _Spawned(proc)


def kill_group(child: Child) -> None:
    """Kill the child's process group (it with its DataLoader workers) and wait for it. A forked
    child that has not yet made its session is killed alone (it has started no worker yet)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    if not child.wait(0):  # still running: not yet in a group of its own
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child.pid, signal.SIGKILL)
    child.wait(None)
