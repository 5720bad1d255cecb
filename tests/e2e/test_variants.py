"""`autotune run` end to end for SmolVLA with a target batch, and for --compare: the variants a run
tunes and which one the printed command trains."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from probes.catalogue import cut_down
from tests.cli import SMALL_ACT, autotune, set_flags
from tests.e2e.shared import sharing

pytestmark = pytest.mark.slow

# Each run here skips the soak (--soak-steps 0): the soak's own checks are in test_run.py.

SMALL_ACT_FLAGS = set_flags(SMALL_ACT)

SMALL_SMOLVLA = set_flags(cut_down("smolvla", "tiny"))


def test_smolvla_runs_end_to_end_with_a_target_batch(tmp_path: Path, datasets: Path) -> None:
    proc = autotune(
        "run", "--policy", "smolvla", "--device", "cpu", "--precision", "fp32", "--memory-limit", "400MiB",
        "--image-size", "48x64", "--trials", "1", "--soak-steps", "0", "--throughput-points", "1", "--no-estimate",
        "--target-batch", "12", "--max-batch", "4", *SMALL_SMOLVLA, cwd=sharing(datasets, tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads((tmp_path / "results" / "profiles" / "smolvla.json").read_text())
    # Batch 4 at most: the target is reached by accumulating gradients over 3 steps.
    assert profile["max_batch_size"] == 4
    assert profile["batch_size"] * profile["grad_accum_steps"] == 12 and profile["grad_accum_steps"] >= 3
    command = proc.stdout.strip().splitlines()[-1]
    assert "--policy.type=smolvla" in command
    assert f"--batch_size={profile['batch_size']}" in command
    # lerobot-train 0.6.1 cannot accumulate: the command says so, and what would.
    flag = f"--accelerator.gradient_accumulation.steps={profile['grad_accum_steps']}"
    assert flag not in command and not profile["lerobot_train_reproduces"]
    assert any("no gradient accumulation" in c and flag in c for c in profile["lerobot_train_caveats"])
    assert "warning: the command below will not reproduce this" in proc.stdout


def test_compare_tunes_checkpointing_on_and_off_and_prints_what_the_trainer_runs(tmp_path: Path) -> None:
    proc = autotune(
        "run", "--policy", "act", "--device", "cpu", "--precision", "fp32", "--memory-limit", "600MiB",
        "--image-size", "64x80", "--trials", "1", "--soak-steps", "0", "--throughput-points", "1", "--no-estimate",
        "--max-batch", "16", "--compare", *SMALL_ACT_FLAGS, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads((tmp_path / "results" / "profiles" / "act.json").read_text())
    variants = {c["grad_checkpointing"]: c for c in profile["comparisons"]}
    assert set(variants) == {True, False}
    # lerobot-train 0.6.1 has no checkpointing for ACT: the printed answer is the variant without.
    assert profile["grad_checkpointing"] is False and profile["lerobot_train_reproduces"]
    assert variants[True]["per_sample_bytes"] < variants[False]["per_sample_bytes"]
    assert any(note.startswith("fp32: checkpointing fits batch") for note in profile["notes"])
    probes = pd.read_csv(tmp_path / "results" / "batch_probes.csv")
    assert set(probes.grad_checkpointing) == {True, False}
    assert "compared" in proc.stdout


def test_two_ranks_tune_the_batch_per_gpu_and_print_the_launch(tmp_path: Path, datasets: Path) -> None:
    # Two gloo ranks on the CPU: the same path as --gpus 2 on two GPUs, NCCL aside. One batch probe
    # (--max-batch 1): each is a torchrun job, and what this checks is the launch and the batch per GPU.
    proc = autotune(
        "run", "--policy", "act", "--device", "cpu", "--gpus", "2", "--memory-limit", "520MiB",
        "--image-size", "48x64", "--trials", "1", "--trainer-only", "--throughput-points", "1",
        "--soak-steps", "0", "--max-batch", "1", "--no-estimate", *SMALL_ACT_FLAGS, cwd=sharing(datasets, tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads((tmp_path / "results" / "profiles" / "act.json").read_text())
    assert profile["gpus"] == 2 and profile["conditions"]["gpus"] == 2
    assert profile["effective_batch_size"] == 2 * profile["batch_size"] * profile["grad_accum_steps"]
    command = proc.stdout.strip().splitlines()[-1]
    assert "accelerate launch --num_processes=2 $(which lerobot-train) " in command
    assert f"--batch_size={profile['batch_size']}" in command  # per GPU
    assert any(
        line.strip().startswith("gpus") and "effective batch" in line for line in proc.stdout.splitlines()
    )
    trials = pd.read_csv(tmp_path / "results" / "worker_trials.csv")
    assert (trials.status == "ok").all()
