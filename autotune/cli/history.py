"""``autotune history``: a policy's runs over time, and a plot of them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotune.cli import args as A


def add_parser(sub: Any) -> argparse.ArgumentParser:
    history = sub.add_parser("history", help="a policy's runs over time, and a plot of them")
    A.add_policy(history)
    history.add_argument("--results", type=Path, default=Path("results"))
    return history


def handle(args: argparse.Namespace) -> int:
    from autotune.nightly.history import show_history

    return show_history(args.results, args.policy)
