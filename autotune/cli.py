"""autotune: measure the largest batch that trains and the DataLoader setting that keeps the GPU fed.

Commands: run (tune and write a profile, or check it), show, verify (in the real lerobot-train),
history, schedule (nightly), predict (another card), describe (the model)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tqdm.contrib.logging import logging_redirect_tqdm

from autotune import config as C
from autotune.errors import ProbeError, Terminated, UserError
from autotune.estimate_cli import add_estimate_parser, cmd_estimate
from autotune.probe_client import stop_children
from autotune.rl.cli import add_rl_parser, cmd_rl
from autotune.search import DEFAULT_MAX_BATCH
from autotune.units import format_bytes, parse_image_size, parse_size
from probes.catalogue import POLICIES
from probes.protocol import PRECISIONS

log = logging.getLogger("autotune")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _budget(text: str) -> int:
    """run's ``--memory-limit``: a size no smaller than any policy needs (a typo like 1KiB)."""
    size = _size(text)
    if size < C.MIN_MEMORY_LIMIT_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text} is below {format_bytes(C.MIN_MEMORY_LIMIT_BYTES)}, less than any policy's weights "
            "and optimizer take; pass a budget such as 4GiB"
        )
    return size


def _image_size(text: str) -> tuple[int, int]:
    try:
        return parse_image_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _camera_size(text: str) -> tuple[int, int]:
    """``--image-size`` of run's synthetic dataset: a size its videos can be written at."""
    size = _image_size(text)
    try:
        C.check_camera_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--image-size ")) from None
    return size


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1), e.g. 0.1 or 10%")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _policy_name(text: str) -> str:
    name = text.strip().lower()
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a policy name (act, smolvla, diffusion, ...)")
    return name


def _add_policy(parser: argparse.ArgumentParser, rebuilt_only: bool = False) -> None:
    if rebuilt_only:
        parser.add_argument(
            "--policy", required=True, choices=sorted(POLICIES), help="the policy autotune rebuilds"
        )
        return
    parser.add_argument(
        "--policy",
        required=True,
        type=_policy_name,
        metavar="NAME",
        help=f"the LeRobot policy: {', '.join(sorted(POLICIES))} (rebuilt by autotune), or with "
        "--backend lerobot any policy the installed LeRobot has (diffusion, pi0, ...)",
    )


def _add_shape(parser: argparse.ArgumentParser, run: bool) -> None:
    what = "of the synthetic dataset" if run else "of the model"
    parser.add_argument(
        "--state-dim",
        type=_positive_int,
        default=C.DEFAULT_STATE_DIM,
        help=f"state size {what} (default {C.DEFAULT_STATE_DIM})",
    )
    parser.add_argument(
        "--action-dim",
        type=_positive_int,
        default=C.DEFAULT_ACTION_DIM,
        help=f"action size {what} (default {C.DEFAULT_ACTION_DIM})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a policy Config field, e.g. --set n_encoder_layers=2 (repeatable)",
    )


def _add_trainer(parser: argparse.ArgumentParser) -> None:
    trainer = parser.add_mutually_exclusive_group()
    trainer.add_argument(
        "--lerobot",
        default=None,
        metavar="PATH",
        help="the lerobot-train (or the Python, or the environment) that will train "
        "(default: the lerobot-train on PATH)",
    )
    trainer.add_argument(
        "--lerobot-version",
        default=None,
        metavar="VERSION",
        help="the LeRobot version that will train, when it lives on another machine (e.g. 0.6.1)",
    )


