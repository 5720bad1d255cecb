"""``autotune rl ppo`` and ``autotune rl rrd``: the flags, and the handler that runs them.

Every flag is checked before anything runs or is written: a bad one is one line naming the value
and what would work (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from autotune.cli import args as A
from autotune.errors import UserError
from autotune.rl.ppo import DEFAULT_MINI_EPOCHS, PpoBatch
from autotune.rl.rrd import DEFAULT_ACT_DIM, DEFAULT_TRAIN_BATCHES, RrdBatch
from autotune.rl.spec import (
    DEFAULT_HIDDEN,
    DEFAULT_REWARD_HIDDEN,
    NetSpec,
    default_obs_dtype,
    parse_hidden,
    parse_obs_shape,
)
from autotune.tuning.search import DEFAULT_MAX_BATCH

log = logging.getLogger(__name__)

CPU_BUDGET_SHARE = 0.5  # of the available host memory, as autotune run's default CPU budget
MIN_IMAGE_SIDE = 8  # the CNN encoder's convolutions need at least 8x8 (probes/rl/spec.py)
SAC_HIDDEN = (256, 256)  # the RRD reference's SAC MLPs


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _add_measure_flags(p: argparse.ArgumentParser, hidden: tuple[int, ...]) -> None:

    g = p.add_argument_group("measurement (--measure)")
    g.add_argument("--measure", action="store_true", help="measure in isolated probe children")
    g.add_argument(
        "--hidden",
        default=",".join(map(str, hidden)),
        metavar="W,W,...",
        help=f"hidden layer widths of the MLPs (default {','.join(map(str, hidden))})",
    )
    g.add_argument(
        "--obs-dtype",
        choices=("uint8", "float32"),
        default=None,
        help="observation dtype, also for the bytes counted (default uint8 for HxWxC images, float32 "
        "for vectors)",
    )
    g.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when a GPU is present)")
    g.add_argument(
        "--precision",
        choices=("bf16", "fp16", "fp32"),
        default=None,
        help="autocast precision (default fp32, as the trainers run by default)",
    )
    g.add_argument(
        "--memory-limit",
        type=A.size,
        default=None,
        metavar="SIZE",
        help="memory budget, e.g. 8GiB (default: the GPU's free memory; on CPU half the available RAM)",
    )
    g.add_argument(
        "--headroom",
        type=A.fraction,
        default=0.1,
        help="share of the budget the answer leaves free (default 0.1)",
    )
    g.add_argument("--probe-timeout", type=A.seconds, default=900.0, metavar="SECONDS")
    g.add_argument("--results", type=Path, default=Path("results"), help="output folder (default ./results)")
    g.add_argument("--seed", type=int, default=0)


def add_parser(sub: Any) -> None:
    """Register ``autotune rl {ppo,rrd}`` on the top-level subparsers ``sub``."""
    rl = sub.add_parser("rl", help="batch sizes for RL: PPO minibatches (rl_games), RRD batches")
    rl_sub = rl.add_subparsers(dest="rl_command", required=True, parser_class=type(rl))

    ppo = rl_sub.add_parser("ppo", help="rl_games PPO: the batch, its valid minibatches, the config")
    ppo.add_argument("--num-envs", type=_int, required=True, help="parallel environments (num_actors)")
    ppo.add_argument("--horizon", type=_int, required=True, help="horizon_length: steps per env per update")
    ppo.add_argument(
        "--mini-epochs",
        type=_int,
        default=DEFAULT_MINI_EPOCHS,
        help=f"passes per update (default {DEFAULT_MINI_EPOCHS})",
    )
    ppo.add_argument(
        "--minibatch-size", type=_int, default=None, help="a minibatch to check against the batch"
    )
    obs = ppo.add_mutually_exclusive_group()
    obs.add_argument("--obs-dim", type=_int, default=None, help="vector observation size")
    obs.add_argument("--obs-shape", default=None, metavar="D|HxWxC", help="observation shape, e.g. 64x64x3")
    ppo.add_argument("--act-dim", type=_int, default=None, help="action size (needed with --measure)")
    ppo.add_argument("--json", action="store_true", help="a JSON object")
    _add_measure_flags(ppo, DEFAULT_HIDDEN)

    rrd = rl_sub.add_parser("rrd", help="randomized return decomposition: the coupled batch sizes")
    rrd.add_argument("--batch-size", type=_int, required=True, help="BATCH_SIZE: transitions for Q/policy")
    rrd.add_argument(
        "--rrd-batch-size", type=_int, required=True, help="RRD_BATCH_SIZE: reward-network timesteps"
    )
    rrd.add_argument(
        "--rrd-sample-size", type=_int, required=True, help="RRD_SAMPLE_SIZE: timesteps per subsequence"
    )
    rrd.add_argument(
        "--train-batches",
        type=_int,
        default=DEFAULT_TRAIN_BATCHES,
        help="TRAIN_BATCHES per iteration (default 64)",
    )
    rrd.add_argument(
        "--obs-shape", required=True, metavar="D|HxWxC", help="observation shape, e.g. 256x256x3"
    )
    rrd.add_argument(
        "--act-dim", type=_int, default=DEFAULT_ACT_DIM, help=f"action size (default {DEFAULT_ACT_DIM})"
    )
    rrd.add_argument("--episode-length", type=_int, default=None, help="the shortest episode, in steps")
    rrd.add_argument(
        "--reward-hidden",
        default=",".join(map(str, DEFAULT_REWARD_HIDDEN)),
        metavar="W,W,...",
        help="the reward network's hidden widths (default 256,256)",
    )
    rrd.add_argument(
        "--max-batch",
        type=_int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest size searched (default {DEFAULT_MAX_BATCH})",
    )
    rrd.add_argument("--json", action="store_true", help="a JSON object")
    _add_measure_flags(rrd, SAC_HIDDEN)


def _net(args: argparse.Namespace, obs_shape: tuple[int, ...] | None, act_dim: int | None) -> NetSpec:
    if obs_shape is None or act_dim is None:
        raise UserError(
            "--measure needs the network: --obs-dim N (or --obs-shape HxWxC for images) and --act-dim N"
        )
    if act_dim < 1:
        raise UserError(f"--act-dim {act_dim}: must be at least 1")
    if len(obs_shape) == 3 and min(obs_shape[:2]) < MIN_IMAGE_SIDE:
        raise UserError(
            f"--obs-shape {'x'.join(map(str, obs_shape))}: images must be at least 8x8 for the CNN encoder"
        )
    return NetSpec(
        obs_shape=obs_shape,
        act_dim=act_dim,
        obs_dtype=args.obs_dtype or default_obs_dtype(obs_shape),
        hidden=parse_hidden(args.hidden),
        reward_hidden=parse_hidden(getattr(args, "reward_hidden", "256,256"), "--reward-hidden"),
    )


def _ppo_obs(args: argparse.Namespace) -> tuple[int, ...] | None:
    if args.obs_dim is not None:
        if args.obs_dim < 1:
            raise UserError(f"--obs-dim {args.obs_dim}: must be at least 1")
        return (args.obs_dim,)
    return parse_obs_shape(args.obs_shape) if args.obs_shape is not None else None


def _open(args: argparse.Namespace, net: NetSpec) -> tuple[Any, dict[str, Any], str]:
    """The budget the probes run under, the fingerprint, and the GPU's name ("" on a CPU)."""
    from autotune.machine import fingerprint as fp
    from autotune.machine import host
    from autotune.machine.devices import probe_environment, resolve_device, resolve_precision
    from autotune.rl.measure import Budget
    from autotune.run.config import cuda_index

    environment = probe_environment()
    device = resolve_device(args.device, environment)
    precision = resolve_precision(args.precision or "fp32", device, environment)
    limit = args.memory_limit
    index = cuda_index(device)
    if limit is None and index is not None:
        gpu = fp.gpu_info(index)
        facts = fp.torch_device(environment, index)
        limit = (gpu.memory_free_bytes if gpu else 0) or (facts.total_memory_bytes if facts else 0)
        if not limit:
            raise UserError(f"device {device}: its memory cannot be read; pass --memory-limit")
    if limit is None:
        limit = int(host.available_bytes() * CPU_BUDGET_SHARE)
    budget = Budget(device, precision, limit, args.headroom, args.probe_timeout, args.seed)
    fingerprint = dataclasses.asdict(fp.take(device, environment))
    return budget, fingerprint, fingerprint.get("gpu_name", "")


