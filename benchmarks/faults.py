"""Faults an operator meets, injected into real runs: does autotune answer cleanly, and is a row lost?

One real tune (a cut-down ACT on the CPU) fills a results folder; then each fault is injected into a
copy of it (or into a fresh run) and the outcome checked. A fault is *clean* when autotune gives
what it owes: the one line (no traceback) and the exit code; for a refusal, every file in the
results folder byte for byte as it was (nothing half-written, nothing added); no password in its
output or in any file it wrote; no process or temporary folder left behind after a signal; and
every CSV row written before the fault still there.

    python benchmarks/faults.py                      # ~6 minutes on 2 CPU cores (the tune included)

Prints one line per fault and ``N tried / N clean / K rows lost``; writes
``benchmarks/results/faults_cpu.csv`` (``--out``): ``fault``, ``kind``, ``clean``, ``rows_lost``,
``exit_code``, ``seconds``, ``detail``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.outputs.results import FILES, replace_csv  # noqa: E402
from autotune.run.probe_client import run_probe  # noqa: E402
from probes.catalogue import cut_down, set_flags  # noqa: E402
from probes.memory import children_of  # noqa: E402
from probes.protocol import ModelSpec, ProbeRequest  # noqa: E402

SMALL = set_flags(cut_down("act", "tests"))
RUN = ["run", "--policy", "act", "--device", "cpu", "--memory-limit", "600MiB", "--image-size", "48x64",
       "--trials", "1", "--trainer-only", "--soak-steps", "1", "--throughput-points", "1", *SMALL]  # fmt: skip
COLUMNS = ["fault", "kind", "clean", "rows_lost", "exit_code", "seconds", "detail"]
SECRET = "s3cr3t-Pw"  # a password that must show nowhere


@dataclass
class Outcome:
    fault: str
    kind: str
    clean: bool
    rows_lost: int
    exit_code: int | None
    detail: str
    seconds: float = 0.0


def autotune(
    *args: str, cwd: Path, wait: bool = True, **env: str
) -> subprocess.Popen | subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k != "AUTOTUNE_STORAGE"}  # only the fault's
    full_env = {**inherited, "PYTHONPATH": str(ROOT), **env}
    cmd = [sys.executable, "-m", "autotune", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=1800)


def rows(results: Path) -> dict[str, list[str]]:
    """The whole rows of each CSV (a line a crash tore is not a row: autotune moves it aside)."""
    import csv

    out = {}
    for name in FILES:
        path = results / name
        if not path.is_file():
            continue
        lines = path.read_bytes().decode(errors="replace").splitlines()
        width = len(next(csv.reader(lines[:1]), []))
        out[name] = lines[:1] + [line for line in lines[1:] if len(next(csv.reader([line]), [])) == width]
    return out


def lost(before: dict[str, list[str]], after_results: Path) -> int:
    """Rows of ``before`` missing from the files now (a file rewritten with added columns keeps its
    rows: compared by run_id and timestamp)."""
    now = rows(after_results)
    missing = 0
    for name, lines in before.items():
        kept = {",".join(line.split(",")[:2]) for line in now.get(name, [])[1:]}
        missing += sum(",".join(line.split(",")[:2]) not in kept for line in lines[1:])
    return missing


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file aside: a run that takes it leaves it empty)."""
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".autotune-")
    }


def secrets_in(where: Path) -> set[Path]:
    """The files under ``where`` that hold the password."""
    return {
        path
        for path in where.rglob("*")
        if path.is_file() and not path.is_symlink() and SECRET.encode() in path.read_bytes()
    }


def leaks(
    where: Path, proc: subprocess.CompletedProcess, planted: set[Path], allowed: Path | None = None
) -> list[str]:
    """Where the password shows: the command's output, or a file under ``where`` that the fault did
    not plant, other than ``allowed`` (which must then be readable by its owner only)."""
    found = ["output"] if SECRET in (proc.stdout or "") + (proc.stderr or "") else []
    for path in sorted(secrets_in(where) - planted):
        if allowed is not None and path == allowed and stat.S_IMODE(path.stat().st_mode) == 0o600:
            continue
        found.append(str(path.relative_to(where)))
    return found


def one_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> bool:
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("[autotune]")]
    return (
        proc.returncode == code
        and len(lines) == 1
        and "Traceback" not in proc.stderr
        and all(f in lines[0] for f in fragments)
    )


