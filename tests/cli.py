"""Running the ``autotune`` command as a user does: a separate process, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
SMALL_ACT = {
    "dim_model": 64,
    "dim_feedforward": 128,
    "n_encoder_layers": 1,
    "n_vae_encoder_layers": 1,
    "chunk_size": 20,
    "n_action_steps": 20,
}


def set_flags(overrides: dict[str, object]) -> list[str]:
    """``{"dim_model": 64}`` -> ``["--set", "dim_model=64"]``."""
    return [part for key, value in overrides.items() for part in ("--set", f"{key}={value}")]
