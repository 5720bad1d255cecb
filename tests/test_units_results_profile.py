"""Sizes and shapes, append-only CSVs, and the atomic, versioned profile."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from autotune.errors import UserError
from autotune.profile import command_line, lerobot_train_args, read_profile
from autotune.results import BATCH_PROBE_COLUMNS, RUN_COLUMNS, ResultsWriter, append_rows, replace_csv
from autotune.units import format_bytes, parse_image_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12GiB", 12 * 1024**3),
        ("800MiB", 800 * 1024**2),
        ("1.5 GiB", int(1.5 * 1024**3)),
        ("2GB", 2 * 10**9),
        ("4096", 4096),
    ],
)
def test_sizes_parse_binary_and_decimal_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12 parsecs", "GiB", "-3GiB", "0GiB", "1e3GiB", "twelve"])
def test_malformed_sizes_are_rejected_with_the_value_named(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_image_sizes_parse_as_height_by_width() -> None:
    assert parse_image_size("480x640") == (480, 640)
    assert parse_image_size(" 96X128 ") == (96, 128)
    for bad in ("480", "480x", "0x640", "480x-1", "axb", "480x640x3"):
        with pytest.raises(ValueError, match="image size"):
            parse_image_size(bad)


def test_format_bytes_uses_binary_units() -> None:
    assert format_bytes(1536 * 1024**2) == "1.50 GiB"
    assert format_bytes(512) == "512 B"


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


def test_a_profile_of_another_version_is_refused(tmp_path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "act.json").write_text(json.dumps({"version": 999}))
    with pytest.raises(UserError, match="version"):
        read_profile(tmp_path, "act")
    (tmp_path / "profiles" / "act.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        read_profile(tmp_path, "act")
    assert read_profile(tmp_path, "smolvla") is None


def test_lerobot_command_carries_the_tuned_values() -> None:
    args = lerobot_train_args(
        policy_args=["--policy.type=act"],
        dataset_repo_id="me/so101_pick",
        dataset_root=None,
        device="cuda:0",
        precision="bf16",
        batch_size=96,
        num_workers=6,
        prefetch_factor=2,
    )
    line = command_line(args)
    assert line.startswith("lerobot-train ")
    for flag in (
        "--policy.type=act",
        "--dataset.repo_id=me/so101_pick",
        "--batch_size=96",
        "--num_workers=6",
        "--prefetch_factor=2",
        "--accelerator.mixed_precision=bf16",
        "--policy.device=cuda",
    ):
        assert flag in args
    fp32_no_workers = lerobot_train_args(
        policy_args=[],
        dataset_repo_id="x/y",
        dataset_root="/data/x y",
        device="cpu",
        precision="fp32",
        batch_size=4,
        num_workers=0,
        prefetch_factor=None,
    )
    assert not any(a.startswith(("--prefetch_factor", "--accelerator.mixed")) for a in fp32_no_workers)
    assert "'--dataset.root=/data/x y'" in command_line(fp32_no_workers)


def test_replace_csv_leaves_the_old_file_whole_when_a_row_is_bad(tmp_path) -> None:
    path = tmp_path / "table.csv"
    replace_csv(path, ["a", "b"], [{"a": 1, "b": None}])
    assert path.read_text() == "a,b\n1,\n"
    with pytest.raises(ValueError):
        replace_csv(path, ["a", "b"], [{"a": 2, "b": 3}, {"a": 4, "c": 5}])
    assert path.read_text() == "a,b\n1,\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
