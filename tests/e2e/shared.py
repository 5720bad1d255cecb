"""The tuned run several end-to-end modules read: one `autotune run` of the cut-down ACT for the
whole session (tests/e2e/test_run.py checks it, tests/e2e/test_verify.py verifies a copy of its
profile in the real lerobot-train, tests/e2e/test_train.py trains from it), so the suite tunes it
once: tests/conftest.py keeps those modules on one pytest-xdist worker (a module that uses it joins
them in ``TOGETHER`` there). Also the session's one folder of synthetic datasets, which the runs on
the same shapes share (:func:`datasets`, :func:`sharing`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import ROOT, SMALL_ACT, autotune, set_flags

LEROBOT = ROOT / ".lerobot"
HAS_LEROBOT = (LEROBOT / "bin" / "lerobot-train").exists()
RUN_ACT = [
    "run", "--policy", "act", "--device", "cpu", "--memory-limit", "470MiB",
    "--image-size", "48x64", "--cameras", "2", "--trials", "2", "--throughput-points", "1", "--soak-steps", "2",
    # The checkpointed variant measured beside the answer fits about 97 here: capped above the
    # answer's 60, its search is one probe instead of three (about 30 s less).
    "--max-batch", "64",
    # LeRobot's default, 4 workers, is measured and holds about 1.9 GiB of host memory against one
    # worker's 0.5: over this budget, it is never recommended, and the one worker the study chose
    # is what the check, the verification and the training then start (each worker imports torch).
    "--host-memory-limit", "1GiB",
    *set_flags(SMALL_ACT),
    # The lerobot-train the answer is made for, where the tests' LeRobot release is installed.
    *(["--lerobot", str(LEROBOT)] if HAS_LEROBOT else []),
]  # fmt: skip


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's synthetic datasets, one folder for both pytest-xdist workers: the first run that
    needs a dataset writes it and later runs reuse it, as runs into one results folder do (it is
    renamed into place once whole; of two written at once, one is kept)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "datasets"
    folder.mkdir(exist_ok=True)
    return folder


def sharing(datasets: Path, cwd: Path) -> Path:
    """``cwd``, its ``results/datasets`` the session's (:func:`datasets`): for a run whose test is not
    about writing the synthetic dataset."""
    (cwd / "results").mkdir(parents=True, exist_ok=True)
    (cwd / "results" / "datasets").symlink_to(datasets, target_is_directory=True)
    return cwd


@pytest.fixture(scope="session")
def act_run(
    tmp_path_factory: pytest.TempPathFactory, datasets: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = sharing(datasets, tmp_path_factory.mktemp("act"))
    proc = autotune(*RUN_ACT, cwd=cwd)
    # The profile as the tune left it, for the modules that must not see what test_run does next.
    if proc.returncode == 0:
        snapshot = cwd.parent / f"{cwd.name}-as-tuned" / "results"
        shutil.copytree(cwd / "results" / "profiles", snapshot / "profiles")
        (snapshot / "datasets").symlink_to(cwd / "results" / "datasets")  # the data it was tuned on
    return cwd, proc


@pytest.fixture(scope="session")
def act_as_tuned(act_run) -> Path:
    """A folder whose results hold only the profile act_run wrote, as it wrote it."""
    cwd, proc = act_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd.parent / f"{cwd.name}-as-tuned"