def _profile(algo: str, run_id: str, fingerprint: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "kind": f"rl-{algo}",
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        **answer,
    }


def _emit(args: argparse.Namespace, answer: dict[str, Any], printer: Any) -> int:
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        printer(answer)
    return 0


def cmd_ppo(args: argparse.Namespace) -> int:
    from autotune.rl import report

    ppo = PpoBatch(args.num_envs, args.horizon, args.mini_epochs)
    if args.minibatch_size is not None:
        ppo.check_minibatch(args.minibatch_size)
    obs_shape = _ppo_obs(args)
    if not args.measure:
        return _emit(args, report.ppo_answer(ppo, args.minibatch_size), report.print_ppo)
    net = _net(args, obs_shape, args.act_dim)
    from autotune.rl.measure import measure_ppo
    from autotune.rl.records import Recorder, run_key, write_rl_profile

    budget, fingerprint, gpu_name = _open(args, net)
    recorder = Recorder(
        args.results,
        "ppo",
        run_key(budget.device, gpu_name, budget.precision, net, budget.memory_limit_bytes),
    )
    log.info("rl ppo: batch %d, %s, on %s", ppo.batch_size, net.describe(), budget.device)
    measured = measure_ppo(ppo, net, budget, recorder)
    answer = report.ppo_answer(ppo, args.minibatch_size, measured, budget, gpu_name, net)
    answer["measured"]["results"] = {
        "csv": str(recorder.path),
        "profile": str(
            write_rl_profile(args.results, "ppo", _profile("ppo", recorder.run_id, fingerprint, answer))
        ),
    }
    return _emit(args, answer, report.print_ppo)


