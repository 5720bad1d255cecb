"""The lerobot-train command a profile prints."""

from __future__ import annotations

from autotune.lerobot import command_line, lerobot_train_args


def test_lerobot_command_carries_the_tuned_values() -> None:
    args = lerobot_train_args(
        policy_args=["--policy.type=act"],
        dataset_repo_id="me/so101_pick",
        dataset_root=None,
        device="cuda:0",
        precision="bf16",
        batch_size=96,
        num_workers=6,
        prefetch_factor=2,
    )
    line = command_line(args)
    assert line.startswith("lerobot-train ")
    for flag in (
        "--policy.type=act",
        "--dataset.repo_id=me/so101_pick",
        "--batch_size=96",
        "--num_workers=6",
        "--prefetch_factor=2",
        "--accelerator.mixed_precision=bf16",
        "--policy.device=cuda",
    ):
        assert flag in args
    fp32_no_workers = lerobot_train_args(
        policy_args=[],
        dataset_repo_id="x/y",
        dataset_root="/data/x y",
        device="cpu",
        precision="fp32",
        batch_size=4,
        num_workers=0,
        prefetch_factor=None,
    )
    assert not any(a.startswith(("--prefetch_factor", "--accelerator.mixed")) for a in fp32_no_workers)
    assert "'--dataset.root=/data/x y'" in command_line(fp32_no_workers)
