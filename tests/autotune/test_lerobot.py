"""The lerobot-train command, per version: only flags that version has, and what it cannot reproduce."""

from __future__ import annotations

import itertools

import pytest

from autotune.trainer.command import CPU_MALLOC_ENV, Setting, can_reproduce, command, default_variant
from autotune.trainer.versions import RELEASES, Trainer
from probes import catalogue
from probes.protocol import ModelSpec

SMALL = catalogue.cut_down("act", "narrow")


def setting(**changes: object) -> Setting:
    base = dict(
        policy="act",
        policy_args=tuple(catalogue.lerobot_policy_args(ModelSpec("act", 2, (96, 128), 6, 6, False, SMALL))),
        dataset_repo_id="me/so101_pick",
        dataset_root="/data/so101 pick",
        dataset_format="v3.0",
        device="cuda:0",
        precision="bf16",
        grad_checkpointing=False,
        batch_size=96,
        num_workers=6,
        prefetch_factor=2,
    )
    return Setting(**{**base, **changes})  # type: ignore[arg-type]


def flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args}


@pytest.mark.parametrize("row", RELEASES, ids=[r.since for r in RELEASES])
def test_every_printed_flag_exists_in_the_version_it_is_made_for(row) -> None:
    trainer = Trainer(row.since, "flag")
    policy_flags = {f"--policy.{name}" for name in ("dim_model", "dim_feedforward")}
    cases = itertools.product(
        ("cpu", "cuda:0", "cuda:1"), ("bf16", "fp16", "fp32"), (False, True), (0, 6), (1, 4)
    )
    for device, precision, checkpointing, workers, accum in cases:
        s = setting(
            device=device, precision=precision, grad_checkpointing=checkpointing, num_workers=workers,
            grad_accum_steps=accum,
        )  # fmt: skip
        printed = command(trainer, s)
        unknown = flags(printed.args) - row.flags - policy_flags
        assert not unknown, (row.since, device, precision, unknown)
        # What cannot be reproduced is said, never silently dropped.
        if checkpointing:
            assert any("gradient checkpointing" in c for c in printed.caveats)
        if accum > 1 and row.grad_accumulation_flag is None:
            assert any("accumulation" in c for c in printed.caveats)
        if precision != "fp32" and precision not in row.precision.get(device.partition(":")[0], {}):
            assert any(f"cannot train in {precision}" in c for c in printed.caveats)


def test_lerobot_0_6_1_takes_fp16_through_use_amp_and_bf16_through_accelerate() -> None:
    trainer = Trainer("0.6.1", "PATH")
    fp16 = command(trainer, setting(precision="fp16"))
    assert "--policy.use_amp=true" in fp16.args and fp16.reproduces
    bf16 = command(trainer, setting(precision="bf16"))
    assert bf16.env == {"ACCELERATE_MIXED_PRECISION": "bf16"} and bf16.reproduces
    assert bf16.text.startswith(
        "ACCELERATE_MIXED_PRECISION=bf16 lerobot-train --dataset.repo_id=me/so101_pick "
    )
    assert not any(a.startswith("--accelerator") for a in fp16.args + bf16.args)
    assert "--prefetch_factor=2" in bf16.args


def test_lerobot_main_takes_the_accelerator_flags() -> None:
    main = Trainer("0.6.2.dev0", "flag")
    printed = command(main, setting(precision="bf16", grad_accum_steps=4))
    assert "--accelerator.mixed_precision=bf16" in printed.args
    assert "--accelerator.gradient_accumulation.steps=4" in printed.args
    assert printed.reproduces and not printed.env


def test_before_0_6_there_is_no_prefetch_flag_and_0_3_reads_v2_1() -> None:
    old = command(Trainer("0.5.1", "flag"), setting())
    assert not any(a.startswith("--prefetch_factor") for a in old.args)
    v03 = command(Trainer("0.3.3", "flag"), setting(precision="fp16"))
    assert "--policy.use_amp=true" in v03.args
    assert any("reads v2.1 datasets" in c for c in v03.caveats)


def test_a_run_on_another_gpu_trains_on_that_gpu(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    printed = command(Trainer("0.6.1", "PATH"), setting(device="cuda:1", precision="fp32"))
    assert printed.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
    assert "--policy.device=cuda" in printed.args
    assert printed.text.startswith("CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=1 lerobot-train ")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert command(Trainer("0.6.1", "PATH"), setting(device="cuda:1")).env["CUDA_VISIBLE_DEVICES"] == "5"
    assert "CUDA_VISIBLE_DEVICES" in command(Trainer("0.6.1", "PATH"), setting(device="cuda:0")).env


def test_paths_are_quoted_and_a_cpu_command_carries_the_probes_allocator_settings() -> None:
    printed = command(Trainer("0.6.1", "PATH"), setting(device="cpu", precision="fp32"))
    assert "'--dataset.root=/data/so101 pick'" in printed.text
    assert printed.env == CPU_MALLOC_ENV
    assert "--policy.device=cpu" in printed.args and printed.reproduces


@pytest.mark.parametrize(
    ("version", "device_type", "best", "expected"),
    [
        ("0.6.1", "cuda", "bf16", ("bf16", False)),
        ("0.6.1", "cuda", "fp16", ("fp16", False)),
        ("0.3.3", "cuda", "bf16", ("fp16", False)),
        ("0.6.1", "cpu", "fp32", ("fp32", False)),
        ("0.6.2.dev0", "cuda", "bf16", ("bf16", False)),
    ],
)
def test_the_default_variant_is_what_the_trainer_reproduces(version, device_type, best, expected) -> None:
    trainer = Trainer(version, "flag")
    assert default_variant(trainer, "act", device_type, best) == expected
    precision, checkpointing = expected
    assert can_reproduce(trainer, "act", device_type, precision, checkpointing)
    assert not can_reproduce(trainer, "act", device_type, precision, True)  # ACT has none anywhere


@pytest.mark.parametrize(("device", "precision"), [("cuda:0", "bf16"), ("cuda:0", "fp16"), ("cpu", "bf16")])
def test_lerobot_0_7_0_takes_precision_as_a_flag_and_never_accelerates_environment(device, precision) -> None:
    # LeRobot 0.7.0 refuses accelerate's environment (without LEROBOT_ALLOW_ACCELERATE_ENV=1) and
    # renamed --wandb.* to --trackio.*: what `--lerobot-version 0.7.0` prints.
    trainer = Trainer("0.7.0", "flag")
    printed = command(trainer, setting(device=device, precision=precision, grad_accum_steps=2))
    assert f"--accelerator.mixed_precision={precision}" in printed.args
    assert "--accelerator.gradient_accumulation.steps=2" in printed.args and printed.reproduces
    assert not any(name.startswith("ACCELERATE") for name in printed.env)
    assert not any(a.startswith("--wandb") for a in printed.args)
    assert trainer.abilities.tracker_off == "--trackio.enable=false"
    assert Trainer("0.6.1", "flag").abilities.tracker_off == "--wandb.enable=false"
