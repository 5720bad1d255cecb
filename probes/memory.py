"""Host memory measurement from /proc: resident and proportional set sizes, and a peak watcher.

A CPU probe's memory is measured, not capped: limiting a process's address space breaks thread
start-up in torch, so a watcher thread samples the resident set and reports the peak.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of ``pid``; 0 if the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return int(fields[1]) * PAGE_BYTES


def peak_rss_bytes() -> int:
    """This process's own peak resident set (``VmHWM``, the kernel's exact high-water mark of its
    memory map). Not ``ru_maxrss``: that one starts at the parent's resident set when the process
    is started with fork (or vfork) and exec, so a child of a large parent reports the parent's
    size as its own peak (measured: a probe started from a test process that had trained models
    reported 260 MiB that its own memory never held)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pss_bytes(pid: int | str) -> int:
    """Proportional set size (shared pages split between sharers); RSS where PSS is unavailable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return rss_bytes(pid)


def children_of(pid: int) -> list[int]:
    """All descendants of ``pid`` (DataLoader workers and their helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class PeakWatcher(threading.Thread):
    """Samples a memory reading every ``interval_s``; keeps the peak; calls ``on_exceed`` once.

    ``read`` returns the current reading in bytes. ``on_exceed(peak)`` runs in the watcher thread
    the first time the reading exceeds ``limit_bytes`` (when given).
    """

    def __init__(
        self,
        read: Callable[[], int],
        *,
        interval_s: float = 0.005,
        limit_bytes: int | None = None,
        on_exceed: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="peak-watcher")
        self.read = read
        self.interval_s = interval_s
        self.limit_bytes = limit_bytes
        self.on_exceed = on_exceed
        self.peak_bytes = 0
        self._stop_event = threading.Event()

    def sample(self) -> int:
        value = self.read()
        self.peak_bytes = max(self.peak_bytes, value)
        if self.limit_bytes is not None and value > self.limit_bytes and self.on_exceed is not None:
            callback, self.on_exceed = self.on_exceed, None
            callback(self.peak_bytes)
        return value

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=1.0)
        self.sample()
        return self.peak_bytes
