"""The trainer that will run the training: which ``lerobot-train`` the user has, and what it can do.

Each release's abilities are rows of :data:`autotune.trainer.releases.RELEASES`, read from LeRobot's
own source at its tag. A version between two rows has the abilities of the row below it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from autotune.errors import UserError
from autotune.trainer.releases import RELEASES, Abilities

__all__ = ["NEWEST_RELEASE", "RELEASES", "Abilities", "Trainer", "abilities", "find_trainer", "parse_version"]

log = logging.getLogger(__name__)

NEWEST_RELEASE = "0.6.1"
OLDEST_SUPPORTED = Version("0.3")
VERSION_TIMEOUT_S = 120.0


def parse_version(text: str) -> Version:
    """A LeRobot version (``0.6.1``, ``0.6.2.dev0``); UserError for anything else or older than 0.3."""
    try:
        version = Version(text.strip().lstrip("v"))
    except InvalidVersion:
        raise UserError(f"--lerobot-version {text!r} is not a version; use one like 0.6.1") from None
    if version < OLDEST_SUPPORTED:
        raise UserError(
            f"LeRobot {version} is older than 0.3, which autotune does not know; upgrade LeRobot "
            "(pip install -U 'lerobot[training]')"
        )
    return version


def newer_than_known(version: str) -> str | None:
    """One line for a LeRobot newer than :data:`RELEASES`' newest row (0.7.0, a typo like 99.0):
    which row's flags the command assumes, and how to check them; None for a known version."""
    newest = RELEASES[-1]
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    if parsed <= Version(newest.since) or parsed.base_version == Version(newest.since).base_version:
        return None
    return (
        f"LeRobot {version} is newer than any autotune knows: its lerobot-train flags are assumed to be "
        f"those of {newest.since} (read at {newest.source}); --verify runs the command in it to check them"
    )


def abilities(version: Version) -> Abilities:
    """The abilities of the newest row at or below ``version``."""
    return [row for row in RELEASES if Version(row.since) <= version][-1]


@dataclass(frozen=True)
class Trainer:
    """The lerobot-train a profile is made for."""

    version: str
    # "path" (--lerobot), "PATH" (found on PATH), "flag" (--lerobot-version), "assumed", or
    # "imported" (the LeRobot in autotune's own Python, which the LeRobot backend measures with)
    source: str
    python: Path | None = None  # the interpreter of its environment, when it is on this machine
    lerobot_train: Path | None = None

    @property
    def abilities(self) -> Abilities:
        return abilities(Version(self.version))

    @property
    def label(self) -> str:
        return f"lerobot-train {self.version}"


def _script_python(script: Path) -> Path | None:
    """The interpreter a console script runs with (its shebang), if it names one."""
    try:
        first = script.read_bytes()[:512].split(b"\n", 1)[0].decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interpreter = first[2:].strip().split()[0] if first[2:].strip() else ""
    return Path(interpreter) if interpreter and Path(interpreter).name.startswith("python") else None


def _lerobot_version(python: Path) -> str | None:
    """LeRobot's version as ``python``'s environment has it installed; None if it has none."""
    code = "import importlib.metadata as m; print(m.version('lerobot'))"
    try:
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _from_path(path: Path, source: str) -> Trainer:
    """The trainer at ``path``: a ``lerobot-train`` script, a Python interpreter or an environment."""
    path = path.expanduser()
    if path.is_dir():
        python, script = path / "bin" / "python", path / "bin" / "lerobot-train"
    elif path.name.startswith("python"):
        python, script = path, path.parent / "lerobot-train"
    else:
        python, script = _script_python(path), path
    if python is None or not python.exists():
        raise UserError(
            f"--lerobot {path}: not a lerobot-train, a Python or an environment; pass one of them"
        )
    version = _lerobot_version(python)
    if version is None:
        raise UserError(
            f"--lerobot {path}: {python} has no LeRobot installed; pass the lerobot-train of the "
            "environment you train in"
        )
    parse_version(version)
    return Trainer(version, source, python, script if script.exists() else None)


def trainer_at(path: Path, source: str) -> Trainer:
    """The trainer of the lerobot-train, Python or environment at ``path``; ``UserError`` if none."""
    return _from_path(path, source)


def _noted(trainer: Trainer) -> Trainer:
    if (note := newer_than_known(trainer.version)) is not None:
        log.warning("%s", note)
    return trainer


def find_trainer(lerobot: str | None = None, lerobot_version: str | None = None) -> Trainer:
    """The lerobot-train that will train: ``--lerobot``, else ``--lerobot-version``, else the one on
    PATH, else the LeRobot installed in this Python; with none, the newest release (said in one line)."""
    if lerobot is not None and lerobot_version is not None:
        raise UserError("--lerobot and --lerobot-version name the same thing; pass one of them")
    if lerobot is not None:
        return _noted(_from_path(Path(lerobot), "path"))
    if lerobot_version is not None:
        return _noted(Trainer(str(parse_version(lerobot_version)), "flag"))
    found = shutil.which("lerobot-train", path=os.environ.get("PATH"))
    if found is not None:
        try:
            return _noted(_from_path(Path(found), "PATH"))
        except UserError as exc:
            log.warning("the lerobot-train on PATH (%s) is not usable: %s", found, exc)
    if importlib.util.find_spec("lerobot") is not None:  # autotune installed into a LeRobot environment
        try:
            return _noted(_from_path(Path(sys.executable), "imported"))
        except UserError as exc:
            log.warning("the LeRobot in this Python is not usable: %s", exc)
    log.info(
        "no lerobot-train found (none on PATH, no --lerobot): tuning for the newest release, LeRobot %s",
        NEWEST_RELEASE,
    )
    return Trainer(NEWEST_RELEASE, "assumed")
