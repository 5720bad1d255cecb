"""``autotune show``: the latest profile, as the run printed it (or JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autotune.cli import args as A
from autotune.outputs.profile import require_profile


def add_parser(sub: Any) -> argparse.ArgumentParser:
    show = sub.add_parser("show", help="print the latest profile")
    A.add_policy(show)
    show.add_argument("--results", type=Path, default=Path("results"))
    show.add_argument("--json", action="store_true", help="the profile as JSON")
    return show


def handle(args: argparse.Namespace) -> int:
    from autotune.outputs.summary import print_profile

    profile = require_profile(args.results, args.policy)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2))
    else:
        print_profile(profile)
    return 0
