"""``scripts/gpu-check.sh``'s plan, as ``GPU_CHECK_PLAN=1`` prints it without a GPU or any Python
package: each step a real command whose flags parse, the fixed conditions others compare, and
budgets that add up to a total within one loan's 6 minutes of command time (issue 21)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
LINE = re.compile(r"^(?P<name>[a-z0-9-]+)\s+(?P<seconds>\d+) s: (?P<command>.+)$")
TOTAL = re.compile(r"^plan: (?P<total>\d+) s in total")
GiB = 1024**3
LIMIT_S = 360  # one loan: start (1-2 min), the check, a rerun, in 15 minutes


def plan(**env: str) -> tuple[list[dict[str, str]], int]:
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], "GPU_CHECK_PLAN": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    total = TOTAL.match(lines[-1])
    assert total, lines[-1]
    steps = [LINE.match(line) for line in lines[:-1]]
    assert all(steps), lines
    return [s.groupdict() for s in steps if s], int(total["total"])


def run_args(command: str) -> argparse.Namespace:
    """The ``autotune run`` arguments of ``command``, parsed by autotune's own parser."""
    words = shlex.split(command)
    assert words[1:3] == ["-m", "autotune"], command
    return build_parser().parse_args(words[3:])


def test_the_plan_needs_no_gpu_and_no_python_and_fits_six_minutes() -> None:
    steps, total = plan(PYTHON="/nonexistent/python3")  # no interpreter, no optuna, no wheels
    assert [s["name"] for s in steps] == ["setup", "act-bf16-24g", "act-fp32-24g", "smolvla-24g", "act-card"]
    assert total == sum(int(s["seconds"]) for s in steps)
    assert total <= LIMIT_S
    assert all(int(s["seconds"]) > 0 for s in steps)
    assert steps[0]["command"].startswith("/nonexistent/python3 -m pip install -q --no-index --no-deps")


def test_every_run_is_an_autotune_run_whose_flags_parse_under_the_fixed_conditions() -> None:
    steps, _ = plan(PYTHON="python3")
    runs = {s["name"]: run_args(s["command"]) for s in steps if " -m autotune " in s["command"]}
    assert set(runs) == {"act-bf16-24g", "act-fp32-24g", "smolvla-24g", "act-card"}
    for name, args in runs.items():
        assert args.command == "run"
        assert args.results == Path("results/reference/<gpu>") / name  # its own folder, packed
        assert args.trials == 1 and args.throughput_points == 1  # the study cut to fit
        assert args.probe_timeout <= 120
        assert args.image_size is None and args.cameras is None  # 2 cameras at 480x640
        assert args.dataset is None  # the synthetic dataset, written once and shared
    bf16, fp32 = runs["act-bf16-24g"], runs["act-fp32-24g"]
    for args, precision in ((bf16, "bf16"), (fp32, "fp32")):
        assert (args.policy, args.precision, args.memory_limit) == ("act", precision, 24 * GiB)
        assert args.trainer_only and args.grad_checkpointing is None
    smolvla = runs["smolvla-24g"]
    assert (smolvla.policy, smolvla.precision, smolvla.memory_limit) == ("smolvla", None, 24 * GiB)
    assert smolvla.overrides == [] and smolvla.grad_checkpointing is None  # its defaults
    card = runs["act-card"]
    assert card.policy == "act" and card.memory_limit is None  # the card's whole memory ...
    assert card.max_batch < 8192  # ... bounded so that it stays within its step


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Parsed(Exception):
    """Raised once a benchmark's own parser has taken its arguments: nothing is run."""


def test_the_second_call_runs_the_gpu_tests_and_benchmarks_with_flags_that_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps, total = plan(PYTHON="python3", GPU_CHECK_STEPS="tests bench estimate")
    assert [s["name"] for s in steps] == ["setup", "tests", "bench", "estimate"]
    assert total == sum(int(s["seconds"]) for s in steps) <= LIMIT_S
    tests = shlex.split(steps[1]["command"])
    assert tests[1:3] == ["-m", "pytest"] and tests[tests.index("-m", 3) + 1] == "gpu"
    paths = [w for w in tests if w.startswith("tests/")]
    assert "tests/gpu" in paths and all((ROOT / p).exists() for p in paths)

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for step in steps[2:]:
        words = shlex.split(step["command"])
        script = ROOT / words[1]
        assert script.parent == ROOT / "benchmarks" and script.exists(), step
        assert "--device" in words and words[words.index("--device") + 1] == "cuda"
        with pytest.raises(Parsed):
            load(script).main(words[2:])


def test_without_the_wheels_the_check_says_so_in_one_line_and_in_out(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, copy / "scripts" / "gpu-check.sh")  # a clone without .whl/
    python = tmp_path / "python3"  # an interpreter that imports neither optuna nor av
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        ["bash", str(copy / "scripts" / "gpu-check.sh")],
        env={"PATH": os.environ["PATH"], "PYTHON": str(python), "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "no .whl/ folder" in said[0] and "gpu-wheels.sh" in said[0], done.stderr
    written = (out / "summary.txt").read_text().splitlines()
    assert len(written) == 1 and "gpu-wheels.sh" in written[0]
    assert not (copy / "results").exists()  # nothing half-written
