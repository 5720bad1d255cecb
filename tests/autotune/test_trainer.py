"""Finding the lerobot-train that will train, and reading its version."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from autotune.errors import UserError
from autotune.trainer.versions import NEWEST_RELEASE, abilities, find_trainer, parse_version


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("0.3.3", "0.3"),
        ("0.5.1", "0.4"),
        ("v0.6.0", "0.6.0"),
        ("0.6.1", "0.6.1"),
        ("0.6.2.dev0", "0.6.2.dev0"),
    ],
)
def test_a_version_gets_the_abilities_of_its_release(text: str, since: str) -> None:
    assert abilities(parse_version(text)).since == since


@pytest.mark.parametrize(("text", "fragment"), [("banana", "not a version"), ("0.2.9", "older than 0.3")])
def test_a_bad_or_too_old_version_is_one_line(text: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        parse_version(text)


def fake_environment(folder: Path, version: str | None) -> Path:
    """A folder with bin/python answering LeRobot's version like a real environment would."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    body = f'print("{version}")' if version else "raise SystemExit(1)"
    python.write_text(f"#!{sys.executable}\n{body}\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    script = folder / "bin" / "lerobot-train"
    script.write_text(f"#!{python}\nimport sys\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_the_lerobot_train_on_path_is_found_with_its_version(tmp_path, monkeypatch) -> None:
    env = fake_environment(tmp_path / "env", "0.6.1")
    monkeypatch.setenv("PATH", str(env / "bin"))
    trainer = find_trainer()
    assert (trainer.version, trainer.source) == ("0.6.1", "PATH")
    assert trainer.python == env / "bin" / "python" and trainer.lerobot_train == env / "bin" / "lerobot-train"
    for given in (env, env / "bin" / "python", env / "bin" / "lerobot-train"):
        assert find_trainer(lerobot=str(given)).version == "0.6.1"


def test_without_a_lerobot_train_the_newest_release_is_assumed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    trainer = find_trainer()
    assert (trainer.version, trainer.source) == (NEWEST_RELEASE, "assumed")
    assert find_trainer(lerobot_version="0.5.1").abilities.since == "0.4"


def test_a_path_that_is_not_a_lerobot_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match="has no LeRobot installed"):
        find_trainer(lerobot=sys.executable)  # autotune's own Python: no LeRobot in it
    with pytest.raises(UserError, match="has no LeRobot installed"):
        find_trainer(lerobot=str(fake_environment(tmp_path / "other", None)))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a lerobot-train"):
        find_trainer(lerobot=str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match="older than 0.3"):
        find_trainer(lerobot=str(fake_environment(tmp_path / "old", "0.2.0")))


def test_the_newest_release_is_a_version_autotune_knows() -> None:
    assert abilities(Version(NEWEST_RELEASE)).since == NEWEST_RELEASE
