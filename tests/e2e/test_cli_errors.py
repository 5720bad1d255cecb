"""Bad input gets one clear line, exit 2, no traceback, and nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.memory import children_of
from tests.cli import ROOT, SMALL_ACT, autotune, set_flags

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
        # Issue 24: sizes the synthetic dataset cannot be written at, refused before anything.
        (
            ["run", "--policy", "act", "--device", "cpu", "--image-size", "1x1"],
            ["--image-size", "at least 8"],
        ),
        (
            ["run", "--policy", "act", "--device", "cpu", "--image-size", "47x64"],
            ["--image-size", "even sides"],
        ),
        (
            ["run", "--policy", "act", "--device", "cpu", "--image-size", "100000x100000"],
            ["--image-size", "at most 4096"],
        ),
        (
            ["run", "--policy", "act", "--device", "cpu", "--memory-limit", "1KiB"],
            ["--memory-limit", "below"],
        ),
        (
            ["run", "--policy", "act", "--storage", "postgresql://u:s3cr3tpw@[::1"],
            ["--storage postgresql://u:***@[::1", "not a database URL"],
        ),
    ],
)
def test_bad_input_fails_in_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    proc = (
        autotune(*args, "--results", str(tmp_path / "results"), cwd=tmp_path)
        if args[0] == "show"
        else autotune(*args, cwd=tmp_path)
    )
    assert_one_line_error(proc, *fragments)
    assert "s3cr3tpw" not in proc.stderr
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


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
        except OSError:
            return False

    return [pid for pid in pids if running(pid)]


def probe_children(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        try:
            if b"probes.child" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


@pytest.mark.parametrize(
    ("sig", "code", "said"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_stopped_estimate_takes_its_probe_children_with_it(
    tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    """autotune estimate runs its children in threads: SIGTERM and Ctrl-C reach the main thread
    only, which must kill them rather than wait for them (they ran on for 30 s and 15 s)."""
    tuner = subprocess.Popen(
        [sys.executable, "-m", "autotune", "estimate", "--policy", "act", "--memory", "12GiB"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (children := probe_children(tuner.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children, "no estimate child started"
    time.sleep(0.5)
    descendants = children_of(tuner.pid)
    tuner.send_signal(sig)
    stopped = time.monotonic()
    _, err = tuner.communicate(timeout=30)
    while alive(descendants) and time.monotonic() - stopped < 3:
        time.sleep(0.05)
    assert not alive(descendants), f"left running: {alive(descendants)}"
    assert time.monotonic() - stopped < 3
    assert tuner.returncode == code, err
    assert err.strip().splitlines()[-1] == f"autotune: {said}; earlier results are intact"
    assert "Traceback" not in err


def test_a_junk_study_database_fails_before_the_first_probe(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "studies").mkdir(parents=True)
    (results / "studies" / "act.db").write_bytes(b"junk" * 99)
    proc = autotune(
        "run", "--policy", "act", "--device", "cpu", "--image-size", "48x64", "--trials", "1",
        *set_flags(SMALL_ACT), "--results", str(results), cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "act.db", "not a worker study", "move it aside")
    assert not list(results.glob("*.csv"))  # no probe row, no failed run row
    assert not (results / "datasets").exists()  # and no dataset written for it
    assert (results / "studies" / "act.db").read_bytes() == b"junk" * 99
