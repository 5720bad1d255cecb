"""``autotune schedule``: the same ``autotune run`` every night (a systemd timer, a cron line)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.cli import args as A

if TYPE_CHECKING:
    from probes.protocol import Environment


def add_parser(sub: Any) -> argparse.ArgumentParser:
    schedule = sub.add_parser(
        "schedule", help="run autotune nightly: print (or --install) a systemd user timer and a cron line"
    )
    A.add_policy(schedule)
    schedule.add_argument("--at", default="03:00", metavar="HH:MM", help="when, every night (default 03:00)")
    schedule.add_argument("--results", type=Path, default=Path("results"))
    schedule.add_argument("--install", action="store_true", help="write the systemd user units")
    schedule.add_argument(
        "run_flags", nargs=argparse.REMAINDER, help="after --: more flags for the nightly autotune run"
    )
    return schedule


def handle(args: argparse.Namespace) -> int:
    extra = [a for a in args.run_flags if a != "--"]
    return schedule(args.policy, args.at, args.results, extra, args.install)


def schedule(
    policy: str,
    at_text: str,
    results: Path,
    extra: list[str],
    install: bool,
    environment: Environment | None = None,
) -> int:
    """The nightly run's flags checked exactly as ``autotune run`` checks them, then its units."""
    from autotune.nightly import schedule as nightly

    nightly.parse_time(at_text)
    check_run_flags(policy, results, extra, environment)
    return nightly.schedule(policy, at_text, results, extra, install)


def check_run_flags(
    policy: str, results: Path, extra: list[str], environment: Environment | None = None
) -> None:
    """Refuse, with run's own line, the flags ``autotune run`` would refuse: its parser (an
    unknown flag, a bad value: exit 2 there), then everything it checks before opening the run
    (the policy, the trainer, the device, the settings; the storage URL parsed, not connected to)."""
    from autotune.cli import run as run_command
    from autotune.run.prepare import prepare_run

    parser = A.Parser(prog="autotune")  # run's own parser, as `autotune run` builds it
    run_command.add_parser(parser.add_subparsers(dest="command", required=True, parser_class=A.Parser))
    args = parser.parse_args(["run", "--policy", policy, "--results", str(results), *extra])
    prepare_run(args, nightly=True, environment=environment)
