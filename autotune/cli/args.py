"""The argument types and flag groups the subcommands share: a bad value is one line, exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from autotune.run import config as C
from autotune.units import format_bytes, parse_image_size, parse_size
from probes.catalogue import POLICIES


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def budget(text: str) -> int:
    """run's ``--memory-limit``: a size no smaller than any policy needs (a typo like 1KiB)."""
    value = size(text)
    if value < C.MIN_MEMORY_LIMIT_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text} is below {format_bytes(C.MIN_MEMORY_LIMIT_BYTES)}, less than any policy's weights "
            "and optimizer take; pass a budget such as 4GiB"
        )
    return value


def image_size(text: str) -> tuple[int, int]:
    try:
        return parse_image_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def camera_size(text: str) -> tuple[int, int]:
    """``--image-size`` of run's synthetic dataset: a size its videos can be written at."""
    shape = image_size(text)
    try:
        C.check_camera_size(shape)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--image-size ")) from None
    return shape


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1), e.g. 0.1 or 10%")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def policy_name(text: str) -> str:
    name = text.strip().lower()
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a policy name (act, smolvla, diffusion, ...)")
    return name


def add_policy(parser: argparse.ArgumentParser, rebuilt_only: bool = False) -> None:
    if rebuilt_only:
        parser.add_argument(
            "--policy", required=True, choices=sorted(POLICIES), help="the policy autotune rebuilds"
        )
        return
    parser.add_argument(
        "--policy",
        required=True,
        type=policy_name,
        metavar="NAME",
        help=f"the LeRobot policy: {', '.join(sorted(POLICIES))} (rebuilt by autotune), or with "
        "--backend lerobot any policy the installed LeRobot has (diffusion, pi0, ...)",
    )


def add_shape(parser: argparse.ArgumentParser, run: bool) -> None:
    what = "of the synthetic dataset" if run else "of the model"
    parser.add_argument(
        "--state-dim",
        type=positive_int,
        default=C.DEFAULT_STATE_DIM,
        help=f"state size {what} (default {C.DEFAULT_STATE_DIM})",
    )
    parser.add_argument(
        "--action-dim",
        type=positive_int,
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


def add_trainer(parser: argparse.ArgumentParser) -> None:
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


def add_storage(parser: argparse.ArgumentParser, what: str) -> None:
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
