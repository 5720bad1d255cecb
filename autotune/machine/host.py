"""The host machine as the tuner sees it, read from /proc: memory, CPU model and usable cores."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/meminfo")


def available_bytes() -> int:
    """MemAvailable: what can be used without swapping."""
    return _meminfo("MemAvailable")


def total_bytes() -> int:
    """MemTotal."""
    return _meminfo("MemTotal")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may run on (affinity), which is what DataLoader workers can use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
