"""The ``lerobot-train`` command that reproduces a tuned setting, in the version that will run it.

A command is built from the trainer's :class:`~autotune.trainer.versions.Abilities` only: a flag that
version does not have is never printed. Where the version cannot reproduce what was measured (a
precision it cannot select, gradient checkpointing or accumulation it does not have, a dataset
format it cannot read) the command says so in its ``caveats``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from autotune.machine.fingerprint import allocator_env
from autotune.run.config import cuda_index
from autotune.trainer.versions import Trainer

# What the probe children run with on a CPU (see autotune.run.probe_client): glibc hands large blocks
# straight back, so the resident set follows the tensors. The trainer must run the same way for
# the CPU budget to hold for it (measured: lerobot-train 0.6.1, cut-down ACT at batch 64, grew
# 1137 MiB without these and 787 MiB with them).
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


@dataclass(frozen=True)
class Setting:
    """What the trainer should train with, as autotune measured it."""

    policy: str
    policy_args: tuple[str, ...]  # --policy.type=... and the policy's settings
    dataset_repo_id: str
    dataset_root: str | None
    dataset_format: str  # "v3.0" or "v2.1"
    device: str  # "cpu" or "cuda:N"
    precision: str
    grad_checkpointing: bool
    batch_size: int
    num_workers: int
    prefetch_factor: int | None
    grad_accum_steps: int = 1
    gpus: int = 1  # DDP ranks, one per GPU; batch_size is per GPU
    # The videos' decoder as measured, and the one the trainer picks by itself ("" where unknown):
    # where they differ the command names the measured one (--dataset.video_backend).
    video_backend: str = ""
    trainer_video_backend: str = ""


@dataclass
class Command:
    """A lerobot-train command: environment, arguments, and why it would not reproduce the numbers."""

    trainer: str  # "lerobot-train 0.6.1"
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    # Several GPUs: what starts the ranks, ending with the trainer (``accelerate launch
    # --num_processes=2 $(which lerobot-train)``); empty for one process.
    launcher: str = ""

    @property
    def reproduces(self) -> bool:
        return not self.caveats

    @property
    def text(self) -> str:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        line = (self.launcher or "lerobot-train") + " " + " ".join(shlex.quote(a) for a in self.args)
        return f"{prefix} {line}" if prefix else line


def visible_device(device: str, count: int = 1) -> dict[str, str]:
    """The environment that makes ``cuda:N`` (and the ``count - 1`` GPUs after it) the trainer's
    only GPUs (lerobot-train trains on the first visible one and ignores the index in
    --policy.device from 0.4 on)."""
    index = cuda_index(device)
    if index is None:
        return {}
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    wanted = range(index, index + count)
    chosen = [visible[i] if i < len(visible) else str(i) for i in wanted]
    if not visible and index == 0:
        return {}
    if not all(c.isdigit() for c in chosen):
        return {"CUDA_VISIBLE_DEVICES": ",".join(chosen)}  # UUIDs or MIG identifiers name devices anywhere
    # A number counts GPUs the way autotune's probes counted them (bus order), not CUDA's default.
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(chosen)}


def reproducible_precisions(trainer: Trainer, device_type: str) -> list[str]:
    """The precisions this trainer can train in on ``device_type`` (fp32 always)."""
    return ["fp32", *trainer.abilities.precision.get(device_type, {})]


def command(trainer: Trainer, s: Setting) -> Command:
    """The command that trains ``s`` in ``trainer``, with what it cannot reproduce."""
    ab = trainer.abilities
    device_type = "cpu" if cuda_index(s.device) is None else "cuda"
    out = Command(trainer=trainer.label, env=visible_device(s.device, s.gpus))
    if s.gpus > 1:
        if ab.multi_gpu.startswith("not supported"):
            out.caveats.append(
                f"{trainer.label} trains on one GPU only: this command trains batch {s.batch_size} on "
                f"one, not on {s.gpus}"
            )
        else:
            out.launcher = ab.multi_gpu.replace("=N", f"={s.gpus}").removesuffix(" ...")
    if device_type == "cpu":
        out.env.update(CPU_MALLOC_ENV)
    else:
        out.env.update(allocator_env())  # the caching allocator's settings the probes ran with
    args = [f"--dataset.repo_id={s.dataset_repo_id}"]
    if s.dataset_root:
        args.append(f"--dataset.root={s.dataset_root}")
    args += list(s.policy_args)
    args += [f"--policy.device={device_type}", "--policy.push_to_hub=false"]
    args += [f"--batch_size={s.batch_size}", f"--num_workers={s.num_workers}"]
    if s.num_workers > 0 and s.prefetch_factor and ab.prefetch_flag:
        args.append(f"--prefetch_factor={s.prefetch_factor}")
    if s.video_backend and s.video_backend != s.trainer_video_backend:
        args.append(f"--dataset.video_backend={s.video_backend}")
    how = ab.precision.get(device_type, {}).get(s.precision)
    if s.precision != "fp32":
        if how is None:
            out.caveats.append(
                f"{trainer.label} cannot train in {s.precision} on {device_type.upper()}; this command "
                "trains in fp32, which needs more memory than was measured"
            )
        elif how.startswith("flag:"):
            args.append(how.removeprefix("flag:"))
        else:
            name, _, value = how.removeprefix("env:").partition("=")
            out.env[name] = value
    if s.grad_checkpointing:
        if s.policy in ab.grad_checkpointing_policies:
            args.append("--policy.gradient_checkpointing=true")
        else:
            out.caveats.append(
                f"{trainer.label} has no gradient checkpointing for {s.policy}: the batch was measured "
                "with it, and without it the same batch needs more memory than the budget"
            )
    if s.grad_accum_steps > 1:
        if ab.grad_accumulation_flag:
            args.append(f"{ab.grad_accumulation_flag}={s.grad_accum_steps}")
        else:
            out.caveats.append(
                f"{trainer.label} has no gradient accumulation: this trains batch {s.batch_size}, "
                f"not the effective batch {s.batch_size * s.grad_accum_steps}; LeRobot main (after "
                f"0.6.1) would, with --accelerator.gradient_accumulation.steps={s.grad_accum_steps}"
            )
    if s.dataset_format != ab.dataset_format:
        out.caveats.append(
            f"{trainer.label} reads {ab.dataset_format} datasets and this one is {s.dataset_format}"
        )
    precision_env = out.env.get("ACCELERATE_MIXED_PRECISION")
    if out.launcher.startswith("accelerate launch") and precision_env:
        # accelerate launch sets ACCELERATE_MIXED_PRECISION for its processes from its own
        # --mixed_precision (default no), over the environment's: the launcher must carry it.
        del out.env["ACCELERATE_MIXED_PRECISION"]
        out.launcher = out.launcher.replace(
            "accelerate launch", f"accelerate launch --mixed_precision={precision_env}", 1
        )
    out.args = args
    return out


def default_variant(trainer: Trainer, policy: str, device_type: str, best_precision: str) -> tuple[str, bool]:
    """The precision and checkpointing a run tunes by default: what ``trainer`` reproduces.

    ``best_precision`` is the device's own best (bf16 on a GPU that computes it, fp16 on older
    GPUs, fp32 on a CPU); the trainer's choice is the best it can select at or below it.
    """
    can = reproducible_precisions(trainer, device_type)
    order = ["bf16", "fp16", "fp32"] if best_precision == "bf16" else ["fp16", "fp32"]
    if best_precision == "fp32":
        order = ["fp32"]
    precision = next(p for p in order if p in can)
    return precision, policy in trainer.abilities.grad_checkpointing_policies


def can_reproduce(
    trainer: Trainer, policy: str, device_type: str, precision: str, grad_checkpointing: bool
) -> bool:
    """Whether ``trainer`` can train at ``precision`` with (or without) gradient checkpointing."""
    if precision not in reproducible_precisions(trainer, device_type):
        return False
    return not grad_checkpointing or policy in trainer.abilities.grad_checkpointing_policies


# Where gradient checkpointing for a policy is on its way into LeRobot (open pull requests).
PENDING_CHECKPOINTING = {"act": "pull request #4149", "smolvla": "pull request #4150"}
