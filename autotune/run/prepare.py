"""Before a run opens: ``autotune run``'s flags resolved into the RunConfig the run then reads.

The storage, the backend, the trainer, the device, the variant and the policy's settings are
decided here, once; anything wrong is one line (UserError) before the first probe."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.errors import UserError
from autotune.run import config as C
from probes import catalogue
from probes.protocol import PRECISIONS

if TYPE_CHECKING:
    from autotune.trainer.versions import Trainer
    from probes.protocol import Environment

log = logging.getLogger(__name__)


def parse_overrides(policy: str, pairs: list[str]) -> dict[str, object]:
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

    from autotune.trainer.versions import find_trainer, trainer_at

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
    from autotune.machine.devices import resolve_precision

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
    from autotune.machine.devices import probe_environment, resolve_device
    from autotune.run.context import check_planned
    from autotune.run.probe_client import remove_orphaned_folders
    from autotune.run.results_folder import check_results_unwritten

    storage = fleet.resolve(args.storage, args.storage_file)
    if storage is not None:
        if nightly:
            fleet.parse(storage)
        else:
            fleet.check(storage)  # reachable, authenticated, its runs table: before any probe
    backend = resolve_backend(args.backend)
    trainer, overrides = _trainer_and_overrides(args, backend)
    check_results_unwritten(args.results, args.policy, storage)  # before torch; a nightly run's too
    if not nightly:
        remove_orphaned_folders()
    if environment is None:
        environment = probe_environment()
    device = resolve_device(args.device, environment)
    precision, grad_checkpointing, mission = _variant(args, trainer, backend, device, environment)
    learned = learned_headroom(args.results, args.policy, args.headroom)
    try:
        cfg = C.RunConfig(
            policy=args.policy,
            device=device,
            precision=precision,
            grad_checkpointing=grad_checkpointing,
            trainer=trainer,
            mission_precision=mission,
            memory_limit_bytes=args.memory_limit,
            host_memory_limit_bytes=args.host_memory_limit,
            headroom=max(args.headroom, learned),
            learned_headroom=learned,
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


def learned_headroom(results: Path, policy: str, asked: float) -> float:
    """The headroom lerobot-train's out-of-memory taught (autotune train), from the latest profile:
    a run tunes with the larger of it and ``asked`` (said in one line); 0 where none was learned."""
    from autotune.outputs.profile import read_profile

    try:
        profile = read_profile(results, policy)
    except UserError:
        return 0.0  # a bad profile is re-tuned, and said so, by the run itself
    learned = profile.learned_headroom if profile is not None else 0.0
    if learned > asked:
        log.info(
            "headroom %.0f%% instead of %.0f%%: lerobot-train ran out of memory at the last profile's "
            "batch (autotune train), so the soak was not enough",
            100 * learned,
            100 * asked,
        )
    return learned


def _trainer_and_overrides(args: argparse.Namespace, backend: str) -> tuple[Trainer, dict[str, object]]:
    """The trainer the answer is for, and the ``--set`` overrides checked by whoever builds the
    policy: LeRobot's own parser in the probe child (the LeRobot backend), or autotune's catalogue."""
    from autotune.trainer.versions import find_trainer

    if backend == "lerobot":
        return imported_trainer(args.lerobot, args.lerobot_version), _raw_overrides(args.overrides)
    try:
        C.check_rebuilt(args.policy)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return find_trainer(args.lerobot, args.lerobot_version), parse_overrides(args.policy, args.overrides)


def _variant(
    args: argparse.Namespace, trainer: Trainer, backend: str, device: str, environment: Environment
) -> tuple[str, bool, str | None]:
    """The precision and checkpointing to tune (the trainer's default unless asked), and the
    mission's precision measured beside it (None when nothing is measured beside)."""
    from autotune.machine.devices import resolve_precision
    from autotune.trainer.command import default_variant

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
    measured_beside = auto and not args.trainer_only and not args.compare
    return precision, grad_checkpointing, mission if measured_beside else None
