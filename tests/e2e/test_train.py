"""autotune train with the real lerobot-train 0.6.1 (.lerobot/), on the session's tuned cut-down ACT:
a training that runs out of memory inside the trainer's process is resumed from its checkpoint at
a lower batch and finishes every step asked for; Ctrl-C stops it and leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.cli import ROOT, autotune
from tests.e2e.shared import HAS_LEROBOT, RUN_ACT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAS_LEROBOT, reason="no LeRobot release in .lerobot/ (bash scripts/setup.sh --test)"
    ),
]

TRAIN_ACT = ["train", *RUN_ACT[1:]]  # the same run flags: the session's profile is up to date for them
OFFLINE = ["--policy.pretrained_backbone_weights=null", "--log_freq=1"]
# One DataLoader worker, whatever the tuned setting (the session's profile is tuned to one under its
# host-memory limit, tests/e2e/shared.py): these tests are about the training's restarts and its
# end, and each worker lerobot-train spawns imports torch and LeRobot again (about 5 s of CPU).
ONE_WORKER = ["--num_workers=1"]

# Loaded at start-up by the trainer's Python (and only there): at the AUTOTUNE_TEST_OOM_AT-th
# optimizer step of a batch over AUTOTUNE_TEST_OOM_ABOVE, the step asks PyTorch's CPU allocator for a
# petabyte, which it cannot give: a real allocation failure, raised inside lerobot-train's step.
HOOK = textwrap.dedent(
    """
    import os, sys
    if os.environ.get("AUTOTUNE_TEST_OOM_PREFIX") == sys.prefix:
        import torch
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        batch = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--batch_size=")), 0)
        calls = [0]

        def _step(optimizer, args, kwargs):
            calls[0] += 1
            if calls[0] == int(os.environ["AUTOTUNE_TEST_OOM_AT"]) and batch > int(os.environ["AUTOTUNE_TEST_OOM_ABOVE"]):
                torch.empty(2**50, dtype=torch.uint8)

        register_optimizer_step_pre_hook(_step)
    """
)


@pytest.fixture
def tuned_copy(act_as_tuned: Path, tmp_path: Path) -> Path:
    """A folder of its own with the session's profile as tuned (the training rewrites it)."""
    (tmp_path / "results").mkdir()
    shutil.copytree(act_as_tuned / "results" / "profiles", tmp_path / "results" / "profiles")
    (tmp_path / "results" / "datasets").symlink_to((act_as_tuned / "results" / "datasets").resolve())
    return tmp_path


def test_an_out_of_memory_in_the_trainer_is_resumed_at_a_lower_batch_and_every_step_trains(
    tuned_copy: Path,
) -> None:
    cwd = tuned_copy
    profile = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    batch = profile["batch_size"]
    (cwd / "hook").mkdir()
    (cwd / "hook" / "sitecustomize.py").write_text(HOOK)
    trainer_prefix = subprocess.run(
        [str(ROOT / ".lerobot" / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    env = {
        "PYTHONPATH": f"{cwd / 'hook'}{os.pathsep}{ROOT}",
        "AUTOTUNE_TEST_OOM_PREFIX": trainer_prefix,
        "AUTOTUNE_TEST_OOM_AT": "3",
        "AUTOTUNE_TEST_OOM_ABOVE": str(batch - 1),
        "HF_HUB_OFFLINE": "1",
    }
    out = cwd / "out"
    proc = autotune(
        *TRAIN_ACT, "--", "--steps=4", "--save_freq=2", f"--output_dir={out}", *OFFLINE, *ONE_WORKER,
        cwd=cwd, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if line.startswith("autotune: ")]
    assert said[0] == "autotune: the act profile is up to date (nothing changed); --force re-tunes"
    tuned = profile["num_workers"]
    if tuned != 1:  # the user's flag wins, in one line
        assert said.pop(1) == f"autotune: --num_workers=1 (yours) replaces the tuned --num_workers={tuned}"
    assert said[1].startswith("autotune: training: ") and f"--batch_size={batch}" in said[1]
    assert "--num_workers=1" in said[1]
    restart = next(line for line in said if "ran out of memory" in line)
    assert f"after step 2 at batch {batch}" in restart and "DefaultCPUAllocator" in restart
    assert "from the checkpoint at step 2 (--resume=true)" in restart and "(restart 1 of 3)" in restart
    lower = int(restart.split(" with batch ")[1].split()[0])
    assert 0 < lower < batch
    assert said[-1].startswith("autotune: training finished at step 4 with batch")
    assert (out / "checkpoints" / "000004" / "pretrained_model").is_dir()

    rows = pd.read_csv(cwd / "results" / "train_runs.csv")
    steps = rows[rows.event == "step"]
    assert list(steps.step) == [1, 2, 3, 4]  # every step asked for, once
    assert list(steps.batch_size) == [batch] * 2 + [lower] * 2 and list(steps.attempt) == [0, 0, 1, 1]
    assert (steps.updt_s > 0).all() and (steps.samples_per_s > 0).all() and steps.run_id.nunique() == 1
    assert list(rows.event[rows.event != "step"]) == ["oom", "restart", "finished"]

    learned = json.loads((cwd / "results" / "profiles" / "act.json").read_text())
    (oom,) = learned["training_ooms"]
    assert (oom["batch_size"], oom["step"], oom["restarted_with"]) == (batch, 2, lower)
    assert learned["learned_headroom"] > profile["conditions"]["headroom"]


def test_ctrl_c_reaches_the_trainer_and_leaves_no_process_behind(tuned_copy: Path) -> None:
    cwd = tuned_copy
    out = cwd / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune", *TRAIN_ACT, "--", "--steps=100000", f"--output_dir={out}", *OFFLINE, *ONE_WORKER],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    runs = cwd / "results" / "train_runs.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (runs.exists() and len(pd.read_csv(runs)) >= 2):
        time.sleep(0.5)
    assert runs.exists(), "no step was logged"
    (trainer,) = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    session = sessions()[int(trainer)]  # the trainer leads a session of its own; its workers are in it
    assert sum(sid == session for sid in sessions().values()) > 1  # the DataLoader's worker
    os.kill(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal reaches autotune
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stdout[-2000:] + stderr[-2000:]
    assert "training stopped by SIGINT" in stdout
    left = [pid for pid, sid in sessions().items() if sid == session]
    assert left == [], f"processes left behind: {left}"
    assert pd.read_csv(runs).event.iloc[-1] == "interrupted"


def sessions() -> dict[int, int]:
    """Every process's session id, by pid."""
    listed = subprocess.run(
        ["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True, check=True
    ).stdout
    return {int(pid): int(sid) for pid, sid in (line.split() for line in listed.splitlines())}
