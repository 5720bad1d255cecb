"""``autotune train``: lerobot-train at the tuned settings, watched, restarted when it runs out of memory."""

from __future__ import annotations

import argparse
from typing import Any

from autotune.cli.run import add_run_flags
from autotune.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    train = sub.add_parser(
        "train",
        help="launch lerobot-train at the tuned settings (tuning first where the profile is missing or "
        "stale), watch it, and restart it from its checkpoint at a lower batch if it runs out of memory",
        description="autotune train [run flags] -- [lerobot-train flags]: the run flags choose and "
        "tune the profile as autotune run does; the flags after -- go to lerobot-train and win over "
        "the tuned ones (one line says which tuned value each replaced)",
    )
    add_run_flags(train)
    train.add_argument(
        "trainer_args",
        nargs=argparse.REMAINDER,
        help="after --: lerobot-train's own flags, e.g. --steps=100000 --save_freq=5000",
    )
    return train


def user_flags(args: argparse.Namespace) -> list[str]:
    """The flags after ``--``, checked against the run flags they must agree with."""
    from autotune.trainer.train_flags import dataset_of, parse_flags, value_of

    rest = list(args.trainer_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    flags = parse_flags(rest)
    policy_type = value_of(flags, "policy.type")
    if policy_type is not None and policy_type != args.policy:
        raise UserError(
            f"--policy {args.policy} and --policy.type={policy_type} after -- name different policies; "
            "give the same one (the profile is tuned for --policy)"
        )
    dataset = dataset_of(rest)
    if args.dataset is not None and dataset is not None and args.dataset != dataset:
        raise UserError(
            f"--dataset {args.dataset} and the dataset after -- ({dataset}) differ; give it once, after --"
        )
    if args.dataset is None:
        args.dataset = dataset  # the profile is tuned on the dataset the training reads
    return rest


def handle(args: argparse.Namespace) -> int:
    from autotune.cli.run import tune
    from autotune.trainer.train import train

    rest = user_flags(args)
    args.no_check = True  # an up-to-date profile is used as it is: the training itself is watched
    cfg, outcome = tune(args, show=False)
    profile = outcome.profile
    if args.verify:  # a few steps of the tuned command in the trainer first; a failure stops here
        from autotune.outputs.profile import read_profile
        from autotune.trainer.verify import verify_profile

        if verify_profile(cfg.results, cfg.policy, lerobot=args.lerobot, trainer=cfg.trainer) == 1:
            return 1
        profile = read_profile(cfg.results, cfg.policy) or profile  # with its verification
    from autotune.run.probe_start import stop_server

    stop_server()  # the probes' warm server holds torch in memory: not beside the training
    return train(profile, cfg.trainer, rest, cfg.results)
