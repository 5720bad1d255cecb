"""The subcommands: each turns parsed flags into a library call and prints its result on stdout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune import config as C
from autotune.alarm import EXIT_REGRESSION
from autotune.errors import ProbeError, UserError
from autotune.units import format_bytes
from probes import catalogue
from probes.protocol import PRECISIONS, ModelSpec

if TYPE_CHECKING:
    from autotune.trainer import Trainer
    from probes.protocol import Environment


def _overrides(policy: str, pairs: list[str]) -> dict[str, object]:
    try:
        return catalogue.parse_overrides(policy, pairs)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _raw_overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: use KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def resolve_backend(asked: str) -> str:
    """``lerobot`` or ``rebuilt`` for ``--backend``; auto is lerobot where it can be imported."""
    importable = catalogue.lerobot_importable()
    if asked == "lerobot" and not importable:
        raise UserError(
            "--backend lerobot: LeRobot cannot be imported in this Python; install autotune into "
            "your LeRobot environment (pip install autotune there) or use --backend rebuilt"
        )
    if asked == "auto":
        return "lerobot" if importable else "rebuilt"
    return asked


def imported_trainer(lerobot: str | None, lerobot_version: str | None) -> Trainer:
    """The trainer the LeRobot backend measures with: the LeRobot in this Python. ``--lerobot``
    or ``--lerobot-version`` naming another version is refused: the figures would be another's."""
    import sys

    from autotune.trainer import find_trainer, trainer_at

    here = trainer_at(Path(sys.executable), "imported")
    if lerobot is None and lerobot_version is None:
        return here
    named = find_trainer(lerobot, lerobot_version)
    if named.version != here.version:
        raise UserError(
            f"the LeRobot backend measures with lerobot {here.version} (this Python) and "
            f"{'--lerobot' if lerobot else '--lerobot-version'} names {named.version}; run autotune in "
            "that environment, or pass --backend rebuilt"
        )
    return named


def _precisions(text: str | None, device: str) -> list[str] | None:
    from autotune.devices import resolve_precision

    if text is None:
        return None
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names or any(n not in PRECISIONS for n in names):
        raise UserError(f"--compare-precision {text!r}: a comma-separated list of bf16, fp16, fp32")
    return list(dict.fromkeys(resolve_precision(n, device) for n in names))


