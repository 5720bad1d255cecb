"""``autotune rl ppo|rrd`` as a user runs it: the printed answer, --json, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli import autotune


def run_ok(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = autotune("rl", *args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize(
    ("num_envs", "minibatch"), [(2048, 8192), (1024, 4096), (256, 1024), (16, 128), (4, 64)]
)
def test_ppo_prints_the_batch_every_valid_minibatch_and_the_hand_rule(
    tmp_path: Path, num_envs: int, minibatch: int
) -> None:
    out = run_ok(tmp_path, "ppo", "--num-envs", str(num_envs), "--horizon", "16").stdout
    batch = num_envs * 16
    assert f"= batch {batch}," in out
    printed = re.search(r"valid minibatch sizes \((\d+), each divides (\d+)\): (.*)", out)
    assert printed is not None and int(printed[2]) == batch
    sizes = [int(s) for s in printed[3].split(", ")]
    assert sizes == [d for d in range(1, batch + 1) if batch % d == 0] and int(printed[1]) == len(sizes)
    assert all(batch % s == 0 for s in sizes)  # every printed minibatch is one rl_games accepts
    assert f"hand rule: minibatch {minibatch} " in out
    assert "8192 floor" in out and "the table is followed" in out
    assert f"minibatch_size: {minibatch}" in out and f"num_actors: {num_envs}" in out
    assert f"--num_envs {num_envs} agent.params.config.horizon_length=16" in out
    assert f"agent.params.config.minibatch_size={minibatch}" in out
    assert not list(tmp_path.iterdir())  # nothing written without --measure


def test_ppo_json_has_the_batch_the_hand_rules_minibatch_and_the_valid_sizes(tmp_path: Path) -> None:
    out = run_ok(
        tmp_path, "ppo", "--num-envs", "1024", "--horizon", "16", "--mini-epochs", "5", "--json"
    ).stdout
    data = json.loads(out)
    assert data["batch_size"] == 16384
    assert data["minibatch_size"] == 4096  # the hand rule's (the table's; the code's floor gives 8192)
    assert data["hand_rule"]["script_code_minibatch_size"] == 8192
    assert data["valid_minibatch_sizes"] == [2**i for i in range(15)]
    assert all(data["batch_size"] % m == 0 for m in data["valid_minibatch_sizes"])
    assert data["rl_games_config"] == {
        "num_actors": 1024,
        "horizon_length": 16,
        "minibatch_size": 4096,
        "mini_epochs": 5,
    }
    assert "agent.params.config.minibatch_size=4096" in data["isaaclab_overrides"]
    assert data["measured"] is None


def test_ppo_checks_a_given_minibatch(tmp_path: Path) -> None:
    data = json.loads(
        run_ok(
            tmp_path, "ppo", "--num-envs", "64", "--horizon", "24", "--minibatch-size", "512", "--json"
        ).stdout
    )
    assert data["recommended_minibatch_size"] == 512 and data["recommended_from"] == "--minibatch-size"
    assert data["minibatches_per_epoch"] == 3 and data["optimizer_steps_per_update"] == 3 * 8


def test_rrd_prints_the_coupling_and_the_bytes(tmp_path: Path) -> None:
    args = ["rrd", "--batch-size", "32", "--rrd-batch-size", "32", "--rrd-sample-size", "32"]
    args += ["--train-batches", "64", "--obs-shape", "256x256x3"]
    out = run_ok(tmp_path, *args).stdout
    assert "coupling: valid" in out
    assert "bytes per batch: 6.00 MiB (Q-network/policy) + 6.00 MiB (reward network) = 12.00 MiB" in out
    assert "bytes per iteration (64 batches): 768.11 MiB" in out
    data = json.loads(run_ok(tmp_path, *args, "--json").stdout)
    assert data["subsequences_per_batch"] == 1
    assert data["bytes_per_batch"] == 2 * 32 * (256 * 256 * 3 + 7 * 4)
    assert data["bytes_per_iteration"] == 64 * data["bytes_per_batch"]
    assert not list(tmp_path.iterdir())


def test_rrd_says_which_nearby_values_are_valid(tmp_path: Path) -> None:
    args = ["rrd", "--batch-size", "256", "--rrd-batch-size", "100", "--rrd-sample-size", "32"]
    args += ["--train-batches", "100", "--obs-shape", "17", "--act-dim", "6", "--json"]
    data = json.loads(run_ok(tmp_path, *args).stdout)
    assert data["subsequences_per_batch"] == 3 and data["dropped_timesteps"] == 4 and not data["valid"]
    assert data["valid_rrd_batch_sizes_nearby"] == [96, 128]
    assert "silently dropped" in data["coupling_note"]


RRD = ["rrd", "--train-batches", "64", "--obs-shape", "39"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["ppo", "--num-envs", "0", "--horizon", "16"], ["--num-envs 0", "at least 1"]),
        (["ppo", "--num-envs", "-8", "--horizon", "16"], ["--num-envs -8"]),
        (["ppo", "--num-envs", "8", "--horizon", "0"], ["--horizon 0"]),
        (["ppo", "--num-envs", "8", "--horizon", "16", "--mini-epochs", "-1"], ["--mini-epochs -1"]),
        (
            ["ppo", "--num-envs", "1024", "--horizon", "16", "--minibatch-size", "1000"],
            ["--minibatch-size 1000", "does not divide the batch 16384", "512 or 1024"],
        ),
        (["ppo", "--num-envs", "8", "--horizon", "16", "--minibatch-size", "0"], ["--minibatch-size 0"]),
        (["ppo", "--num-envs", "8", "--horizon", "16", "--measure"], ["--measure needs the network"]),
        (["ppo", "--num-envs", "8", "--horizon", "x"], ["'x' is not a whole number"]),
        (
            [
                "ppo",
                "--num-envs",
                "8",
                "--horizon",
                "16",
                "--measure",
                "--obs-dim",
                "4",
                "--act-dim",
                "2",
                "--hidden",
                "64,0",
            ],
            ["--hidden"],
        ),
        (
            [
                "ppo",
                "--num-envs",
                "8",
                "--horizon",
                "16",
                "--measure",
                "--obs-shape",
                "4x4x3",
                "--act-dim",
                "2",
            ],
            ["at least 8x8"],
        ),
        (
            [*RRD, "--batch-size", "0", "--rrd-batch-size", "32", "--rrd-sample-size", "32"],
            ["--batch-size 0"],
        ),
        (
            [*RRD, "--batch-size", "32", "--rrd-batch-size", "-32", "--rrd-sample-size", "32"],
            ["--rrd-batch-size -32"],
        ),
        (
            [*RRD, "--batch-size", "32", "--rrd-batch-size", "32", "--rrd-sample-size", "0"],
            ["--rrd-sample-size 0"],
        ),
        (
            [
                *RRD,
                "--batch-size",
                "32",
                "--rrd-batch-size",
                "256",
                "--rrd-sample-size",
                "64",
                "--episode-length",
                "50",
            ],
            ["--rrd-sample-size 64 is larger than an episode", "at most 50"],
        ),
        (
            [*RRD, "--batch-size", "32", "--rrd-batch-size", "16", "--rrd-sample-size", "32"],
            ["--rrd-batch-size 16 is smaller than --rrd-sample-size 32"],
        ),
        (
            [
                "rrd",
                "--batch-size",
                "32",
                "--rrd-batch-size",
                "32",
                "--rrd-sample-size",
                "32",
                "--obs-shape",
                "3x3",
            ],
            ["--obs-shape '3x3'", "HxWxC"],
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    proc = autotune("rl", *args, "--results", str(tmp_path / "results"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not list(tmp_path.iterdir())
