"""``autotune verify``: run the profile's command in the real lerobot-train and compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotune.cli import args as A
from autotune.run import config as C


def add_parser(sub: Any) -> argparse.ArgumentParser:
    verify = sub.add_parser(
        "verify", help="run the profile's command in the real lerobot-train and compare what it uses"
    )
    A.add_policy(verify)
    verify.add_argument("--results", type=Path, default=Path("results"))
    verify.add_argument(
        "--steps",
        type=A.positive_int,
        default=None,
        help="training steps to run (default 30 on CUDA, 6 on CPU; the first is set apart)",
    )
    verify.add_argument(
        "--timeout",
        type=A.seconds,
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
    return verify


def handle(args: argparse.Namespace) -> int:
    from autotune.trainer.verify import verify_profile

    return verify_profile(
        args.results, args.policy, lerobot=args.lerobot, steps=args.steps, timeout_s=args.timeout
    )