def cmd_rrd(args: argparse.Namespace) -> int:
    from autotune.rl import report

    obs_shape = parse_obs_shape(args.obs_shape)
    rrd = RrdBatch(
        batch_size=args.batch_size,
        rrd_batch_size=args.rrd_batch_size,
        rrd_sample_size=args.rrd_sample_size,
        train_batches=args.train_batches,
        obs_shape=obs_shape,
        act_dim=args.act_dim,
        obs_dtype=args.obs_dtype or default_obs_dtype(obs_shape),
        episode_length=args.episode_length,
    )
    if not args.measure:
        return _emit(args, report.rrd_answer(rrd), report.print_rrd)
    if args.max_batch < 1:
        raise UserError(f"--max-batch {args.max_batch}: must be at least 1")
    net = _net(args, obs_shape, args.act_dim)
    from autotune.rl.measure import measure_rrd
    from autotune.rl.records import Recorder, run_key, write_rl_profile

    budget, fingerprint, gpu_name = _open(args, net)
    recorder = Recorder(
        args.results,
        "rrd",
        run_key(budget.device, gpu_name, budget.precision, net, budget.memory_limit_bytes),
    )
    log.info("rl rrd: %s, on %s", net.describe(), budget.device)
    measured = measure_rrd(rrd, net, budget, recorder, args.max_batch)
    answer = report.rrd_answer(rrd, measured, budget, gpu_name, net)
    answer["measured"]["results"] = {
        "csv": str(recorder.path),
        "profile": str(
            write_rl_profile(args.results, "rrd", _profile("rrd", recorder.run_id, fingerprint, answer))
        ),
    }
    return _emit(args, answer, report.print_rrd)


def handle(args: argparse.Namespace) -> int:
    """The ``rl`` subcommand's handler: ``ppo`` or ``rrd``."""
    return cmd_ppo(args) if args.rl_command == "ppo" else cmd_rrd(args)
