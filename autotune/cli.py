"""autotune: measure the largest batch that trains and the DataLoader setting that keeps the GPU fed.

Commands: run (tune and write a profile), show, predict (another card), describe (the model)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from autotune import config as C
from autotune.errors import ProbeError, UserError
from autotune.units import format_bytes, parse_image_size, parse_size

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


def _image_size(text: str) -> tuple[int, int]:
    try:
        return parse_image_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _add_policy(parser: argparse.ArgumentParser) -> None:
    from probes.policy import POLICIES

    parser.add_argument(
        "--policy", required=True, choices=sorted(POLICIES), help="the LeRobot policy to tune"
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
        choices=C.PRECISIONS,
        default=None,
        help="autocast precision (default bf16 on CUDA, fp32 on CPU)",
    )
    run.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradient checkpointing of the backbone and transformer layers (default on)",
    )
    run.add_argument(
        "--memory-limit",
        type=_size,
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
        type=_image_size,
        default=None,
        metavar="HxW",
        help="camera size of the synthetic dataset (default 480x640)",
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
    run.add_argument("--max-batch", type=_positive_int, default=8192, help="largest batch to consider")
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
    run.add_argument("--seed", type=int, default=0)

    show = sub.add_parser("show", help="print the latest profile")
    _add_policy(show)
    show.add_argument("--results", type=Path, default=Path("results"))
    show.add_argument("--json", action="store_true", help="the profile as JSON")

    predict = sub.add_parser(
        "predict", help="predict the batch for another memory size from the latest profile"
    )
    _add_policy(predict)
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

    describe = sub.add_parser("describe", help="print the model's configuration and parameter counts")
    _add_policy(describe)
    describe.add_argument("--cameras", type=_positive_int, default=C.DEFAULT_CAMERAS)
    describe.add_argument("--image-size", type=_image_size, default=C.DEFAULT_IMAGE_SIZE, metavar="HxW")
    _add_shape(describe, run=False)
    describe.add_argument("--json", action="store_true", help="a JSON object")
    return parser


def _resolve_device(requested: str | None) -> str:
    from autotune.fingerprint import gpu_info, torch_cuda_version

    if requested is None:
        return "cuda:0" if gpu_info(0) is not None and torch_cuda_version() else "cpu"
    name = requested.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise UserError(f"--device {requested}: use cuda, cuda:N or cpu")
        index = int(index_text)
        if gpu_info(index) is None:
            raise UserError(
                f"--device {requested}: no NVIDIA GPU {index} found (NVML sees none); "
                "run with --device cpu, or check the driver with nvidia-smi"
            )
        if not torch_cuda_version():
            raise UserError(
                f"--device {requested}: the installed torch is a CPU-only build; reinstall a CUDA "
                "build of torch (see README) or run with --device cpu"
            )
        return f"cuda:{index}"
    raise UserError(f"--device {requested}: use cuda, cuda:N or cpu")


def _resolve_precision(requested: str | None, device: str) -> str:
    if device == "cpu":
        return requested or "fp32"
    from autotune.fingerprint import gpu_info

    gpu = gpu_info(int(device.split(":")[1]))
    bf16_ok = gpu is not None and gpu.compute_capability >= (8, 0)
    precision = requested or "bf16"
    if precision == "bf16" and not bf16_ok:
        log.warning(
            "%s cannot compute in bf16 (compute capability < 8.0): using fp16", gpu.name if gpu else device
        )
        return "fp16"
    return precision


def _overrides(policy: str, pairs: list[str]) -> dict[str, object]:
    from probes.policy import parse_overrides, policy_module

    try:
        return parse_overrides(policy_module(policy).Config, pairs)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_run(args: argparse.Namespace) -> int:
    from autotune.runner import Run
    from autotune.summary import print_profile

    device = _resolve_device(args.device)
    try:
        cfg = C.RunConfig(
            policy=args.policy,
            device=device,
            precision=_resolve_precision(args.precision, device),
            grad_checkpointing=args.grad_checkpointing,
            memory_limit_bytes=args.memory_limit,
            host_memory_limit_bytes=args.host_memory_limit,
            headroom=args.headroom,
            dataset=args.dataset,
            image_size=args.image_size,
            cameras=args.cameras,
            state_dim=args.state_dim,
            action_dim=args.action_dim,
            trials=args.trials,
            results=args.results,
            probe_timeout_s=args.probe_timeout,
            max_batch=args.max_batch,
            force=args.force,
            seed=args.seed,
            policy_overrides=_overrides(args.policy, args.overrides),
            throughput_points=args.throughput_points,
            soak_steps=args.soak_steps,
            target_batch=args.target_batch,
            compare=args.compare or args.compare_precision is not None,
            compare_precisions=_precisions(args.compare_precision, device),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    profile, notes = Run(cfg).execute()
    if profile is None:
        from autotune.profile import read_profile

        existing = read_profile(cfg.results, cfg.policy)
        print(f"autotune: the {cfg.policy} profile is up to date (nothing changed); --force re-tunes")
        print_profile(existing)
        return 0
    print_profile(profile.to_dict())
    return 0


def _precisions(text: str | None, device: str) -> list[str] | None:
    if text is None:
        return None
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names or any(n not in C.PRECISIONS for n in names):
        raise UserError(f"--compare-precision {text!r}: a comma-separated list of bf16, fp16, fp32")
    return list(dict.fromkeys(_resolve_precision(n, device) for n in names))


def _latest_profile(results: Path, policy: str) -> dict:
    from autotune.profile import profile_path, read_profile

    data = read_profile(results, policy)
    if data is None:
        raise UserError(
            f"no {policy} profile in {profile_path(results, policy)}; run: autotune run --policy {policy}"
        )
    return data


def cmd_predict(args: argparse.Namespace) -> int:
    from autotune.memory_model import MemoryModel, predict

    data = _latest_profile(args.results, args.policy)
    if not data.get("memory_model"):
        raise UserError(
            f"the {args.policy} profile has no memory model (too few fitting probes); re-run with --force"
        )
    model = MemoryModel.from_dict(data["memory_model"])
    headroom = data["conditions"]["headroom"] if args.headroom is None else args.headroom
    result = predict(model, args.memory, headroom, card=not args.budget)
    cond = data["conditions"]
    if args.json:
        print(
            json.dumps({**result.__dict__, "headroom": headroom, "profile_run_id": data["run_id"]}, indent=2)
        )
        return 0
    h, w = cond["image_size"]
    what = "an allocator budget of" if args.budget else "a card with"
    print(
        f"{args.policy} on {what} {format_bytes(args.memory)}: predicted max batch {result.max_batch} "
        f"(likely between {result.max_batch_low} and {result.max_batch_high}), recommended batch "
        f"{result.recommended_batch} ({headroom:.0%} headroom)"
    )
    print(
        f"  from the memory model measured on {data['fingerprint'].get('gpu_name') or 'CPU'} "
        f"({data['precision']}, checkpointing {'on' if data['grad_checkpointing'] else 'off'}, "
        f"{cond['cameras']} camera(s) {h}x{w}): {format_bytes(model.fixed_bytes)} fixed + "
        f"{format_bytes(model.per_sample_bytes)} per sample"
    )
    if not args.budget and model.device_overhead_bytes:
        print(f"  {format_bytes(model.device_overhead_bytes)} of the card is taken off for the CUDA context")
    measured_total = model.budget_bytes + (model.device_overhead_bytes if not args.budget else 0)
    if args.memory < measured_total:
        print(
            f"  to measure it on this machine instead: autotune run --policy {args.policy} "
            f"--memory-limit {format_bytes(args.memory - (0 if args.budget else model.device_overhead_bytes)).replace(' ', '')}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from autotune.summary import print_profile

    data = _latest_profile(args.results, args.policy)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_profile(data)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from probes.policy import policy_module

    module = policy_module(args.policy)
    try:
        cfg = module.Config(
            cameras=args.cameras,
            image_size=tuple(args.image_size),
            state_dim=args.state_dim,
            action_dim=args.action_dim,
            **_overrides(args.policy, args.overrides),
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{args.policy} configuration: {exc}") from None
    info = module.describe(cfg)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from autotune.summary import print_description

    print_description(args.policy, info)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="[autotune] %(message)s",
        stream=sys.stderr,
    )
    handlers = {"run": cmd_run, "show": cmd_show, "describe": cmd_describe, "predict": cmd_predict}
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ProbeError as exc:
        print(f"autotune: probe failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autotune: interrupted; earlier results are intact", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (piped into head): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
