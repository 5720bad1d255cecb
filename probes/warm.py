"""The warm server: forks probe children from a process that has already imported torch.

A fresh interpreter pays about 3 s of imports (torch, the decoders, the probes) before it measures
anything, and a tune starts 8 to 30 children. The tuner starts one server,
``python -m probes.warm``, with the first probe that measures no memory
(autotune/run/probe_start.py). It imports :data:`PRELOAD` once and then, for each line it reads::

    {"request": PATH, "result": PATH, "output": PATH, "env": {...}}

forks a child and writes ``pid PID``; when a child ends it writes ``exit PID CODE`` (CODE as a
``subprocess`` return code: negative for a signal). It leaves when its input closes (the tuner is
done, or gone).

A child is isolated as a spawned one is: its own process, in its own session (its group is killed
with any worker), its output in its own file, the environment it is given. It runs the same
:func:`probes.child.main`. The server initialises no device: importing torch touches no GPU, so
CUDA starts in each child, as in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import traceback

# What the server imports once (one that fails is skipped: the child imports what it needs, and
# says why it cannot). torchcodec's decoders, which load FFmpeg's libraries and torch._dynamo (1.5
# s of CPU), because every run's environment probe loads them to tell whether the trainer decodes
# with torchcodec, and its decode probes use them. Not torchvision: only a model's description,
# rarely forked, needs it.
PRELOAD = ["torch", "torchcodec.decoders", "probes.child", "probes.loading", "probes.info"]


def _child(order: dict, closing: list[int]) -> None:
    """In the forked child: never returns."""
    try:
        for fd in closing:
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        os.setsid()
        fd = os.open(order["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for target in (1, 2):
            os.dup2(fd, target)
        os.close(fd)
        os.close(null)
        os.environ.clear()
        os.environ.update(order["env"])
        from probes.child import main

        main([order["request"], order["result"]])
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(1)  # main leaves with os._exit; reaching here is a failure to start


def _say(text: str) -> None:
    data = (text + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tuner's to handle
    for name in PRELOAD:
        with contextlib.suppress(Exception):  # torchcodec without FFmpeg raises OSError/RuntimeError
            importlib.import_module(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wake-up fd hears it
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                _reap()
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return  # the tuner closed our input: done
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                order = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(order, [wake_r, wake_w])
                _say(f"pid {pid}")


if __name__ == "__main__":
    serve()
