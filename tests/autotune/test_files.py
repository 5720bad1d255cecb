"""Nothing half-written: a failed write leaves the file as it was and says, in one line, what to do."""

from __future__ import annotations

import errno
import os

import pytest

from autotune.errors import UserError
from autotune.files import append_whole, write_atomic
from autotune.run.results_folder import ensure_writable


def full_disk(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_temporary_file_and_the_old_file_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / "act.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(
        UserError, match=r"act.json cannot be written \(No space left on device\); the disk is full"
    ):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["act.json"]


def test_a_full_disk_mid_append_cuts_the_file_back_to_its_whole_rows(tmp_path, monkeypatch) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("a,b\n1,2\n")
    real_fsync = os.fsync

    def write_then_fail(fd: int) -> None:
        real_fsync(fd)  # the bytes reached the file, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", write_then_fail)
    with pytest.raises(UserError, match="runs.csv cannot be written"):
        append_whole(path, "3,4\n")
    assert path.read_text() == "a,b\n1,2\n"


def test_every_folder_a_run_writes_is_checked_before_it_starts(tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "profiles").write_text("a file where the folder should be")
    with pytest.raises(UserError, match=r"folder .*profiles cannot be written.*--results"):
        ensure_writable(results)
    assert (results / "profiles").read_text() == "a file where the folder should be"
