"""``autotune schedule``: the same ``autotune run`` every night, as a systemd user timer or a cron line.

The nightly run re-tunes when the machine changed and otherwise checks the profile; a regression
makes it exit 4, so systemd marks the run failed (``systemctl --user status``) and cron mails it.

The run's flags are checked now, exactly as ``autotune run`` checks them before its first probe
(its parser, then its own checks; no probe runs): what it would refuse is refused here, with its
line, rather than failing every night. A storage URL with a password never goes into a unit file
or a crontab line: it is kept in a file only its owner can read (mode 0600) that the nightly run
reads with ``--storage-file``. ``%`` is escaped for systemd (``%%``) and for cron (``\\%``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.errors import UserError
from autotune.files import write_atomic

if TYPE_CHECKING:
    pass

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


def systemd_escaped(text: str) -> str:
    """``text`` as systemd reads it literally in ``ExecStart=``: ``%`` specifiers, ``$`` variables
    and backslash escapes doubled."""
    return text.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")


def cron_escaped(text: str) -> str:
    """``text`` as cron passes it to the shell: an unescaped ``%`` would end the command."""
    return text.replace("%", "\\%")


def units(policy: str, at: tuple[int, int], command: str, workdir: Path) -> dict[str, str]:
    """The systemd user service and timer, by file name."""
    name = f"autotune-{policy}"
    service = (
        "[Unit]\n"
        f"Description=autotune: re-tune or check the {policy} profile\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={str(workdir).replace('%', '%%')}\n"
        f"ExecStart=/bin/sh -c {systemd_escaped(shlex.quote(command))}\n"
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


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config"))


def unit_folder() -> Path:
    return config_home() / "systemd" / "user"


def storage_file(policy: str) -> Path:
    """Where ``--install`` keeps the nightly run's storage URL (mode 0600)."""
    return config_home() / "autotune" / f"storage-{policy}.url"


def _take_storage(extra: list[str]) -> tuple[list[str], str | None]:
    """``extra`` without its ``--storage URL``, and that URL (else, when no storage flag is given,
    $AUTOTUNE_STORAGE's, which the nightly run would not see)."""
    from autotune.fleet import STORAGE_ENV

    out: list[str] = []
    url = None
    named = False
    flags = iter(extra)
    for flag in flags:
        if flag == "--storage":
            url, named = next(flags, ""), True
        elif flag.startswith("--storage="):
            url, named = flag.partition("=")[2], True
        else:
            named = named or flag == "--storage-file" or flag.startswith("--storage-file=")
            out.append(flag)
    if not named and os.environ.get(STORAGE_ENV, "").strip():
        url = os.environ[STORAGE_ENV].strip()  # the nightly run would not see this shell's environment
    return out, url


def _absolute_storage_file(extra: list[str]) -> list[str]:
    """``--storage-file PATH`` made absolute: the nightly run starts in another folder."""
    out = list(extra)
    for i, flag in enumerate(out):
        if flag == "--storage-file" and i + 1 < len(out):
            out[i + 1] = str(Path(out[i + 1]).expanduser().resolve())
        elif flag.startswith("--storage-file="):
            out[i] = f"--storage-file={Path(flag.partition('=')[2]).expanduser().resolve()}"
    return out


def write_secret(path: Path, text: str) -> None:
    """Write ``path`` whole, readable and writable by its owner only (0600), in a folder only the
    owner can enter if autotune creates it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(
            f"{path} cannot be written ({exc.strerror or exc}); fix that folder and run again"
        ) from None


def schedule(
    policy: str,
    at_text: str,
    results: Path,
    extra: list[str],
    install: bool,
) -> int:
    """Print, or with ``install`` write, the units and the cron line for flags already checked as
    ``autotune run`` checks them (:func:`autotune.cli.schedule.schedule` does that first)."""
    at = parse_time(at_text)
    flags, url = _take_storage(_absolute_storage_file(extra))
    secret_at = None
    if url is not None:
        from autotune.fleet import shown
        from autotune.redact import has_secret

        if has_secret(url):
            secret_at = storage_file(policy)
            flags += ["--storage-file", str(secret_at)]
            shown_url = shown(url)
        else:
            flags += ["--storage", url]
    workdir = Path.cwd()
    command, log = nightly_command(policy, results, flags)
    files = units(policy, at, command, workdir)
    cron = f"{at[1]} {at[0]} * * * cd {cron_escaped(shlex.quote(str(workdir)))} && {cron_escaped(command)}"
    if install:
        if secret_at is not None:
            write_secret(secret_at, url + "\n")  # type: ignore[operator]
            print(f"wrote the storage URL ({shown_url}) to {secret_at}, readable by you only (mode 0600)")
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
        if secret_at is not None:
            print(
                f"# the storage URL ({shown_url}) holds a password: it is not printed; the nightly run "
                f"reads it from {secret_at}, which --install writes (mode 0600), or write it there "
                f"yourself and chmod 600 {secret_at}"
            )
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
