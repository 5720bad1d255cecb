"""``autotune schedule``: the same ``autotune run`` every night, as a systemd user timer or a cron line.

The nightly run re-tunes when the machine changed and otherwise checks the profile; a regression
makes it exit 4, so systemd marks the run failed (``systemctl --user status``) and cron mails it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from autotune.errors import UserError
from autotune.files import write_atomic

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_time(text: str) -> tuple[int, int]:
    match = _TIME.match(text.strip())
    if not match:
        raise UserError(f"--at {text!r}: use HH:MM on a 24-hour clock, e.g. 03:00")
    return int(match.group(1)), int(match.group(2))


def autotune_command() -> list[str]:
    """How to start this autotune from anywhere: its script beside this Python, else ``-m``."""
    script = Path(sys.executable).with_name("autotune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "autotune"]


def nightly_command(policy: str, results: Path, extra: list[str]) -> tuple[str, Path]:
    """The shell command the timer runs, and its log file."""
    results = results.resolve()
    log = results / f"nightly-{policy}.log"
    argv = [*autotune_command(), "run", "--policy", policy, "--results", str(results), *extra]
    # The folder first: the shell opens the log before autotune would create it.
    return f"mkdir -p {shlex.quote(str(results))} && {shlex.join(argv)} >> {shlex.quote(str(log))} 2>&1", log


def units(policy: str, at: tuple[int, int], command: str, workdir: Path) -> dict[str, str]:
    """The systemd user service and timer, by file name."""
    name = f"autotune-{policy}"
    service = (
        "[Unit]\n"
        f"Description=autotune: re-tune or check the {policy} profile\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={workdir}\n"
        f"ExecStart=/bin/sh -c {shlex.quote(command)}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=autotune nightly for {policy}\n\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {at[0]:02d}:{at[1]:02d}:00\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def unit_folder() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def schedule(policy: str, at_text: str, results: Path, extra: list[str], install: bool) -> int:
    at = parse_time(at_text)
    workdir = Path.cwd()
    command, log = nightly_command(policy, results, extra)
    files = units(policy, at, command, workdir)
    cron = f"{at[1]} {at[0]} * * * cd {shlex.quote(str(workdir))} && {command}"
    if install:
        folder = unit_folder()
        for name, text in files.items():
            write_atomic(folder / name, text)
        print(f"wrote {', '.join(str(folder / n) for n in files)}")
        if shutil.which("systemctl") is None:
            print("this machine has no systemctl: use the cron line below instead (crontab -e)")
        else:
            print(
                f"enable it: systemctl --user daemon-reload && systemctl --user enable --now autotune-{policy}.timer"
            )
            print("to run while you are logged out: loginctl enable-linger $USER")
    else:
        for name, text in files.items():
            print(f"# {unit_folder() / name}")
            print(text)
        print(
            f"# enable: systemctl --user daemon-reload && systemctl --user enable --now autotune-{policy}.timer"
        )
        print("# (or --install to write the files)")
    print(f"# without systemd, a crontab line (crontab -e):\n{cron}")
    print(f"# it logs to {log}; exit 4 means a regression (see results/alerts.csv)")
    return 0