def last_line(proc: subprocess.CompletedProcess) -> str:
    """The line a user reads last: stderr's, else stdout's."""
    lines = [x for x in proc.stderr.splitlines() if x.strip()] or [
        x for x in proc.stdout.splitlines() if x.strip()
    ]
    return lines[-1][:200] if lines else ""


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
                    now = children_of(tuner.pid)
                    if now:  # a short probe (the environment's) may have ended meanwhile: wait on
                        return now
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


# --- signals and processes ------------------------------------------------------------------------


def fault_probe_killed(base: Path, tmp: Path) -> Outcome:
    spec = ModelSpec("act", 2, (48, 64), 6, 6, False, cut_down("act", "narrow"))
    request = ProbeRequest(kind="batch", model=spec, batch_size=2, memory_limit_bytes=2 * 1024**3)
    started: list[int] = []

    def kill_first(pid: int) -> None:
        started.append(pid)
        if len(started) == 1:
            os.kill(pid, signal.SIGKILL)

    result = run_probe(request, 300, on_start=kill_first)
    return Outcome("probe child SIGKILLed", "signal", result.status == "ok" and len(started) == 2, 0, None,
                   f"{len(started)} children; the second measured ({result.status})")  # fmt: skip


EXIT_ON = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}


def stopped(name: str, args: list[str], sig: signal.Signals, with_results: bool = True) -> Callable:
    """``autotune ARGS`` stopped by ``sig`` once its first probe child runs: the exit code and line
    it owes, every descendant gone within 3 s (10 s after SIGKILL: the child must notice its parent
    is gone), no temporary folder left, no row lost."""
    within_s = 10.0 if sig == signal.SIGKILL else 3.0

    def inject(base: Path, tmp: Path) -> Outcome:
        results = copy_of(base, tmp)
        before = rows(results)
        (tmp / "t").mkdir()
        extra = ["--results", str(results)] if with_results else []
        tuner = autotune(*args, *extra, cwd=tmp, wait=False, TMPDIR=str(tmp / "t"))
        descendants = wait_for_probe(tuner)
        tuner.send_signal(sig)
        sent = time.monotonic()
        _, err = tuner.communicate(timeout=120)
        while alive(descendants) and time.monotonic() - sent < 10:
            time.sleep(0.05)
        gone_s = time.monotonic() - sent
        leftovers = list((tmp / "t").glob("autotune-probe-*"))
        ok = bool(descendants) and not alive(descendants) and not leftovers and gone_s < within_s
        if sig in EXIT_ON:
            code, said = EXIT_ON[sig]
            ok = (
                ok
                and tuner.returncode == code
                and err.strip().endswith(f"{said}; earlier results are intact")
            )
            ok = ok and "Traceback" not in err
        return Outcome(name, "signal", ok, lost(before, results), tuner.returncode,
                       f"{len(descendants)} descendants, {len(alive(descendants))} left after {gone_s:.1f} s; "
                       f"{len(leftovers)} temp folders left")  # fmt: skip

    inject.fault = name  # type: ignore[attr-defined]
    return inject


def fault_two_runs(base: Path, tmp: Path) -> Outcome:
    results = copy_of(base, tmp)
    first = autotune(*RUN, "--force", "--results", str(results), cwd=tmp, wait=False)
    wait_for_probe(first)
    second = autotune(*RUN, "--force", "--results", str(results), cwd=tmp)
    ok = one_line(second, 2, f"autotune run {first.pid}", "--wait")
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    return Outcome("two runs into one results folder", "run", ok, 0, second.returncode, last_line(second))


# --- bad input: one line, and everything as it was ------------------------------------------------


