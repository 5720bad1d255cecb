"""autotune estimate: the batch a card would take, counted on the meta device in seconds, no GPU.

autotune estimate --policy act --cameras 3 --image-size 480x640 --memory 12GiB
autotune estimate --policy act                  # a table: 8 to 80 GiB x precision x checkpointing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autotune import estimate as E
from autotune.cli import args as A
from autotune.errors import ProbeError, UserError
from autotune.estimate import terms as T
from autotune.run import config as C
from autotune.units import format_bytes
from probes import catalogue
from probes.protocol import PRECISIONS, ModelSpec

log = logging.getLogger(__name__)

PARALLEL_CHILDREN = 4
TABLE_PRECISIONS = ("bf16", "fp32")  # fp16 keeps the same bytes as bf16 under autocast


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``autotune estimate`` on the CLI's subparsers."""

    parser = sub.add_parser(
        "estimate",
        help="estimate the batch a card would take, without the card (meta device, seconds)",
        description=__doc__.splitlines()[0],
    )
    A.add_policy(parser)
    parser.add_argument(
        "--memory",
        type=A.size,
        default=None,
        metavar="SIZE",
        help="a card's memory, e.g. 12GiB (default: a table over 8, 12, 16, 24, 32, 48 and 80 GiB)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="autocast precision (default: bf16 and fp32)"
    )
    parser.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gradient checkpointing (default: both)",
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="the device the estimate is for: a CUDA card (default), or a CPU's memory",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="PATH|REPO_ID",
        help="a LeRobot dataset (its metadata only) fixing cameras, image size, state and action sizes",
    )
    parser.add_argument(
        "--image-size", type=A.image_size, default=None, metavar="HxW", help="default 480x640"
    )
    parser.add_argument("--cameras", type=A.positive_int, default=None, help="default 2")
    A.add_shape(parser, run=True)
    parser.add_argument(
        "--headroom", type=A.fraction, default=C.DEFAULT_HEADROOM, help="left free by the recommended batch"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="where GPU profiles that calibrate the terms are found (default ./results)",
    )
    parser.add_argument("--json", action="store_true", help="a JSON object")
    return parser


def _spec(args: argparse.Namespace, grad_checkpointing: bool) -> ModelSpec:
    try:
        overrides = catalogue.parse_overrides(args.policy, args.overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    cameras, image_size = args.cameras or C.DEFAULT_CAMERAS, args.image_size or C.DEFAULT_IMAGE_SIZE
    state_dim, action_dim = args.state_dim, args.action_dim
    if args.dataset is not None:
        if args.image_size is not None or args.cameras is not None:
            raise UserError("--image-size and --cameras come from the dataset with --dataset")
        from autotune.run.datasets import read_dataset

        info = read_dataset(args.dataset, None)
        shapes = {tuple(s[:2]) for s in info.camera_shapes.values()}
        if len(shapes) != 1:
            raise UserError(f"dataset {info.root}: needs cameras of one size, found {sorted(shapes)}")
        cameras, image_size = info.cameras, shapes.pop()
        state_dim, action_dim = info.state_dim, info.action_dim
    overrides.pop("gradient_checkpointing", None)
    spec = ModelSpec(
        policy=args.policy,
        cameras=cameras,
        image_size=(int(image_size[0]), int(image_size[1])),
        state_dim=state_dim,
        action_dim=action_dim,
        gradient_checkpointing=grad_checkpointing,
        overrides=overrides,
    )
    try:
        catalogue.build_config(spec)
    except ValueError as exc:
        raise UserError(f"{args.policy} configuration: {exc}") from None
    return spec


def count(specs: list[tuple[ModelSpec, str]], device: str) -> list[E.Estimate]:
    """One estimate child per (model, precision), as many at once as there are cores (up to 4)."""
    from autotune.run import probe_client

    def one(item: tuple[ModelSpec, str]) -> E.Estimate:
        spec, precision = item
        result = probe_client.run_probe(E.estimate_request(spec, device, precision), E.ESTIMATE_TIMEOUT_S)
        try:
            return E.from_result(result, spec)
        except ValueError as exc:
            raise ProbeError(f"estimating {spec.policy} at {precision}: {exc}") from None

    workers = max(1, min(len(specs), os.cpu_count() or 1, PARALLEL_CHILDREN))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(one, specs))
    except KeyboardInterrupt:  # Terminated (SIGTERM) too
        # SIGTERM or Ctrl-C reaches this thread only: kill the children the others wait on (their
        # threads then end at once), rather than wait for them in the pool's shutdown.
        probe_client.stop_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def handle(args: argparse.Namespace) -> int:
    precisions = [args.precision] if args.precision else list(TABLE_PRECISIONS)
    checkpointing = [args.grad_checkpointing] if args.grad_checkpointing is not None else [False, True]
    specs = {gc: _spec(args, gc) for gc in checkpointing}
    estimates = count([(specs[gc], p) for p in precisions for gc in checkpointing], args.device)
    terms = [
        T.calibrate(T.default_terms(est), est, specs[est.grad_checkpointing], args.results)
        for est in estimates
    ]
    sizes = [args.memory] if args.memory is not None else [g * E.GiB for g in E.CARD_SIZES_GIB]
    cards = [
        E.predict_card(est, t, size, args.headroom)
        for size in sizes
        for est, t in zip(estimates, terms, strict=True)
    ]
    if args.memory is not None and all(c.max_batch_size < 1 for c in cards):
        pairs = list(zip(estimates, terms, strict=True))
        est, t = min(pairs, key=lambda pair: E.peak_bytes(pair[0], pair[1], 1) + pair[1].outside())
        fits = E.smallest_card(est, t)
        raise UserError(
            f"a {format_bytes(args.memory)} card is too small for {args.policy}: even batch 1 needs about "
            f"{format_bytes(E.peak_bytes(est, t, 1) + t.outside())} ({est.precision}, checkpointing "
            f"{'on' if est.grad_checkpointing else 'off'}); "
            + (f"the smallest common card that fits is {fits} GiB" if fits else "none of 8 to 80 GiB fits")
        )
    if args.json:
        print(json.dumps(as_json(args, specs, estimates, terms, cards), indent=2))
        return 0
    print_estimate(args, specs, estimates, terms, cards)
    return 0


