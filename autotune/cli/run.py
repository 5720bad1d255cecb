"""``autotune run``: tune a policy on this machine, write its profile, print the command to train with."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.cli import args as A
from autotune.nightly.alarm import EXIT_REGRESSION
from autotune.run import config as C
from autotune.tuning.search import DEFAULT_MAX_BATCH
from probes.protocol import PRECISIONS

if TYPE_CHECKING:
    from autotune.run.config import RunConfig
    from autotune.run.pipeline import RunOutcome


def add_parser(sub: Any) -> argparse.ArgumentParser:
    run = sub.add_parser("run", help="measure and write a tuned profile")
    add_run_flags(run)
    return run


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``autotune run`` (``autotune train`` takes them too)."""
    _add_what(parser)
    _add_budget_and_data(parser)
    _add_search(parser)
    _add_sharing(parser)


def _add_what(run: argparse.ArgumentParser) -> None:
    """run's flags: what to tune: the policy, the device, the precision, the trainer."""
    A.add_policy(run)
    run.add_argument(
        "--device", default=None, help="cuda, cuda:N or cpu (default: cuda when a GPU is present)"
    )
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="autocast precision (default: the best your lerobot-train can select on this device: "
        "bf16 on a GPU that has it, else fp16; fp32 on CPU)",
    )
    run.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gradient checkpointing of the backbone and transformer layers (default: on only where "
        "your lerobot-train has it for the policy; bf16 + checkpointing is tuned beside)",
    )
    A.add_trainer(run)
    run.add_argument(
        "--trainer-only",
        action="store_true",
        help="tune only what your lerobot-train can run; skip the bf16 + gradient checkpointing "
        "answer measured beside it",
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="after tuning, run the printed command in the real lerobot-train for a few steps",
    )


def _add_budget_and_data(run: argparse.ArgumentParser) -> None:
    """run's flags: the budgets and the data."""
    run.add_argument(
        "--memory-limit",
        type=A.budget,
        default=None,
        metavar="SIZE",
        help="memory budget, e.g. 12GiB or 800MiB (default: the GPU's free memory; "
        "on CPU half the available RAM)",
    )
    run.add_argument(
        "--host-memory-limit",
        type=A.size,
        default=None,
        metavar="SIZE",
        help="host memory the DataLoader's workers may use; settings over it are never "
        "recommended (default: 80%% of the available RAM)",
    )
    run.add_argument(
        "--headroom",
        type=A.fraction,
        default=C.DEFAULT_HEADROOM,
        help="share of the budget the recommended batch leaves free (default 0.1)",
    )
    run.add_argument(
        "--dataset",
        default=None,
        metavar="PATH|REPO_ID",
        help="a LeRobot dataset root, or a repo id in the local LeRobot cache "
        "(default: a synthetic dataset autotune writes once)",
    )
    run.add_argument(
        "--image-size",
        type=A.camera_size,
        default=None,
        metavar="HxW",
        help=f"camera size of the synthetic dataset: even sides, {C.CAMERA_MIN_SIDE} to "
        f"{C.CAMERA_MAX_SIDE} (default 480x640)",
    )
    run.add_argument(
        "--cameras", type=A.positive_int, default=None, help="cameras in the synthetic dataset (default 2)"
    )
    A.add_shape(run, run=True)
    run.add_argument(
        "--trials",
        type=A.positive_int,
        default=C.DEFAULT_TRIALS,
        help=f"trials of the num_workers study (default {C.DEFAULT_TRIALS})",
    )
    run.add_argument(
        "--results", type=Path, default=Path("results"), help="output folder (default ./results)"
    )


