"""``autotune predict``: the batch on another card, from the latest profile's memory model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autotune.cli import args as A
from autotune.errors import UserError
from autotune.outputs.profile import require_profile
from autotune.units import format_bytes


def add_parser(sub: Any) -> argparse.ArgumentParser:
    predict = sub.add_parser(
        "predict", help="predict the batch for another memory size from the latest profile"
    )
    A.add_policy(predict, rebuilt_only=True)
    predict.add_argument(
        "--memory",
        type=A.size,
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
        type=A.fraction,
        default=None,
        help="headroom for the recommended batch (default: the profile's)",
    )
    predict.add_argument("--results", type=Path, default=Path("results"))
    predict.add_argument("--json", action="store_true", help="a JSON object")
    return predict


def handle(args: argparse.Namespace) -> int:
    from autotune.tuning.memory_model import MemoryModel, predict

    profile = require_profile(args.results, args.policy)
    if not profile.memory_model:
        raise UserError(
            f"the {args.policy} profile has no memory model (too few fitting probes); re-run with --force"
        )
    model = MemoryModel.from_dict(profile.memory_model)
    headroom = profile.conditions.headroom if args.headroom is None else args.headroom
    result = predict(model, args.memory, headroom, card=not args.budget)
    if result.max_batch < 1:
        need = model.fixed_bytes + model.per_sample_bytes + model.near_limit_unusable_bytes
        need += 0 if args.budget else model.device_overhead_bytes
        what = "an allocator budget" if args.budget else "a card"
        raise UserError(
            f"{what} of {format_bytes(args.memory)} is too small for {args.policy} as measured: even "
            f"batch 1 needs about {format_bytes(need)}"
        )
    cond = profile.conditions
    if args.json:
        print(
            json.dumps({**result.__dict__, "headroom": headroom, "profile_run_id": profile.run_id}, indent=2)
        )
        return 0
    h, w = cond.image_size
    what = "an allocator budget of" if args.budget else "a card with"
    print(
        f"{args.policy} on {what} {format_bytes(args.memory)}: predicted max batch {result.max_batch} "
        f"(likely between {result.max_batch_low} and {result.max_batch_high}), recommended batch "
        f"{result.recommended_batch} ({headroom:.0%} headroom)"
    )
    print(
        f"  from the memory model measured on {profile.fingerprint.get('gpu_name') or 'CPU'} "
        f"({profile.precision}, checkpointing {'on' if profile.grad_checkpointing else 'off'}, "
        f"{cond.cameras} camera(s) {h}x{w}): {format_bytes(model.fixed_bytes)} fixed + "
        f"{format_bytes(model.per_sample_bytes)} per sample"
    )
    if not args.budget and model.device_overhead_bytes:
        print(
            f"  {format_bytes(model.device_overhead_bytes)} of the card is taken off, once, for what "
            "ran outside the allocator here (the CUDA context, cuBLAS, cuDNN, kernels)"
        )
    measured_total = model.budget_bytes + (model.device_overhead_bytes if not args.budget else 0)
    if args.memory < measured_total:
        # --memory-limit is a card's size: the probes take what runs outside the allocator off it.
        limit = args.memory + (model.device_overhead_bytes if args.budget else 0)
        print(
            f"  to measure it on this machine instead: autotune run --policy {args.policy} "
            f"--memory-limit {format_bytes(limit).replace(' ', '')}"
        )
    return 0