def as_json(
    args: argparse.Namespace,
    specs: dict[bool, ModelSpec],
    estimates: list[E.Estimate],
    terms: list[T.Terms],
    cards: list[E.CardPrediction],
) -> dict[str, Any]:
    first, first_terms = estimates[0], terms[0]
    spec = specs[first.grad_checkpointing]
    return {
        "policy": args.policy,
        "device": args.device,
        "cameras": spec.cameras,
        "image_size": list(spec.image_size),
        "state_dim": spec.state_dim,
        "action_dim": spec.action_dim,
        "precision": first.precision,
        "grad_checkpointing": first.grad_checkpointing,
        "fixed_bytes": int(first.fixed_bytes),
        "per_sample_bytes": int(first.per_sample_bytes),
        "overhead_bytes": first_terms.total(),
        "fragmentation_share": first_terms.fragmentation_share,
        "terms": [asdict(t) for t in first_terms.terms],
        "calibrated_from": first_terms.calibrated_from,
        "headroom": args.headroom,
        "variants": [
            {
                "precision": est.precision,
                "grad_checkpointing": est.grad_checkpointing,
                "fixed_bytes": int(est.fixed_bytes),
                "per_sample_bytes": int(est.per_sample_bytes),
                "overhead_bytes": t.total(),
                "weights_bytes": est.weights_bytes,
                "optimizer_state_bytes": est.optimizer_state_bytes,
                "points": [list(p) for p in est.points],
            }
            for est, t in zip(estimates, terms, strict=True)
        ],
        "cards": [asdict(c) for c in cards],
    }


def print_estimate(
    args: argparse.Namespace,
    specs: dict[bool, ModelSpec],
    estimates: list[E.Estimate],
    terms: list[T.Terms],
    cards: list[E.CardPrediction],
) -> None:
    spec = next(iter(specs.values()))
    h, w = spec.image_size
    where = "a CUDA card" if args.device == "cuda" else "a CPU's memory"
    print(
        f"{args.policy}, {spec.cameras} camera(s) {h}x{w}, state {spec.state_dim}, action "
        f"{spec.action_dim}: estimated for {where} on the meta device (no GPU, no data)"
    )
    for est in estimates:
        print(f"  {E.describe_line(est)}")
    print()
    print(f"{'memory':>9}  {'precision':<9}  {'checkpointing':<13}  {'max batch':>9}  {'recommended':>11}")
    for card in cards:
        print(
            f"{format_bytes(card.memory_bytes):>9}  {card.precision:<9}  "
            f"{'on' if card.grad_checkpointing else 'off':<13}  {card.max_batch_size:>9}  {card.batch_size:>11}"
        )
    print(f"  (recommended: the largest batch that leaves {args.headroom:.0%} of the budget free)")
    print()
    first = terms[0]
    print(f"on top of the live tensors: {format_bytes(first.total())}")
    for term in first.terms:
        where = "inside the allocator" if term.inside_allocator else "off the card"
        print(f"  {term.name:<20} {format_bytes(term.bytes):>11}  {where}: {term.source}")
    for note in first.notes:
        print(f"  {note}")
    if first.calibrated_from is None and args.device == "cuda":
        print(f"  (no GPU profile under {args.results}: defaults; an autotune run on a GPU calibrates them)")
