"""The tuned profile: ``<results>/profiles/<policy>.json``, versioned, written atomically."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import UserError

PROFILE_VERSION = 1


@dataclass
class Conditions:
    """What the measurements assumed; a profile only applies under the same conditions."""

    device: str
    precision: str
    grad_checkpointing: bool
    cameras: int
    image_size: list[int]  # [H, W]
    state_dim: int
    action_dim: int
    memory_limit_bytes: int
    memory_limit_is_default: bool  # the card's free memory (CUDA) or half the available RAM (CPU)
    headroom: float
    dataset: str
    dataset_kind: str  # "synthetic" or "user"
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    compare: bool = False  # gradient checkpointing on and off were both tuned
    compare_precisions: list[str] = field(default_factory=list)
    target_batch: int | None = None


@dataclass
class Comparison:
    """One variant tuned by ``--compare``."""

    precision: str
    grad_checkpointing: bool
    max_batch_size: int
    batch_size: int
    samples_per_s: float
    per_sample_bytes: float | None
    probes: int


@dataclass
class WorkerSetting:
    num_workers: int
    prefetch_factor: int | None
    data_s: float
    updt_s: float
    samples_per_s: float


@dataclass
class Profile:
    """Everything a run decided and measured. Memory in bytes, times in seconds."""

    policy: str
    run_id: str
    created_at: str
    fingerprint: dict[str, Any]
    conditions: Conditions
    precision: str  # what the tuned values hold for (the fastest variant, with --compare)
    grad_checkpointing: bool
    max_batch_size: int
    certified: bool
    batch_size: int
    headroom_batch_size: int  # the largest batch that keeps the headroom
    grad_accum_steps: int
    num_workers: int
    prefetch_factor: int | None
    data_s: float
    updt_s: float
    samples_per_s: float
    peak_allocated_bytes: int  # at batch_size, measured by its probe or predicted by the fit
    peak_reserved_bytes: int
    max_batch_peak_reserved_bytes: int
    memory_model: dict[str, float] | None
    throughput_curve: list[dict[str, Any]]
    soaks: list[dict[str, Any]]
    comparisons: list[Comparison]
    lerobot_default: WorkerSetting | None
    speedup_vs_default: float | None
    search: dict[str, Any]
    study: dict[str, Any]
    plots: dict[str, str]
    loader_model: dict[str, Any] | None
    input_bound: dict[str, Any] | None
    lerobot_train_args: list[str]
    lerobot_train_command: str
    notes: list[str] = field(default_factory=list)
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_path(results: Path, policy: str) -> Path:
    return results / "profiles" / f"{policy}.json"


def write_profile(results: Path, profile: Profile) -> Path:
    """Write the latest profile atomically, and a copy under ``profiles/history/``."""
    path = profile_path(results, profile.policy)
    history = path.parent / "history" / f"{profile.policy}-{profile.run_id}.json"
    text = json.dumps(profile.to_dict(), indent=2) + "\n"
    for target in (history, path):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def read_profile(results: Path, policy: str) -> dict[str, Any] | None:
    """The latest profile as a dict, or None; a profile that cannot be read is a UserError."""
    path = profile_path(results, policy)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc}); move it aside and run again") from exc
    if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION:
        raise UserError(
            f"{path}: not a version-{PROFILE_VERSION} autotune profile; move it aside and run again"
        )
    return data


def lerobot_train_args(
    *,
    policy_args: list[str],
    dataset_repo_id: str,
    dataset_root: str | None,
    device: str,
    precision: str,
    batch_size: int,
    num_workers: int,
    prefetch_factor: int | None,
    grad_accum_steps: int = 1,
) -> list[str]:
    """The ``lerobot-train`` arguments for a tuned setting (LeRobot's current CLI)."""
    args = [f"--dataset.repo_id={dataset_repo_id}"]
    if dataset_root:
        args.append(f"--dataset.root={dataset_root}")
    args += policy_args
    args.append(f"--policy.device={'cuda' if device.startswith('cuda') else device}")
    args.append("--policy.push_to_hub=false")
    args += [f"--batch_size={batch_size}", f"--num_workers={num_workers}"]
    if num_workers > 0 and prefetch_factor:
        args.append(f"--prefetch_factor={prefetch_factor}")
    mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]
    if mixed != "no":
        args.append(f"--accelerator.mixed_precision={mixed}")
    if grad_accum_steps > 1:
        args.append(f"--accelerator.gradient_accumulation.steps={grad_accum_steps}")
    return args


def command_line(args: list[str]) -> str:
    return "lerobot-train " + " ".join(shlex.quote(a) for a in args)
