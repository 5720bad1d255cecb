"""LeRobot's per-episode and aggregated feature statistics of a synthetic dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STATS_EVERY = 10  # sample one frame in this many for the per-episode image statistics


def numeric_stats(values: np.ndarray, quantiles: bool = False) -> dict[str, Any]:
    """LeRobot's per-feature statistics of a (N, D) or (N,) array, as JSON-able lists."""
    values = values.reshape(len(values), -1).astype(np.float64)
    stats = {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [len(values)],
    }
    if quantiles:
        for q in QUANTILES:
            stats[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0).tolist()
    return stats


def image_stats(frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per-channel image statistics in [0, 1] with LeRobot's (3, 1, 1) shape."""
    pixels = np.stack(frames).reshape(-1, 3).astype(np.float64) / 255.0

    def per_channel(v: np.ndarray) -> list:
        return [[[float(x)]] for x in v]

    return {
        "min": per_channel(pixels.min(axis=0)),
        "max": per_channel(pixels.max(axis=0)),
        "mean": per_channel(pixels.mean(axis=0)),
        "std": per_channel(pixels.std(axis=0)),
        "count": [len(frames)],
    }


def aggregate_stats(per_episode: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-episode statistics: weighted means, pooled variances, overall min/max."""
    out: dict[str, Any] = {}
    for key in per_episode[0]:
        counts = np.array([ep[key]["count"][0] for ep in per_episode], dtype=np.float64)
        means = [np.asarray(ep[key]["mean"]) for ep in per_episode]
        stds = [np.asarray(ep[key]["std"]) for ep in per_episode]
        weights = [c / counts.sum() for c in counts]
        mean = sum(w * m for w, m in zip(weights, means, strict=True))
        var = sum(w * (s**2 + (m - mean) ** 2) for w, m, s in zip(weights, means, stds, strict=True))
        agg = {
            "min": np.min([np.asarray(ep[key]["min"]) for ep in per_episode], axis=0).tolist(),
            "max": np.max([np.asarray(ep[key]["max"]) for ep in per_episode], axis=0).tolist(),
            "mean": np.asarray(mean).tolist(),
            "std": np.sqrt(var).tolist(),
            "count": [int(counts.sum())],
        }
        for name in per_episode[0][key]:
            if name.startswith("q"):  # quantiles do not combine exactly; LeRobot averages them too
                qs = [np.asarray(ep[key][name]) for ep in per_episode]
                agg[name] = np.asarray(sum(w * q for w, q in zip(weights, qs, strict=True))).tolist()
        out[key] = agg
    return out