def case(
    name: str,
    kind: str,
    args: list[str],
    code: int,
    *fragments: str,
    damage: Callable[[Path, Path], object] = lambda r, t: None,
    results_flag: bool = True,
    unchanged: bool | None = None,
    said: str | None = None,
    check: Callable[[Path, Path, subprocess.CompletedProcess], str | None] = lambda r, t, p: None,
) -> Callable[[Path, Path], Outcome]:
    """``autotune ARGS`` on a copy of the results folder after ``damage``: exit ``code``, and with a
    non-zero code exactly one line holding ``fragments``; with 0, no traceback and ``said`` (if
    given) on stderr. A refusal (``unchanged``, by default for a non-zero code) leaves every file
    of the results folder as it was. ``check`` returns what else is wrong, or None."""
    keep = code != 0 if unchanged is None else unchanged

    def inject(base: Path, tmp: Path) -> Outcome:
        results = copy_of(base, tmp)
        damage(results, tmp)
        before, files, planted = rows(results), snapshot(results), secrets_in(tmp)
        env = {"XDG_CONFIG_HOME": str(tmp / "config")}
        proc = autotune(*args, *(["--results", str(results)] if results_flag else []), cwd=tmp, **env)
        if code:
            ok = one_line(proc, code, *fragments)
        else:
            ok = (
                proc.returncode == 0
                and "Traceback" not in proc.stderr
                and (said is None or said in proc.stderr)
            )
        problems = [] if ok else [f"exit {proc.returncode}, not the line owed"]
        after = snapshot(results)
        if kind == "history":  # history draws its plot: nothing else
            after.pop("plots/act-history.png", None)
        if keep and after != files:
            problems.append("the results folder changed")
        if found := leaks(tmp, proc, planted, allowed=tmp / "config" / "autotune" / "storage-act.url"):
            problems.append(f"password in {', '.join(found)}")
        if (other := check(results, tmp, proc)) is not None:
            problems.append(other)
        detail = last_line(proc) if not problems else "; ".join(problems) + " | " + last_line(proc)
        return Outcome(name, kind, not problems, lost(before, results), proc.returncode, detail)

    inject.fault = name  # type: ignore[attr-defined]
    return inject


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def edit_profile(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def damage(results: Path, tmp: Path) -> None:
        path = results / "profiles" / "act.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))

    return damage


def not_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-60] + b"\xff\xfe\x00 broken\n")


def torn_runs_row(results: Path, tmp: Path) -> None:
    """A copy of the last row with another torch, cut by a crash just after its status."""
    path = results / "runs.csv"
    text = path.read_text()
    last = text.splitlines()[-1].replace("2.14.1", "2.15.0")
    cut = last.index(",ok,") + len(",ok,")
    path.write_text(text + last[:cut])


def edit_runs_value(column: str, value: str) -> Callable[[Path, Path], None]:
    """A second run's row (a copy of the last, a day later) holding ``value`` in ``column``."""

    def damage(results: Path, tmp: Path) -> None:
        import csv
        import io

        path = results / "runs.csv"
        table = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        copy = list(table[-1])
        copy[table[0].index("run_id")] += "-copy"
        copy[table[0].index("timestamp")] = "2099-01-01T03:00:00+00:00"
        copy[table[0].index(column)] = value
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(copy)
        append(path, out.getvalue().encode())

    return damage


def plots_unwritable(results: Path, tmp: Path) -> None:
    folder = results / "plots"
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anyway: make it immutable instead
        folder.chmod(0o700)
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)


