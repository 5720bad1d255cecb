"""``autotune fleet``: one row per machine and policy from a shared ``--storage``."""

from __future__ import annotations

import argparse
from typing import Any

from autotune.cli import args as A
from autotune.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    fleet = sub.add_parser(
        "fleet", help="one row per machine and policy from a shared --storage: answer, last tune, regression"
    )
    A.add_storage(fleet, "the database the fleet's runs share (default: $AUTOTUNE_STORAGE)")
    fleet.add_argument("--csv", action="store_true", help="CSV on stdout, for pandas")
    return fleet


def handle(args: argparse.Namespace) -> int:
    from autotune import fleet

    storage = fleet.resolve(args.storage, args.storage_file)
    if storage is None:
        raise UserError(
            f"autotune fleet reads a shared database: pass --storage URL or --storage-file PATH (or set "
            f"{fleet.STORAGE_ENV})"
        )
    fleet.check_exists(storage)  # it only reads: a SQLite file that is not there is not created
    table = fleet.fleet(storage)
    if args.csv:
        print(table.to_csv(index=False), end="")
        return 0
    if table.empty:
        print(f"autotune: no runs in {fleet.shown(storage)} yet")
        return 0
    shown = table.fillna("").astype(str).replace({"nan": "", "None": ""})
    print(shown.to_string(index=False))
    flagged = table[table.regression.astype(str) != ""]
    for _, row in flagged.iterrows():
        print(f"autotune: {row.machine} {row.policy}: {row.regression}")
    return 0
