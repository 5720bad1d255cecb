"""Running the ``autotune`` command as a user does: a separate process, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from probes.catalogue import cut_down
from probes.catalogue import set_flags as set_flags  # re-exported: the tests' ``--set`` flags

ROOT = Path(__file__).resolve().parents[1]


def autotune(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    python: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """``python -m autotune ARGS`` (this interpreter unless ``python``, e.g. a LeRobot environment's)."""
    return subprocess.run(
        [str(python or sys.executable), "-m", "autotune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# ACT cut down in width and depth (the ResNet-18 backbone stays) so CPU tests run in seconds.
SMALL_ACT = cut_down("act", "tests")