def secret_file(mode: int) -> Callable[[Path, Path], None]:
    def damage(results: Path, tmp: Path) -> None:
        path = tmp / "storage.url"
        path.write_text(f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db\n")
        path.chmod(mode)

    return damage


def no_file(relative: str) -> Callable[[Path, Path, subprocess.CompletedProcess], str | None]:
    return lambda r, t, p: f"{relative} was created" if (t / relative).exists() else None


def units_hold_no_secret(results: Path, tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
    units = tmp / "config" / "systemd" / "user"
    secret = tmp / "config" / "autotune" / "storage-act.url"
    if not (units / "autotune-act.service").exists():
        return "no units written"
    if not secret.exists() or stat.S_IMODE(secret.stat().st_mode) != 0o600:
        return "the URL file is not the owner's only (0600)"
    if f"--storage-file {secret}" not in (units / "autotune-act.service").read_text():
        return "the unit does not read the URL file"
    return None


def percent_escaped(results: Path, tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
    service = (tmp / "config" / "systemd" / "user" / "autotune-act.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    cron = next((line for line in proc.stdout.splitlines() if line.startswith("0 3 * * *")), "")
    if "100%%" not in exec_start or "%" in exec_start.replace("%%", ""):
        return f"ExecStart not escaped: {exec_start[:120]}"
    if "100\\%" not in cron or "%" in cron.replace("\\%", ""):
        return f"cron line not escaped: {cron[:120]}"
    return None


def table_printed(results: Path, tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
    return None if "max batch" in proc.stdout else "the table was not printed"


def no_made_up_change(results: Path, tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
    return "a change made up from the torn row" if "->" in proc.stdout else None


def faults() -> list[Callable[[Path, Path], Outcome]]:
    url_abc = f"postgresql://u:{SECRET}@127.0.0.1:abc/db"
    url_v6 = f"postgresql://u:{SECRET}@[::1"
    url_one_slash = f"postgresql:/u:{SECRET}@127.0.0.1/db"
    url_closed = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"
    fleet, quick_run = ["fleet"], [*RUN, "--force"]
    nightly = ["schedule", "--policy", "act", "--install", "--"]
    here = {"results_flag": False}  # schedule's own --results: ./results, the copy
    model = lambda d: d["memory_model"]  # noqa: E731
    return [
        # Signals, processes, the lock.
        fault_probe_killed,
        stopped("autotune run SIGTERM", [*RUN, "--force"], signal.SIGTERM),
        stopped("autotune run SIGINT (Ctrl-C)", [*RUN, "--force"], signal.SIGINT),
        stopped("autotune run SIGKILL", [*RUN, "--force"], signal.SIGKILL),
        stopped("autotune estimate SIGTERM (children in threads)", ["estimate", "--policy", "act", "--memory", "12GiB"], signal.SIGTERM, False),
        stopped("autotune estimate SIGINT (children in threads)", ["estimate", "--policy", "act", "--memory", "12GiB"], signal.SIGINT, False),
        stopped("autotune describe SIGTERM", ["describe", "--policy", "act"], signal.SIGTERM, False),
        fault_two_runs,
        # Storage URLs: one line, and the password nowhere.
        case("fleet: a port that is not a number", "storage", [*fleet, "--storage", url_abc], 2, "not a database URL", results_flag=False),
        case("run: an IPv6 host without its ]", "storage", [*quick_run, "--storage", url_v6], 2, "not a database URL"),
        case("fleet: postgresql:/ (one slash) with a password", "storage", [*fleet, "--storage", url_one_slash], 2, "u:***@", results_flag=False),
        case("run: postgresql:/ (one slash) with a password", "storage", [*quick_run, "--storage", url_one_slash], 2, "u:***@"),
        case("run: a port over 65535", "storage", [*quick_run, "--storage", f"postgresql://u:{SECRET}@h:99999/db"], 2, "port 99999"),
        case("fleet: a closed port", "storage", [*fleet, "--storage", url_closed], 2, "cannot be reached", results_flag=False),
        case("run: a closed port", "storage", [*quick_run, "--storage", url_closed], 2, "cannot be reached"),
        case("fleet: a database driver that is not installed", "storage", [*fleet, "--storage", f"mysql://u:{SECRET}@h/db"], 2, "mysql://u:***@h/db", results_flag=False),
        case("fleet: sqlite:/// of a file that is not there", "storage", [*fleet, "--storage", "sqlite:///typo.db"], 2, "no database", results_flag=False, check=no_file("typo.db")),
        case("fleet: a SQLite file that is not a database", "storage", [*fleet, "--storage", "sqlite:///results/runs.csv"], 2, "cannot be opened", results_flag=False),
        case("fleet: a --storage-file others can read", "storage", [*fleet, "--storage-file", "storage.url"], 2, "chmod 600", damage=secret_file(0o644), results_flag=False),
        case("fleet: a --storage-file that is not there", "storage", [*fleet, "--storage-file", "missing.url"], 2, "no such file", results_flag=False),
        case("fleet: no storage named", "storage", fleet, 2, "--storage", results_flag=False),
        # runs.csv and autotune history.
        case("history: runs.csv not UTF-8", "history", ["history", "--policy", "act"], 2, "not UTF-8", damage=lambda r, t: append(r / "runs.csv", b"\xff\xfe\n")),
        case("history: runs.csv of 0 bytes", "history", ["history", "--policy", "act"], 2, "is empty", damage=lambda r, t: (r / "runs.csv").write_bytes(b"")),
        case("history: runs.csv of foreign columns", "history", ["history", "--policy", "act"], 2, "columns autotune does not write", damage=lambda r, t: (r / "runs.csv").write_text("name,score\nx,1\n")),
        case("history: a samples_per_s that is not a number", "history", ["history", "--policy", "act"], 0, said="is not a number", unchanged=True, damage=edit_runs_value("samples_per_s", "fast")),
        case("history: a timestamp that is not a time", "history", ["history", "--policy", "act"], 0, said="is not a time", unchanged=True, damage=edit_runs_value("timestamp", "yesterday")),
        case("history: a torn last row of runs.csv", "history", ["history", "--policy", "act"], 0, said="cut short", unchanged=True, damage=torn_runs_row, check=no_made_up_change),
        case("history: runs.csv is a folder", "history", ["history", "--policy", "act"], 2, "cannot be read", damage=lambda r, t: ((r / "runs.csv").unlink(), (r / "runs.csv").mkdir())),
        case("history: plots/ is a file", "history", ["history", "--policy", "act"], 2, "cannot be written", damage=lambda r, t: (shutil.rmtree(r / "plots"), (r / "plots").write_text("x")), check=table_printed),
        case("history: plots/ cannot be written", "history", ["history", "--policy", "act"], 2, "cannot be written", damage=plots_unwritable, check=table_printed),
        # Profiles: validated once when read, by every reader.
        case("show: a profile that is not UTF-8", "profile", ["show", "--policy", "act"], 2, "not UTF-8", "move it aside or re-tune", damage=lambda r, t: not_utf8(r / "profiles" / "act.json")),
        case("verify: a profile that is not UTF-8", "profile", ["verify", "--policy", "act"], 2, "not UTF-8", damage=lambda r, t: not_utf8(r / "profiles" / "act.json")),
        case("predict: a memory model without fixed_bytes", "profile", ["predict", "--policy", "act", "--memory", "12GiB"], 2, "memory_model.fixed_bytes", "move it aside or re-tune", damage=edit_profile(lambda d: model(d).pop("fixed_bytes"))),
        case("predict: a slope that is text", "profile", ["predict", "--policy", "act", "--memory", "12GiB"], 2, "memory_model.per_sample_bytes", damage=edit_profile(lambda d: model(d).update(per_sample_bytes="wide"))),
        case("predict: a slope of 0", "profile", ["predict", "--policy", "act", "--memory", "12GiB"], 2, "memory_model.per_sample_bytes is 0", damage=edit_profile(lambda d: model(d).update(per_sample_bytes=0))),
        case("predict: a negative slope", "profile", ["predict", "--policy", "act", "--memory", "12GiB"], 2, "must be positive", damage=edit_profile(lambda d: model(d).update(per_sample_bytes=-4e6))),
        case("show: a profile that lacks fields", "profile", ["show", "--policy", "act"], 2, "act.json", "without", damage=lambda r, t: (r / "profiles" / "act.json").write_text(json.dumps({"version": 1}))),
        case("show: a batch_size that is text", "profile", ["show", "--policy", "act", "--json"], 2, "batch_size", damage=edit_profile(lambda d: d.update(batch_size="twenty"))),
        case("verify: samples_per_s NaN", "profile", ["verify", "--policy", "act"], 2, "samples_per_s", damage=edit_profile(lambda d: d.update(samples_per_s=float("nan")))),
        case("show: a profile that is a JSON list", "profile", ["show", "--policy", "act"], 2, "not a version-1", damage=lambda r, t: (r / "profiles" / "act.json").write_text("[1, 2]")),
        case("predict: the profile is a folder", "profile", ["predict", "--policy", "act", "--memory", "12GiB"], 2, "cannot be read", damage=lambda r, t: ((r / "profiles" / "act.json").unlink(), (r / "profiles" / "act.json").mkdir())),
        case("run (the nightly check): conditions without headroom", "profile", RUN, 2, "conditions.headroom", damage=edit_profile(lambda d: d["conditions"].pop("headroom"))),
        case("predict --memory 1KiB", "profile", ["predict", "--policy", "act", "--memory", "1KiB"], 2, "too small"),
        # autotune schedule: run's own checks, no password in units, % escaped.
        case("schedule: an unknown policy", "schedule", ["schedule", "--policy", "diffusion", "--install"], 2, "unknown policy", **here, check=no_file("config")),
        case("schedule: -- --bogus-flag", "schedule", [*nightly, "--bogus-flag"], 2, "unrecognized arguments: --bogus-flag", **here, check=no_file("config")),
        case("schedule: -- --headroom 5", "schedule", [*nightly, "--headroom", "5"], 2, "--headroom", **here, check=no_file("config")),
        case("schedule: -- --set dim_model=0", "schedule", [*nightly, "--device", "cpu", "--set", "dim_model=0"], 2, "dim_model", **here, check=no_file("config")),
        case("schedule: -- --storage that does not parse", "schedule", [*nightly, "--storage", url_one_slash], 2, "not a database URL", **here, check=no_file("config")),
        case("schedule --install with a --storage password", "schedule", [*nightly, "--device", "cpu", "--storage", f"postgresql://u:{SECRET}@db.lab/autotune"], 0, **here, check=units_hold_no_secret),
        case("schedule --install into a folder with %", "schedule", ["schedule", "--policy", "act", "--install", "--results", "100%-results", "--", "--device", "cpu"], 0, **here, check=percent_escaped),
        case("schedule: -- --lerobot-version 99.0", "schedule", ["schedule", "--policy", "act", "--", "--device", "cpu", "--lerobot-version", "99.0"], 0, **here, said="newer than any autotune knows"),
        case("schedule --at 25:00", "schedule", ["schedule", "--policy", "act", "--at", "25:00"], 2, "--at", **here),
        # autotune run: refused before anything is written.
        case("run: junk studies/act.db", "run", quick_run, 2, "act.db", "move it aside", damage=lambda r, t: (r / "studies" / "act.db").write_bytes(b"junk" * 99)),
        case("run: profiles/ is a file", "run", quick_run, 2, "profiles cannot be written", damage=lambda r, t: (shutil.rmtree(r / "profiles"), (r / "profiles").write_text("x"))),
        case("run: non-UTF-8 bytes in runs.csv", "run", quick_run, 2, "runs.csv", "not UTF-8", damage=lambda r, t: append(r / "runs.csv", b"\xff\xfe\n")),
        case("run: a row torn by a crash", "run", RUN, 0, unchanged=False, damage=lambda r, t: append(r / "batch_probes.csv", b"torn,2026")),
        case("run: --results is a file", "run", [*RUN, "--results", "results/runs.csv"], 2, "is a file", results_flag=False),
        case("run: --image-size 1x1", "run", [*RUN, "--image-size", "1x1"], 2, "--image-size", "at least 8"),
        case("run: --image-size 47x64", "run", [*RUN, "--image-size", "47x64"], 2, "--image-size", "even"),
        case("run: --image-size 100000x100000", "run", [*RUN, "--image-size", "100000x100000"], 2, "--image-size", "at most"),
        case("run: --memory-limit 1KiB", "run", [*RUN, "--memory-limit", "1KiB"], 2, "--memory-limit", "below"),
        case("run: --lerobot-version 99.0 (a note), --set dim_model=0", "run", [*RUN, "--lerobot-version", "99.0", "--set", "dim_model=0"], 2, "dim_model", check=lambda r, t, p: None if "newer than any autotune knows" in p.stderr else "no note for 99.0"),
        case("run: --set dim_model=0", "run", [*RUN, "--set", "dim_model=0"], 2, "dim_model"),
        case("run: --probe-timeout nan", "run", [*RUN, "--probe-timeout", "nan"], 2, "--probe-timeout"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults_cpu.csv")
    parser.add_argument("--only", default=None, help="run only the faults whose name holds this text")
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="a results folder of one finished `autotune run` (as RUN makes it) to inject into, "
        "instead of tuning one first",
    )
    args = parser.parse_args(argv)
    chosen = [f for f in faults() if args.only is None or args.only in getattr(f, "fault", f.__name__)]
    outcomes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autotune-faults-") as tmp:
        base = args.base
        if base is None:
            base_cwd = Path(tmp) / "base"
            base_cwd.mkdir()
            base = base_cwd / "results"
            tuned = autotune(*RUN, "--results", str(base), cwd=base_cwd)
            if tuned.returncode != 0:
                print(tuned.stderr[-2000:])
                return 1
            print(f"tuned the base results folder in {time.monotonic() - started:.0f} s", flush=True)
        for i, inject in enumerate(chosen):
            where = Path(tmp) / f"f{i}"
            where.mkdir()
            began = time.monotonic()
            outcome = inject(base, where)
            outcome.seconds = round(time.monotonic() - began, 1)
            outcomes.append(outcome)
            print(f"{'clean' if outcome.clean else 'FAILED'}  {outcome.fault}: {outcome.detail}", flush=True)
            for path in where.glob("*/plots"):  # a folder made immutable must not stop the clean-up
                if path.is_dir():
                    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
                    path.chmod(0o700)
    replace_csv(args.out, COLUMNS, [o.__dict__ for o in outcomes])
    clean = sum(o.clean for o in outcomes)
    print(
        f"{len(outcomes)} tried / {clean} clean / {sum(o.rows_lost for o in outcomes)} rows lost "
        f"({time.monotonic() - started:.0f} s)"
    )
    print(f"wrote {args.out}")
    return 0 if clean == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
