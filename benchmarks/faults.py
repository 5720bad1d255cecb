"""Faults an operator meets, injected into real runs: does autotune survive, and is a row lost?

One real tune (a cut-down ACT on the CPU) fills a results folder; then each fault is injected into a
copy of it (or into a fresh run) and the outcome checked: the one line and exit code autotune owes,
no process or temporary folder left behind, and every CSV row written before the fault still there.

    python benchmarks/faults.py                      # ~6 minutes on 2 CPU cores

Prints one line per fault and ``faults injected N, survived M, rows lost K``; writes
``benchmarks/results/faults_cpu.csv`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.probe_client import run_probe  # noqa: E402
from autotune.results import FILES, replace_csv  # noqa: E402
from probes.memory import children_of  # noqa: E402
from probes.protocol import ModelSpec, ProbeRequest  # noqa: E402

SMALL = ["--set", "dim_model=64", "--set", "dim_feedforward=128", "--set", "n_encoder_layers=1",
         "--set", "n_vae_encoder_layers=1", "--set", "chunk_size=20", "--set", "n_action_steps=20"]  # fmt: skip
RUN = ["run", "--policy", "act", "--device", "cpu", "--memory-limit", "600MiB", "--image-size", "48x64",
       "--trials", "1", "--trainer-only", "--soak-steps", "1", "--throughput-points", "1", *SMALL]  # fmt: skip
COLUMNS = ["fault", "survived", "rows_lost", "exit_code", "detail"]


@dataclass
class Outcome:
    fault: str
    survived: bool
    rows_lost: int
    exit_code: int | None
    detail: str


def autotune(
    *args: str, cwd: Path, wait: bool = True, **env: str
) -> subprocess.Popen | subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    cmd = [sys.executable, "-m", "autotune", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=1800)


def rows(results: Path) -> dict[str, list[str]]:
    return {
        name: (results / name).read_bytes().decode(errors="replace").splitlines()
        for name in FILES
        if (results / name).exists()
    }


def lost(before: dict[str, list[str]], after_results: Path) -> int:
    """Rows of ``before`` missing from the files now (a file rewritten with added columns keeps its
    rows: compared by run_id and timestamp)."""
    now = rows(after_results)
    missing = 0
    for name, lines in before.items():
        kept = {",".join(line.split(",")[:2]) for line in now.get(name, [])[1:]}
        missing += sum(",".join(line.split(",")[:2]) not in kept for line in lines[1:])
    return missing


def one_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> bool:
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("[autotune]")]
    return (
        proc.returncode == code
        and len(lines) == 1
        and "Traceback" not in proc.stderr
        and all(f in lines[0] for f in fragments)
    )


def copy_of(base: Path, into: Path) -> Path:
    shutil.copytree(base, into / "results", symlinks=True)
    return into / "results"


def wait_for_probe(tuner: subprocess.Popen, timeout_s: float = 300) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = children_of(tuner.pid)
        for pid in found:
            try:
                if b"probes.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    time.sleep(1.0)
                    return children_of(tuner.pid)
            except OSError:
                continue
        time.sleep(0.2)
    return []


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                out.append(pid)
        except OSError:
            pass
    return out


def fault_probe_killed(base: Path, tmp: Path) -> Outcome:
    spec = ModelSpec("act", 2, (48, 64), 6, 6, False, {"dim_model": 64, "dim_feedforward": 128})
    request = ProbeRequest(kind="batch", model=spec, batch_size=2, memory_limit_bytes=2 * 1024**3)
    started: list[int] = []

    def kill_first(pid: int) -> None:
        started.append(pid)
        if len(started) == 1:
            os.kill(pid, signal.SIGKILL)

    result = run_probe(request, 300, on_start=kill_first)
    return Outcome("probe child SIGKILLed", result.status == "ok" and len(started) == 2, 0, None,
                   f"{len(started)} children; the second measured ({result.status})")  # fmt: skip


def fault_stopped(base: Path, tmp: Path, sig: signal.Signals) -> Outcome:
    results = copy_of(base, tmp)
    before = rows(results)
    (tmp / "t").mkdir()
    tuner = autotune(*RUN, "--force", "--results", str(results), cwd=tmp, wait=False, TMPDIR=str(tmp / "t"))
    descendants = wait_for_probe(tuner)
    tuner.send_signal(sig)
    _, err = tuner.communicate(timeout=120)
    deadline = time.monotonic() + 10
    while alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = list((tmp / "t").glob("autotune-probe-*"))
    ok = bool(descendants) and not alive(descendants) and not leftovers
    if sig == signal.SIGTERM:
        ok = ok and tuner.returncode == 143 and err.strip().endswith("terminated; earlier results are intact")
    return Outcome(f"autotune {sig.name}", ok, lost(before, results), tuner.returncode,
                   f"{len(descendants)} descendants, {len(alive(descendants))} left; {len(leftovers)} temp folders left")  # fmt: skip


def fault_two_runs(base: Path, tmp: Path) -> Outcome:
    results = copy_of(base, tmp)
    first = autotune(*RUN, "--force", "--results", str(results), cwd=tmp, wait=False)
    wait_for_probe(first)
    second = autotune(*RUN, "--force", "--results", str(results), cwd=tmp)
    ok = one_line(second, 2, f"autotune run {first.pid}", "--wait")
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    return Outcome(
        "two runs into one results folder",
        ok,
        0,
        second.returncode,
        (second.stderr.strip().splitlines() or [""])[-1][:200],
    )


def broken_file(
    name: str, damage: Callable[[Path], None], args: list[str], code: int, *fragments: str
) -> Callable:
    def inject(base: Path, tmp: Path) -> Outcome:
        results = copy_of(base, tmp)
        before = rows(results)
        damage(results)
        proc = autotune(*args, "--results", str(results), cwd=tmp)
        ok = one_line(proc, code, *fragments) if code else proc.returncode == 0
        return Outcome(
            name,
            ok,
            lost(before, results),
            proc.returncode,
            (proc.stderr.strip().splitlines() or [""])[-1][:200],
        )

    return inject


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults_cpu.csv")
    args = parser.parse_args(argv)
    faults: list[Callable[[Path, Path], Outcome]] = [
        fault_probe_killed,
        lambda b, t: fault_stopped(b, t, signal.SIGTERM),
        lambda b, t: fault_stopped(b, t, signal.SIGKILL),
        fault_two_runs,
        broken_file("junk studies/act.db", lambda r: (r / "studies" / "act.db").write_bytes(b"junk" * 99),
                    [*RUN, "--force"], 2, "act.db", "move it aside"),
        broken_file("profiles/ is not writable", lambda r: (shutil.rmtree(r / "profiles"), (r / "profiles").write_text("x")),
                    [*RUN, "--force"], 2, "profiles cannot be written"),
        broken_file("non-UTF-8 bytes in runs.csv", lambda r: append(r / "runs.csv", b"\xff\xfe\n"),
                    [*RUN, "--force"], 2, "runs.csv", "not UTF-8"),
        broken_file("a profile that lacks fields", lambda r: (r / "profiles" / "act.json").write_text(json.dumps({"version": 1})),
                    ["show", "--policy", "act"], 2, "act.json", "without"),
        broken_file("a row torn by a crash", lambda r: append(r / "batch_probes.csv", b"torn,2026"),
                    [*RUN], 0),
        broken_file("--set dim_model=0", lambda r: None, [*RUN, "--set", "dim_model=0"], 2, "dim_model"),
        broken_file("--probe-timeout nan", lambda r: None, [*RUN, "--probe-timeout", "nan"], 2, "--probe-timeout"),
        broken_file("predict --memory 1KiB", lambda r: None, ["predict", "--policy", "act", "--memory", "1KiB"], 2, "too small"),
    ]  # fmt: skip
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="autotune-faults-") as tmp:
        base_cwd = Path(tmp) / "base"
        base_cwd.mkdir()
        tuned = autotune(*RUN, "--results", str(base_cwd / "results"), cwd=base_cwd)
        if tuned.returncode != 0:
            print(tuned.stderr[-2000:])
            return 1
        for i, inject in enumerate(faults):
            where = Path(tmp) / f"f{i}"
            where.mkdir()
            outcome = inject(base_cwd / "results", where)
            outcomes.append(outcome)
            print(
                f"{'survived' if outcome.survived else 'FAILED  '}  {outcome.fault}: {outcome.detail}",
                flush=True,
            )
    replace_csv(args.out, COLUMNS, [o.__dict__ for o in outcomes])
    survived = sum(o.survived for o in outcomes)
    print(
        f"faults injected {len(outcomes)}, survived {survived}, rows lost {sum(o.rows_lost for o in outcomes)}"
    )
    print(f"wrote {args.out}")
    return 0 if survived == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
