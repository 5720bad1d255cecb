"""Reading a dataset's files (JSON, JSON lines, parquet, path templates); every failure a DatasetError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from probes.dataset.errors import REFETCH_HINT, ROOT_HINT, dataset_error, reason


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise dataset_error(path, "missing", ROOT_HINT)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise dataset_error(
            path, f"not valid JSON ({reason(exc)})", "restore the file from the original dataset"
        ) from exc


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise dataset_error(path, "missing", REFETCH_HINT)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise dataset_error(path, f"line {n} is not valid JSON ({reason(exc)})", REFETCH_HINT) from exc
        if not isinstance(row, dict):
            raise dataset_error(path, f"line {n} is not a JSON object", REFETCH_HINT)
        rows.append(row)
    return rows


def format_path(info_path: Path, template: Any, name: str, **fields: Any) -> str:
    if not isinstance(template, str):
        raise dataset_error(info_path, f"{name} is {template!r}, expected a path template", REFETCH_HINT)
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise dataset_error(
            info_path, f"{name} template {template!r} cannot be filled ({reason(exc)})", REFETCH_HINT
        ) from exc


def read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """A pyarrow table, with every pyarrow failure turned into a DatasetError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise dataset_error(path, "missing", REFETCH_HINT)
    try:
        if columns is not None:
            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise dataset_error(path, f"no column {missing[0]!r}", REFETCH_HINT)
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise dataset_error(path, f"cannot read parquet ({reason(exc)})", REFETCH_HINT) from exc


def read_parquet_schema_names(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise dataset_error(path, f"cannot read parquet ({reason(exc)})", REFETCH_HINT) from exc


def vector_column(table: Any, key: str, path: Path) -> np.ndarray:
    """A list or fixed-size-list column as a float32 (N, D) array."""
    import pyarrow as pa

    column = table.column(key).combine_chunks()
    n = len(column)
    try:
        if (
            pa.types.is_fixed_size_list(column.type)
            or pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)
        ):
            values = column.flatten().to_numpy(zero_copy_only=False)
            return values.astype(np.float32, copy=False).reshape(n, -1) if n else values.reshape(0, 0)
    except (pa.ArrowException, ValueError) as exc:
        raise dataset_error(
            path, f"column {key!r} is not a vector per row ({reason(exc)})", REFETCH_HINT
        ) from exc
    raise dataset_error(
        path, f"column {key!r} has type {column.type}, expected a list of floats", REFETCH_HINT
    )
