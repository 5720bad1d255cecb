"""The trainer autotune answers for: the ``lerobot-train`` command that reproduces a tuned setting."""

from __future__ import annotations

import shlex


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
