"""autotune's answer checked in the real lerobot-train: a LeRobot release in its own environment
(.lerobot/, installed by `bash scripts/setup.sh --test`), run on the CPU with a cut-down ACT on the
synthetic dataset, offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.cli import autotune
from tests.e2e.shared import HAS_LEROBOT, LEROBOT
from tests.e2e.test_cli_errors import assert_one_line_error

pytestmark = pytest.mark.slow

needs_lerobot = pytest.mark.skipif(
    not HAS_LEROBOT, reason="no LeRobot release in .lerobot/ (install it: bash scripts/setup.sh --test)"
)


@pytest.fixture(scope="module")
def tuned(act_as_tuned: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The session's tuned ACT (tests/e2e/shared.py), verified in lerobot-train 0.6.1."""
    proc = autotune(
        "verify", "--policy", "act", "--lerobot", str(LEROBOT), cwd=act_as_tuned, env={"HF_HUB_OFFLINE": "1"}
    )
    return act_as_tuned, proc


@needs_lerobot
def test_the_printed_command_trains_in_the_real_lerobot_train_within_the_promise(tuned) -> None:
    cwd, proc = tuned
    # Exit 0 (verified) or 3 (differs): on a busy 2-core machine only the speed may differ, which
    # benchmarks/trainer_agreement.py measures on an idle one; memory and parameters must agree.
    assert proc.returncode in (0, 3), proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "lerobot-train 0.6.1" in proc.stdout.splitlines()[-1]
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    assert profile["lerobot_version"] == "0.6.1" and profile["lerobot_source"] == "path"
    assert profile["lerobot_train_reproduces"] and not profile["grad_checkpointing"]
    verification = profile["verification"]
    assert verification["status"] in ("verified", "differs")
    assert all("samples/s" in d for d in verification["differences"]), verification["differences"]
    rows = pd.read_csv(cwd / "results" / "verify.csv")
    row = rows.iloc[-1]
    assert row["status"] == verification["status"] and row["profile_run_id"] == profile["run_id"]
    assert row["learnable_params"] == profile["trainable_params"] > 0
    assert 0 < row["peak_bytes"] <= row["promised_bytes"]
    assert row["steps"] >= 3 and row["updt_s"] > 0 and row["samples_per_s"] > 0


@needs_lerobot
def test_a_command_lerobot_train_refuses_is_reported_with_its_line_and_the_profile_kept(tuned) -> None:
    cwd, _ = tuned
    path = cwd / "results" / "profiles" / "act.json"
    profile = json.loads(path.read_text())
    broken = {**profile, "lerobot_train_args": [*profile["lerobot_train_args"], "--no_such_flag=1"]}
    path.write_text(json.dumps(broken))
    try:
        proc = autotune("verify", "--policy", "act", "--lerobot", str(LEROBOT), cwd=cwd)
        kept = json.loads(path.read_text())
    finally:
        path.write_text(json.dumps(profile))  # the tuned profile, as the other tests read it
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed" in proc.stdout and "--no_such_flag" in proc.stdout
    assert kept["run_id"] == profile["run_id"] and kept["verification"]["status"] == "failed"
    assert pd.read_csv(cwd / "results" / "verify.csv")["status"].tolist()[-1] == "failed"


@needs_lerobot
def test_a_profile_made_for_another_lerobot_is_refused(tuned, tmp_path) -> None:
    cwd, _ = tuned
    results = tmp_path / "results"
    (results / "profiles").mkdir(parents=True)
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    (results / "profiles" / "act.json").write_text(json.dumps({**profile, "lerobot_version": "0.5.1"}))
    proc = autotune(
        "verify", "--policy", "act", "--results", str(results), "--lerobot", str(LEROBOT), cwd=tmp_path
    )
    assert_one_line_error(proc, "made for lerobot-train 0.5.1", "autotune run --policy act")


def test_verify_without_a_profile_or_a_lerobot_is_one_line(tmp_path) -> None:
    proc = autotune("verify", "--policy", "act", "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert_one_line_error(proc, "no act profile", "autotune run --policy act")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a LeRobot")
    proc = autotune("run", "--policy", "act", "--device", "cpu", "--lerobot", str(notes), cwd=tmp_path)
    assert_one_line_error(proc, "--lerobot", "not a lerobot-train")
    proc = autotune("run", "--policy", "act", "--device", "cpu", "--lerobot-version", "banana", cwd=tmp_path)
    assert_one_line_error(proc, "banana", "not a version")
    proc = autotune("run", "--policy", "act", "--device", "cpu", "--lerobot-version", "0.2.1", cwd=tmp_path)
    assert_one_line_error(proc, "older than 0.3")
    assert not (tmp_path / "results").exists()


@needs_lerobot
def test_a_command_that_names_the_decoder_trains_with_it(tuned, tmp_path) -> None:
    # Where autotune measured with another decoder than the trainer would pick, the command names
    # it (--dataset.video_backend); lerobot-train 0.6.1 takes it and trains with it.
    cwd, _ = tuned
    results = tmp_path / "results"
    (results / "profiles").mkdir(parents=True)
    (results / "datasets").symlink_to(cwd / "results" / "datasets")  # the data it was tuned on
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    assert profile["video_backend"] == "torchcodec"  # as the trainer picks: the command is silent
    # One DataLoader worker: each one lerobot-train spawns imports torch and LeRobot again (about 5 s
    # of CPU), and the decoder is what this test is about.
    args = [a for a in profile["lerobot_train_args"] if not a.startswith("--num_workers=")]
    args += ["--num_workers=1", "--dataset.video_backend=pyav"]
    named = {**profile, "lerobot_train_args": args, "video_backend": "pyav", "verification": None}
    (results / "profiles" / "act.json").write_text(json.dumps(named))
    proc = autotune(
        "verify", "--policy", "act", "--results", str(results), "--lerobot", str(LEROBOT),
        cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode in (0, 3), proc.stdout[-2000:] + proc.stderr[-3000:]
    row = pd.read_csv(results / "verify.csv").iloc[-1]
    assert row["status"] in ("verified", "differs") and row["steps"] >= 3, row.to_dict()
    running = next(line for line in proc.stderr.splitlines() if "running lerobot-train 0.6.1" in line)
    assert "--dataset.video_backend=pyav" in running