def _add_storage(parser: argparse.ArgumentParser, what: str) -> None:
    storage = parser.add_mutually_exclusive_group()
    storage.add_argument("--storage", default=None, metavar="URL", help=what)
    storage.add_argument(
        "--storage-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="read the --storage URL from this file, readable only by you (chmod 600): the "
        "password stays out of the command line and of unit files",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autotune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="measure and write a tuned profile")
    _add_policy(run)
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
    _add_trainer(run)
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
    run.add_argument(
        "--memory-limit",
        type=_budget,
        default=None,
        metavar="SIZE",
        help="memory budget, e.g. 12GiB or 800MiB (default: the GPU's free memory; "
        "on CPU half the available RAM)",
    )
    run.add_argument(
        "--host-memory-limit",
        type=_size,
        default=None,
        metavar="SIZE",
        help="host memory the DataLoader's workers may use; settings over it are never "
        "recommended (default: 80%% of the available RAM)",
    )
    run.add_argument(
        "--headroom",
        type=_fraction,
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
        type=_camera_size,
        default=None,
        metavar="HxW",
        help=f"camera size of the synthetic dataset: even sides, {C.CAMERA_MIN_SIDE} to "
        f"{C.CAMERA_MAX_SIDE} (default 480x640)",
    )
    run.add_argument(
        "--cameras", type=_positive_int, default=None, help="cameras in the synthetic dataset (default 2)"
    )
    _add_shape(run, run=True)
    run.add_argument(
        "--trials",
        type=_positive_int,
        default=C.DEFAULT_TRIALS,
        help=f"trials of the num_workers study (default {C.DEFAULT_TRIALS})",
    )
    run.add_argument(
        "--results", type=Path, default=Path("results"), help="output folder (default ./results)"
    )
    run.add_argument(
        "--probe-timeout",
        type=_seconds,
        default=C.DEFAULT_PROBE_TIMEOUT_S,
        metavar="SECONDS",
        help="kill a probe that has not answered after this long (default 900)",
    )
    run.add_argument(
        "--max-batch",
        type=_positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest batch to consider (default {DEFAULT_MAX_BATCH})",
    )
    run.add_argument(
        "--throughput-points",
        type=_positive_int,
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
        type=_positive_int,
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
        type=_positive_int,
        default=1,
        metavar="N",
        help="tune the batch per GPU for training on N GPUs under DDP (from --device on; N gloo "
        "ranks on the CPU): every probe and trial runs as one torchrun job of N ranks (default 1)",
    )
    _add_storage(
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

    show = sub.add_parser("show", help="print the latest profile")
    _add_policy(show)
    show.add_argument("--results", type=Path, default=Path("results"))
    show.add_argument("--json", action="store_true", help="the profile as JSON")

    predict = sub.add_parser(
        "predict", help="predict the batch for another memory size from the latest profile"
    )
    _add_policy(predict, rebuilt_only=True)
    predict.add_argument(
        "--memory",
        type=_size,
        required=True,
        metavar="SIZE",
        help="a GPU's total memory, e.g. 12GiB (or an allocator budget with --budget)",
    )
    predict.add_argument(
        "--budget",
        action="store_true",
        help="read --memory as an allocator budget like --memory-limit, not a card's size",
    )
    predict.add_argument(
        "--headroom",
        type=_fraction,
        default=None,
        help="headroom for the recommended batch (default: the profile's)",
    )
    predict.add_argument("--results", type=Path, default=Path("results"))
    predict.add_argument("--json", action="store_true", help="a JSON object")

    verify = sub.add_parser(
        "verify", help="run the profile's command in the real lerobot-train and compare what it uses"
    )
    _add_policy(verify)
    verify.add_argument("--results", type=Path, default=Path("results"))
    verify.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="training steps to run (default 30 on CUDA, 6 on CPU; the first is set apart)",
    )
    verify.add_argument(
        "--timeout",
        type=_seconds,
        default=C.DEFAULT_PROBE_TIMEOUT_S,
        metavar="SECONDS",
        help="stop lerobot-train after this long (default 900)",
    )
    verify.add_argument(
        "--lerobot",
        default=None,
        metavar="PATH",
        help="the lerobot-train (or its Python, or its environment) to run (default: the one on PATH)",
    )

    history = sub.add_parser("history", help="a policy's runs over time, and a plot of them")
    _add_policy(history)
    history.add_argument("--results", type=Path, default=Path("results"))

    schedule = sub.add_parser(
        "schedule", help="run autotune nightly: print (or --install) a systemd user timer and a cron line"
    )
    _add_policy(schedule)
    schedule.add_argument("--at", default="03:00", metavar="HH:MM", help="when, every night (default 03:00)")
    schedule.add_argument("--results", type=Path, default=Path("results"))
    schedule.add_argument("--install", action="store_true", help="write the systemd user units")
    schedule.add_argument(
        "run_flags", nargs=argparse.REMAINDER, help="after --: more flags for the nightly autotune run"
    )

    fleet = sub.add_parser(
        "fleet", help="one row per machine and policy from a shared --storage: answer, last tune, regression"
    )
    _add_storage(fleet, "the database the fleet's runs share (default: $AUTOTUNE_STORAGE)")
    fleet.add_argument("--csv", action="store_true", help="CSV on stdout, for pandas")

    describe = sub.add_parser("describe", help="print the model's configuration and parameter counts")
    _add_policy(describe, rebuilt_only=True)
    describe.add_argument("--cameras", type=_positive_int, default=C.DEFAULT_CAMERAS)
    describe.add_argument("--image-size", type=_image_size, default=C.DEFAULT_IMAGE_SIZE, metavar="HxW")
    _add_shape(describe, run=False)
    describe.add_argument("--json", action="store_true", help="a JSON object")

    add_rl_parser(sub)  # autotune rl ppo|rrd (autotune/rl/cli.py)
    add_estimate_parser(sub)  # autotune estimate (autotune/estimate_cli.py)
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="[autotune] %(message)s",
        stream=sys.stderr,
    )
    from autotune import commands

    signal.signal(signal.SIGTERM, _terminated)
    handlers = {
        "run": commands.cmd_run,
        "show": commands.cmd_show,
        "describe": commands.cmd_describe,
        "fleet": commands.cmd_fleet,
        "predict": commands.cmd_predict,
        "verify": commands.cmd_verify,
        "history": commands.cmd_history,
        "schedule": commands.cmd_schedule,
        "rl": cmd_rl,
        "estimate": cmd_estimate,
    }
    try:
        with logging_redirect_tqdm():
            return handlers[args.command](args)
    except UserError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ProbeError as exc:
        print(f"autotune: probe failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        stop_children()  # any probe child a thread still waits on
        print("autotune: terminated; earlier results are intact", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        stop_children()
        print("autotune: interrupted; earlier results are intact", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (piped into head): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