def prepare_run(
    args: argparse.Namespace, *, nightly: bool = False, environment: Environment | None = None
) -> tuple[C.RunConfig, Environment]:
    """Everything ``autotune run`` checks before it opens the run: the storage, the backend, the
    trainer, the device, the policy's settings at the planned shapes and the whole RunConfig; one
    line (UserError) for what is wrong. ``nightly`` (autotune schedule checking the flags it will
    run with): the same checks, but the storage URL is parsed, not connected to, and nothing is
    cleaned up; torch's environment is still read in a child, as run reads it (unless given), but
    no probe runs."""
    from autotune import fleet
    from autotune.context import check_planned
    from autotune.devices import probe_environment, resolve_device, resolve_precision
    from autotune.lerobot import default_variant
    from autotune.probe_client import remove_orphaned_folders
    from autotune.trainer import find_trainer

    storage = fleet.resolve(args.storage, args.storage_file)
    if storage is not None:
        if nightly:
            fleet.parse(storage)
        else:
            fleet.check(storage)  # reachable, authenticated, its runs table: before any probe
    backend = resolve_backend(args.backend)
    if backend == "lerobot":
        # LeRobot's own parser checks them, in the probe child that builds the policy.
        overrides = _raw_overrides(args.overrides)
        trainer = imported_trainer(args.lerobot, args.lerobot_version)
    else:
        try:
            C.check_rebuilt(args.policy)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        overrides = _overrides(args.policy, args.overrides)
        trainer = find_trainer(args.lerobot, args.lerobot_version)
    if not nightly:
        remove_orphaned_folders()
    if environment is None:
        environment = probe_environment()
    device = resolve_device(args.device, environment)
    device_best = resolve_precision(None, device, environment)  # bf16; fp16 on a GPU without it; fp32 on CPU
    precision, grad_checkpointing = default_variant(trainer, args.policy, C.device_type(device), device_best)
    if args.precision is not None:
        precision = resolve_precision(args.precision, device, environment)
    if args.grad_checkpointing is not None:
        grad_checkpointing = args.grad_checkpointing
    auto = args.precision is None and args.grad_checkpointing is None
    # The mission's answer, measured beside the trainer's: bf16 (fp16 on older GPUs) with gradient
    # checkpointing; on a CPU at the trainer's precision.
    mission = device_best if C.device_type(device) == "cuda" else precision
    if backend == "lerobot" and args.policy not in trainer.abilities.grad_checkpointing_policies:
        auto = False  # LeRobot's own code cannot checkpoint this policy: nothing to measure beside
    try:
        cfg = C.RunConfig(
            policy=args.policy,
            device=device,
            precision=precision,
            grad_checkpointing=grad_checkpointing,
            trainer=trainer,
            mission_precision=mission if auto and not args.trainer_only and not args.compare else None,
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
            policy_overrides=overrides,
            wait=args.wait,
            check=not args.no_check,
            estimate=not args.no_estimate,
            backend=backend,
            gpus=args.gpus,
            storage=storage,
            throughput_points=args.throughput_points,
            soak_steps=args.soak_steps,
            target_batch=args.target_batch,
            compare=args.compare or args.compare_precision is not None,
            compare_precisions=_precisions(args.compare_precision, device),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_planned(cfg)  # the policy's settings at the synthetic dataset's shapes, before it is written
    return cfg, environment


def cmd_run(args: argparse.Namespace) -> int:
    from autotune.pipeline import run
    from autotune.summary import print_profile

    cfg, environment = prepare_run(args)
    trainer = cfg.trainer
    outcome = run(cfg, environment)
    if not outcome.fresh:
        print(f"autotune: the {cfg.policy} profile is up to date (nothing changed); --force re-tunes")
        for note in outcome.notes[1:]:
            print(f"autotune: {note}")
    print_profile(outcome.profile)
    for alert in outcome.alerts:
        print(f"autotune: {alert.text}")
    code = EXIT_REGRESSION if any(a.kind == "regression" for a in outcome.alerts) else 0
    if args.verify:
        from autotune.verify import verify_profile

        code = verify_profile(cfg.results, cfg.policy, lerobot=args.lerobot, trainer=trainer) or code
    return code


def cmd_verify(args: argparse.Namespace) -> int:
    from autotune.verify import verify_profile

    return verify_profile(
        args.results, args.policy, lerobot=args.lerobot, steps=args.steps, timeout_s=args.timeout
    )


def _latest_profile(results: Path, policy: str) -> dict[str, Any]:
    from autotune.profile import profile_path, read_profile

    profile = read_profile(results, policy)  # validated: a bad profile is one line naming the field
    if profile is None:
        raise UserError(
            f"no {policy} profile in {profile_path(results, policy)}; run: autotune run --policy {policy}"
        )
    return profile.to_dict()


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
    if result.max_batch < 1:
        need = model.fixed_bytes + model.per_sample_bytes + model.near_limit_unusable_bytes
        need += 0 if args.budget else model.device_overhead_bytes
        what = "an allocator budget" if args.budget else "a card"
        raise UserError(
            f"{what} of {format_bytes(args.memory)} is too small for {args.policy} as measured: even "
            f"batch 1 needs about {format_bytes(need)}"
        )
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


def cmd_show(args: argparse.Namespace) -> int:
    from autotune.summary import print_profile

    data = _latest_profile(args.results, args.policy)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_profile(data)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from autotune.probe_client import run_probe
    from autotune.summary import print_description
    from probes.protocol import ProbeRequest

    overrides = _overrides(args.policy, args.overrides)
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


def cmd_history(args: argparse.Namespace) -> int:
    from autotune.history import show_history

    return show_history(args.results, args.policy)


def cmd_schedule(args: argparse.Namespace) -> int:
    from autotune.schedule import schedule

    extra = [a for a in args.run_flags if a != "--"]
    return schedule(args.policy, args.at, args.results, extra, args.install)


def cmd_fleet(args: argparse.Namespace) -> int:
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
