"""``autotune describe``: the model's configuration and parameter counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from autotune.cli import args as A
from autotune.errors import ProbeError, UserError
from autotune.run import config as C
from autotune.run.prepare import parse_overrides
from probes import catalogue
from probes.protocol import ModelSpec


def add_parser(sub: Any) -> argparse.ArgumentParser:
    describe = sub.add_parser("describe", help="print the model's configuration and parameter counts")
    A.add_policy(describe, rebuilt_only=True)
    describe.add_argument("--cameras", type=A.positive_int, default=C.DEFAULT_CAMERAS)
    describe.add_argument("--image-size", type=A.image_size, default=C.DEFAULT_IMAGE_SIZE, metavar="HxW")
    A.add_shape(describe, run=False)
    describe.add_argument("--json", action="store_true", help="a JSON object")
    return describe


def handle(args: argparse.Namespace) -> int:
    from autotune.outputs.summary import print_description
    from autotune.run.probe_client import run_probe
    from probes.protocol import ProbeRequest

    overrides = parse_overrides(args.policy, args.overrides)
    spec = ModelSpec(
        policy=args.policy,
        cameras=args.cameras,
        image_size=tuple(args.image_size),
        state_dim=args.state_dim,
        action_dim=args.action_dim,
        gradient_checkpointing=bool(overrides.pop("gradient_checkpointing", True)),
        overrides=overrides,
    )
    try:
        catalogue.build_config(spec)
    except ValueError as exc:
        raise UserError(f"{args.policy} configuration: {exc}") from None
    result = run_probe(ProbeRequest(kind="describe", model=spec), C.DEFAULT_PROBE_TIMEOUT_S)
    if result.description is None:
        raise ProbeError(f"describing {args.policy} failed: {result.message or result.status}")
    info = result.description
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print_description(args.policy, info)
    return 0