def _add_search(run: argparse.ArgumentParser) -> None:
    """run's flags: how the search, the soak and the study run."""
    run.add_argument(
        "--probe-timeout",
        type=A.seconds,
        default=C.DEFAULT_PROBE_TIMEOUT_S,
        metavar="SECONDS",
        help="kill a probe that has not answered after this long (default 900)",
    )
    run.add_argument(
        "--max-batch",
        type=A.positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest batch to consider (default {DEFAULT_MAX_BATCH})",
    )
    run.add_argument(
        "--throughput-points",
        type=A.positive_int,
        default=None,
        metavar="N",
        help="batch sizes at or below the headroom batch to time (default 3 on CUDA, 2 on CPU)",
    )
    run.add_argument(
        "--soak-steps",
        type=int,
        default=None,
        metavar="N",
        help="steps the recommended batch trains for before it is trusted (default 20 on "
        "CUDA, 5 on CPU; 0 skips the soak)",
    )
    run.add_argument(
        "--target-batch",
        type=A.positive_int,
        default=None,
        metavar="N",
        help="an effective batch to reach: split into batch_size x gradient accumulation steps",
    )
    run.add_argument(
        "--compare",
        action="store_true",
        help="tune with gradient checkpointing on and off, recommend the fastest that fits",
    )
    run.add_argument(
        "--compare-precision",
        default=None,
        metavar="LIST",
        help="with --compare, also compare these precisions, e.g. bf16,fp16,fp32",
    )
    run.add_argument("--force", action="store_true", help="re-tune even if the profile is up to date")
    run.add_argument(
        "--no-estimate",
        action="store_true",
        help="start each search blind, at batch 1 (default: from the estimate counted on the meta "
        "device, seconds on a GPU machine, about 10 s per variant on a small CPU)",
    )
    run.add_argument(
        "--gpus",
        type=A.positive_int,
        default=1,
        metavar="N",
        help="tune the batch per GPU for training on N GPUs under DDP (from --device on; N gloo "
        "ranks on the CPU): every probe and trial runs as one torchrun job of N ranks (default 1)",
    )


def _add_sharing(run: argparse.ArgumentParser) -> None:
    """run's flags: the backend, a shared storage, and how a run meets an earlier one."""
    A.add_storage(
        run,
        "a database shared by a fleet (postgresql://USER:PASSWORD@HOST/DB, any SQLAlchemy URL "
        "Optuna accepts): the worker studies, and each run's row and profile; see autotune fleet "
        "(default: $AUTOTUNE_STORAGE, else SQLite under --results, nothing shared)",
    )
    run.add_argument(
        "--backend",
        choices=("auto", "lerobot", "rebuilt"),
        default="auto",
        help="who builds and trains the policy in the probes: lerobot (the LeRobot installed in this "
        "Python, its own code and torch, any policy it has), rebuilt (autotune's own ACT and SmolVLA, "
        "no LeRobot needed); auto (default): lerobot where it can be imported",
    )
    run.add_argument(
        "--no-check",
        action="store_true",
        help="when the profile is up to date, only show it (default: check it: the recommended batch "
        "for a few steps and the chosen workers for one trial, compared with the history)",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="if another run is tuning this policy into the same results folder, wait for it "
        "(default: say who it is and stop)",
    )
    run.add_argument("--seed", type=int, default=0)


def handle(args: argparse.Namespace) -> int:
    cfg, outcome = tune(args)
    trainer = cfg.trainer
    code = EXIT_REGRESSION if any(a.kind == "regression" for a in outcome.alerts) else 0
    if args.verify:
        from autotune.trainer.verify import verify_profile

        code = verify_profile(cfg.results, cfg.policy, lerobot=args.lerobot, trainer=trainer) or code
    return code


def tune(args: argparse.Namespace, *, show: bool = True) -> tuple[RunConfig, RunOutcome]:
    """The run: the up-to-date profile, or a new one; its summary printed (``show``: even when it
    was up to date), and its alerts."""
    from autotune.outputs.summary import print_profile
    from autotune.run.pipeline import run
    from autotune.run.prepare import prepare_run

    cfg, environment = prepare_run(args)
    outcome = run(cfg, environment)
    if not outcome.fresh:
        print(f"autotune: the {cfg.policy} profile is up to date (nothing changed); --force re-tunes")
        for note in outcome.notes[1:]:
            print(f"autotune: {note}")
    if show or outcome.fresh:
        print_profile(outcome.profile)
    for alert in outcome.alerts:
        print(f"autotune: {alert.text}")
    return cfg, outcome
