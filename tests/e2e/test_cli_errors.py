"""Bad input gets one clear line, exit 2, no traceback, and nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli import autotune

pytestmark = pytest.mark.slow


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[autotune]")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "--policy", "diffusion"], ["unknown policy 'diffusion'", "--backend lerobot"]),
        (["run", "--policy", "act;rm"], ["not a policy name"]),
        (["run", "--policy", "act", "--gpus", "0"], ["--gpus", "at least 1"]),
        (["run", "--policy", "act", "--device", "cpu", "--gpus", "999"], ["--gpus 999", "needs a core"]),
        (
            ["run", "--policy", "act", "--device", "cpu", "--gpus", "2", "--backend", "lerobot"],
            ["--backend lerobot"],
        ),
        (["run", "--policy", "act", "--memory-limit", "12 parsecs"], ["malformed size", "12 parsecs"]),
        (["run", "--policy", "act", "--memory-limit", "0GiB"], ["must be positive"]),
        (["run", "--policy", "act", "--image-size", "480by640"], ["malformed image size"]),
        (["run", "--policy", "act", "--image-size", "0x640"], ["positive height"]),
        (["run", "--policy", "act", "--cameras", "0"], ["at least 1"]),
        (["run", "--policy", "act", "--trials", "-3"], ["at least 1"]),
        (["run", "--policy", "act", "--headroom", "1.5"], ["[0, 1)"]),
        (["run", "--policy", "act", "--device", "tpu"], ["--device tpu"]),
        (["run", "--policy", "act", "--device", "cuda"], ["no NVIDIA GPU", "--device cpu"]),
        (["run", "--policy", "act", "--device", "cuda:3"], ["no NVIDIA GPU"]),
        (["run", "--policy", "act", "--device", "cpu", "--set", "dim_model=wide"], ["dim_model"]),
        (["run", "--policy", "act", "--device", "cpu", "--set", "no_such_field=1"], ["no_such_field"]),
        # Settings lerobot-train cannot take, or a model that cannot be built: before anything runs.
        (
            ["run", "--policy", "act", "--device", "cpu", "--set", "grad_clip_norm=5"],
            ["grad_clip_norm", "10.0"],
        ),
        (["run", "--policy", "act", "--device", "cpu", "--set", "dim_model=0"], ["dim_model"]),
        (["run", "--policy", "act", "--device", "cpu", "--probe-timeout", "nan"], ["--probe-timeout"]),
        (["run", "--policy", "act", "--device", "cpu", "--dataset", "x", "--cameras", "3"], ["--cameras"]),
        (["show", "--policy", "act"], ["no act profile", "autotune run --policy act"]),
    ],
)
def test_bad_input_fails_in_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    proc = (
        autotune(*args, "--results", str(tmp_path / "results"), cwd=tmp_path)
        if args[0] == "show"
        else autotune(*args, cwd=tmp_path)
    )
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "results").exists()


def test_a_missing_dataset_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dataset"
    proc = autotune("run", "--policy", "act", "--device", "cpu", "--dataset", str(missing), cwd=tmp_path)
    assert_one_line_error(proc, str(missing))
    assert not (tmp_path / "results").exists()


def test_a_folder_that_is_not_a_lerobot_dataset_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    proc = autotune("run", "--policy", "act", "--device", "cpu", "--dataset", str(folder), cwd=tmp_path)
    assert_one_line_error(proc, "info.json")
    assert not (tmp_path / "results").exists()


def test_an_unwritable_results_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be")
    proc = autotune(
        "run", "--policy", "act", "--device", "cpu", "--results", str(blocker / "sub"), cwd=tmp_path
    )
    assert_one_line_error(proc, "cannot be written", "--results")
    assert blocker.read_text() == "a file where the folder should be"
