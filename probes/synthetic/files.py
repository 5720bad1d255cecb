"""Writing a synthetic dataset's files: data parquet with Hugging Face's schema metadata, PNGs, JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def hf_features(features: dict[str, dict]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature description stored in the parquet schema metadata."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            value = {"dtype": ft["dtype"], "_type": "Value"}
            out[key] = {"feature": value, "length": ft["shape"][0], "_type": "Sequence"}
    return out


def write_parquet(path: Path, columns: dict[str, Any], features: dict[str, dict], images: bool) -> None:
    """Write one data parquet with HF's schema metadata, as ``datasets`` does for LeRobot."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for key, value in columns.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            flat = pa.array(value.reshape(-1), type=pa.float32())
            arrays[key] = pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
        elif isinstance(value, np.ndarray):
            arrays[key] = pa.array(value)
        else:  # image structs
            arrays[key] = pa.array(value, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table(arrays)
    meta = {"info": {"features": {k: v for k, v in hf_features(features).items() if k in arrays}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    # datasets writes image tables in small row groups (100 rows) and others in larger ones.
    pq.write_table(table, path, row_group_size=100 if images else 1000, compression="snappy")


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
