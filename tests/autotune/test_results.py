"""Append-only CSVs: rows appended whole, never rewritten; foreign files left untouched."""

from __future__ import annotations

import pandas as pd
import pytest

from autotune.errors import UserError
from autotune.outputs.results import BATCH_PROBE_COLUMNS, RUN_COLUMNS, ResultsWriter, append_rows, replace_csv


def test_rows_are_appended_never_rewritten(tmp_path) -> None:
    path = tmp_path / "batch_probes.csv"
    first = {c: "" for c in BATCH_PROBE_COLUMNS} | {"run_id": "a", "batch_size": 1, "status": "ok"}
    second = first | {"run_id": "b", "batch_size": 2, "status": "oom"}
    append_rows(path, BATCH_PROBE_COLUMNS, [first])
    before = path.read_bytes()
    append_rows(path, BATCH_PROBE_COLUMNS, [second])
    assert path.read_bytes().startswith(before)
    frame = pd.read_csv(path)
    assert list(frame.columns) == BATCH_PROBE_COLUMNS
    assert frame["run_id"].tolist() == ["a", "b"]
    assert frame["status"].tolist() == ["ok", "oom"]


def test_a_csv_with_other_columns_is_left_untouched(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("run_id,something_else\nx,1\n")
    with pytest.raises(UserError, match="other autotune version"):
        ResultsWriter(tmp_path, {"run_id": "y"})
    assert path.read_text() == "run_id,something_else\nx,1\n"
    assert RUN_COLUMNS[0] == "run_id"


def test_an_unknown_column_is_refused_before_anything_is_written(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    with pytest.raises(ValueError):
        append_rows(path, RUN_COLUMNS, [{"run_id": "a", "not_a_column": 1}])
    assert not path.exists()


def test_replace_csv_leaves_the_old_file_whole_when_a_row_is_bad(tmp_path) -> None:
    path = tmp_path / "table.csv"
    replace_csv(path, ["a", "b"], [{"a": 1, "b": None}])
    assert path.read_text() == "a,b\n1,\n"
    with pytest.raises(ValueError):
        replace_csv(path, ["a", "b"], [{"a": 2, "b": 3}, {"a": 4, "c": 5}])
    assert path.read_text() == "a,b\n1,\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_csv_from_an_older_autotune_gains_the_new_columns_and_keeps_its_rows(tmp_path) -> None:
    path = tmp_path / "batch_probes.csv"
    old_columns = [c for c in BATCH_PROBE_COLUMNS if c not in ("alloc_retries", "steps")]
    replace_csv(path, old_columns, [{c: "" for c in old_columns} | {"run_id": "old", "batch_size": 7}])
    append_rows(
        path, BATCH_PROBE_COLUMNS, [{c: "" for c in BATCH_PROBE_COLUMNS} | {"run_id": "new", "steps": 3}]
    )
    frame = pd.read_csv(path)
    assert list(frame.columns) == BATCH_PROBE_COLUMNS
    assert frame["run_id"].tolist() == ["old", "new"]
    assert (
        frame["batch_size"].iloc[0] == 7 and pd.isna(frame["steps"].iloc[0]) and frame["steps"].iloc[1] == 3
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch_probes.csv"]


def test_a_csv_with_bytes_that_are_not_utf8_is_named_and_left_alone(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_bytes(b"run_id,x\n\xff\xfe,1\n")
    with pytest.raises(UserError, match=r"runs.csv is not a CSV autotune wrote.*move it aside"):
        ResultsWriter(tmp_path, {"run_id": "y"})
    assert path.read_bytes() == b"run_id,x\n\xff\xfe,1\n"


def test_a_row_torn_by_a_crash_is_moved_aside_and_never_glued_to(tmp_path) -> None:
    path = tmp_path / "batch_probes.csv"
    whole = {c: "" for c in BATCH_PROBE_COLUMNS} | {"run_id": "a", "batch_size": 1}
    append_rows(path, BATCH_PROBE_COLUMNS, [whole])
    intact = path.read_text()
    with open(path, "a") as f:
        f.write("b,2026-11-25,act,cpu,,fp32,Fal")  # the crash came mid-row
    append_rows(path, BATCH_PROBE_COLUMNS, [whole | {"run_id": "c"}])
    frame = pd.read_csv(path)
    assert frame.run_id.tolist() == ["a", "c"]
    assert path.read_text().startswith(intact)
    (aside,) = tmp_path.glob("batch_probes.csv.torn-*")
    assert aside.read_text() == "b,2026-11-25,act,cpu,,fp32,Fal"
