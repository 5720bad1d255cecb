"""A throw-away PostgreSQL cluster for the fleet's tests: the distribution's real server, started
on a free local port with password authentication, removed afterwards. Never a mock."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

USER = "autotune"
PASSWORD = "fleet-secret"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: `bash scripts/setup.sh --test` installs the "
            "distribution's postgresql package"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """A running cluster; yields its URL (``postgresql://autotune:...@127.0.0.1:PORT/postgres``)."""
    folder = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the distribution's postgres user
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, pwfile, log = folder / "data", folder / "password", folder / "server.log"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    quiet = {"capture_output": True, "text": True, "check": True, "cwd": folder}
    subprocess.run(
        [*run_as, _binary("initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], **quiet,
    )  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=60"
    subprocess.run(
        [*run_as, _binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], **quiet
    )
    try:
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd=folder)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
