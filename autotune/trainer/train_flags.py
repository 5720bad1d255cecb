"""The flags ``autotune train`` gives lerobot-train: the tuned ones merged with the user's, and a resume.

Pure logic over argument lists. A flag is ``--name=value`` or ``--name value`` (draccus, LeRobot's
parser, reads both). Where the user gave a flag that autotune tuned, the user's wins and one line
says which tuned value it replaced. The dataset's two flags go together (a repo id without a root
drops the tuned root), and so do ``--policy.type`` and ``--policy.path``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune.errors import UserError

# Flags that name one thing together: the user's one replaces all the tuned ones.
TOGETHER = ({"dataset.repo_id", "dataset.root"}, {"policy.type", "policy.path"})
LOWER_BY = 0.10  # each out-of-memory leaves this much more of the budget free than the failed batch


@dataclass
class Flag:
    name: str  # without the dashes: "batch_size", "dataset.root"
    value: str | None  # None: a flag given without a value

    @property
    def text(self) -> str:
        return f"--{self.name}" if self.value is None else f"--{self.name}={self.value}"


def parse_flags(args: Sequence[str]) -> list[Flag]:
    """``args`` as flags; anything that is not a ``--flag`` is an error naming it."""
    flags: list[Flag] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise UserError(
                f"lerobot-train takes --name=value flags after --, and {arg!r} is not one; "
                "e.g. autotune train --policy act -- --dataset.repo_id=USER/DATA --steps=100000"
            )
        name, eq, value = arg[2:].partition("=")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, eq = args[i + 1], "="
            i += 1
        flags.append(Flag(name, value if eq else None))
        i += 1
    return flags


def value_of(flags: Sequence[Flag], name: str) -> str | None:
    """The last value given for ``name`` (draccus keeps the last one), or None."""
    found = [f.value for f in flags if f.name == name]
    return found[-1] if found else None


@dataclass
class Merged:
    args: list[str]
    env: dict[str, str]
    replaced: list[str] = field(default_factory=list)  # one line per tuned value the user's replaced


def merge(
    tuned_args: Sequence[str],
    tuned_env: Mapping[str, str],
    user_args: Sequence[str],
    user_env: Mapping[str, str],
) -> Merged:
    """The tuned flags and environment with the user's over them."""
    tuned, user = parse_flags(tuned_args), parse_flags(user_args)
    given = {f.name for f in user}
    dropped = set().union(*(group for group in TOGETHER if group & given))
    replaced: list[str] = []
    args: list[str] = []
    for flag in tuned:
        if flag.name in given or flag.name in dropped:
            mine = value_of(user, flag.name)
            if flag.name not in given:
                replaced.append(f"{flag.text} left out: you named the {flag.name.split('.')[0]} yourself")
            elif mine != flag.value:
                replaced.append(f"--{flag.name}={mine} (yours) replaces the tuned {flag.text}")
            continue
        args.append(flag.text)
    args += [f.text for f in user]
    env = dict(tuned_env)
    for name, value in tuned_env.items():
        if name in user_env and user_env[name] != value:
            replaced.append(f"{name}={user_env[name]} (yours) replaces the tuned {name}={value}")
            env[name] = user_env[name]
    return Merged(args=args, env=env, replaced=replaced)


def dataset_of(user_args: Sequence[str]) -> str | None:
    """The dataset the user trains on, as ``autotune run --dataset`` takes it: the root where given
    (a folder), else the repo id (found in the local LeRobot cache)."""
    flags = parse_flags(user_args)
    return value_of(flags, "dataset.root") or value_of(flags, "dataset.repo_id")


def default_output_dir(policy: str, now: dt.datetime | None = None) -> str:
    """Where lerobot-train would write by itself (``outputs/train/DATE/TIME_JOB``), named up front
    so that a restart can find its checkpoints."""
    now = now or dt.datetime.now()
    return f"outputs/train/{now:%Y-%m-%d}/{now:%H-%M-%S}_{policy}"


def lower_batch(batch: int, memory_model: Mapping[str, Any] | None, budget_bytes: int) -> int:
    """The batch to restart with after ``batch`` ran out of memory: the largest whose predicted peak
    (the profile's memory model) leaves :data:`LOWER_BY` more of the budget free than ``batch``'s,
    but never below half of ``batch`` (where the fixed memory dominates, a batch frees little, and
    the next restart goes lower again); without a model, ``batch`` less :data:`LOWER_BY` and a
    fifth. 0 where nothing smaller is left."""
    per_sample = float((memory_model or {}).get("per_sample_bytes") or 0)
    if per_sample > 0 and budget_bytes > 0:
        lower = math.floor(batch - LOWER_BY * budget_bytes / per_sample)
    else:
        lower = math.floor(batch * (1 - LOWER_BY - 0.2))
    return max(0, min(max(lower, batch // 2), batch - 1))


def keep_effective(effective: int, batch: int) -> tuple[int, int]:
    """(batch, accumulation steps) for the effective batch ``effective`` at ``batch`` or less:
    the largest batch that divides it from three quarters of ``batch`` up, else ``batch`` with the
    accumulation rounded up."""
    for size in range(batch, max(1, math.ceil(batch * 0.75)) - 1, -1):
        if effective % size == 0:
            return size, effective // size
    return batch, math.ceil(effective / batch)


def resume_args(config_path: str, batch: int, accumulation: tuple[str, int] | None = None) -> list[str]:
    """The flags that resume from a checkpoint's ``train_config.json`` at ``batch`` (LeRobot 0.3
    to 0.6.1 and main take a new ``--batch_size`` on ``--resume`` and log that the data order
    resumes at the right epoch)."""
    args = [f"--config_path={config_path}", "--resume=true", f"--batch_size={batch}"]
    if accumulation is not None:
        args.append(f"{accumulation[0]}={accumulation[1]}")
    return args
