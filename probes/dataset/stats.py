"""Normalisation statistics of ``observation.state`` and ``action``, from the meta files or the data."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from probes.dataset.files import read_json, read_jsonl, read_parquet, vector_column
from probes.dataset.records import DatasetMeta
from probes.keys import ACTION, STATE
from probes.train_step import FeatureStats

logger = logging.getLogger(__name__)


def load_stats(meta: DatasetMeta) -> dict[str, FeatureStats]:
    """Mean and std of ``observation.state`` and ``action``: from meta/stats.json when it has them,
    else (v2.1) pooled from meta/episodes_stats.jsonl, else computed from the data parquet."""
    dims = {STATE: meta.state_dim, ACTION: meta.action_dim}
    stats_path = meta.root / "meta" / "stats.json"
    if stats_path.is_file():
        found = _stats_from_dict(read_json(stats_path), dims)
        if found is not None:
            return found
        logger.warning("%s lacks usable state/action mean and std; computing them from the data", stats_path)
    episodes_stats = meta.root / "meta" / "episodes_stats.jsonl"
    if meta.version == "v2.1" and episodes_stats.is_file():
        pooled = _pool_episode_stats(read_jsonl(episodes_stats), dims)
        if pooled is not None:
            return pooled
    return _stats_from_data(meta)


def _stats_from_dict(stats: Any, dims: dict[str, int]) -> dict[str, FeatureStats] | None:
    out = {}
    for key, dim in dims.items():
        entry = stats.get(key) if isinstance(stats, dict) else None
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            return None
        mean = torch.tensor(entry["mean"], dtype=torch.float32).reshape(-1)
        std = torch.tensor(entry["std"], dtype=torch.float32).reshape(-1)
        if mean.numel() != dim or std.numel() != dim:
            return None
        out[key] = FeatureStats(mean=mean, std=std)
    return out


def _pool_episode_stats(rows: list[dict], dims: dict[str, int]) -> dict[str, FeatureStats] | None:
    out = {}
    for key, dim in dims.items():
        counts, means, variances = [], [], []
        for row in rows:
            entry = (row.get("stats") or {}).get(key)
            if not isinstance(entry, dict) or not {"mean", "std", "count"} <= entry.keys():
                return None
            counts.append(float(np.asarray(entry["count"]).reshape(-1)[0]))
            means.append(np.asarray(entry["mean"], dtype=np.float64).reshape(-1))
            variances.append(np.asarray(entry["std"], dtype=np.float64).reshape(-1) ** 2)
        if not counts or any(m.size != dim for m in means):
            return None
        w = np.asarray(counts) / sum(counts)
        mean = sum(wi * m for wi, m in zip(w, means, strict=True))
        var = sum(wi * (v + (m - mean) ** 2) for wi, m, v in zip(w, means, variances, strict=True))
        out[key] = FeatureStats(
            mean=torch.tensor(mean, dtype=torch.float32), std=torch.tensor(np.sqrt(var), dtype=torch.float32)
        )
    return out


def _stats_from_data(meta: DatasetMeta) -> dict[str, FeatureStats]:
    out = {}
    for key in (STATE, ACTION):
        arrays = [vector_column(read_parquet(p, [key]), key, p) for p in meta.data_files]
        values = np.concatenate(arrays).astype(np.float64)
        out[key] = FeatureStats(
            mean=torch.tensor(values.mean(axis=0), dtype=torch.float32),
            std=torch.tensor(values.std(axis=0), dtype=torch.float32),
        )
    return out
