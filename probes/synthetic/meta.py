"""A synthetic dataset's features and its v3.0 and v2.1 metadata files, as LeRobot writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probes.keys import ACTION, IMAGE_PREFIX, STATE
from probes.synthetic.files import write_json, write_jsonl
from probes.synthetic.spec import SyntheticSpec
from probes.synthetic.stats import aggregate_stats
from probes.synthetic.video import video_info

SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ROBOT_TYPE = "so101_follower"
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500

V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def camera_keys(cameras: int) -> list[str]:
    """Feature keys for ``cameras`` cameras: ``front``, ``wrist``, then ``cam2``, ``cam3``, ..."""
    names = ["front", "wrist"] + [f"cam{i}" for i in range(2, cameras)]
    return [f"{IMAGE_PREFIX}{name}" for name in names[:cameras]]


def joint_names(dim: int) -> list[str]:
    """SO-101 joint names for the first six dimensions, ``joint_<i>`` beyond."""
    return [f"{SO101_JOINTS[i] if i < len(SO101_JOINTS) else f'joint_{i}'}.pos" for i in range(dim)]


def dataset_features(spec: SyntheticSpec, keys: list[str]) -> dict[str, dict]:
    height, width = spec.image_size
    as_video = spec.image_storage == "video"
    features: dict[str, dict] = {
        ACTION: {"dtype": "float32", "shape": [spec.action_dim], "names": joint_names(spec.action_dim)},
        STATE: {
            "dtype": "float32",
            "shape": [spec.state_dim],
            "names": joint_names(spec.state_dim),
        },
    }
    for key in keys:
        ft: dict[str, Any] = {
            "dtype": "video" if as_video else "image",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
        }
        if as_video:
            ft["info"] = video_info(height, width, spec.codec, spec.fps)
        features[key] = ft
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    if spec.version == "v3.0":  # LeRobot's v2.1 -> v3.0 conversion tags non-video features with fps
        for ft in features.values():
            if ft["dtype"] != "video":
                ft["fps"] = spec.fps
    return features


def write_v30_meta(
    tmp: Path,
    spec: SyntheticSpec,
    features: dict[str, dict],
    episode_rows: list[dict[str, Any]],
    episode_stats: list[dict[str, Any]],
    n_files: int,
) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for row, stats in zip(episode_rows, episode_stats, strict=True):
        full = dict(row)
        for key, ft_stats in stats.items():
            for name, value in ft_stats.items():
                full[f"stats/{key}/{name}"] = value
        full["meta/episodes/chunk_index"] = 0
        full["meta/episodes/file_index"] = 0
        rows.append(full)
    table = pa.Table.from_pylist(rows)
    path = tmp / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")

    tasks = pd.DataFrame(
        {"task_index": range(len(spec.tasks))}, index=pd.Index(list(spec.tasks), name="task")
    )
    tasks.to_parquet(tmp / "meta" / "tasks.parquet")
    write_json(tmp / "meta" / "stats.json", aggregate_stats(episode_stats))

    total_frames = spec.episodes * spec.episode_length
    info = {
        "codebase_version": "v3.0",
        "robot_type": ROBOT_TYPE,
        "total_episodes": spec.episodes,
        "total_frames": total_frames,
        "total_tasks": len(spec.tasks),
        "chunks_size": spec.chunks_size,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": spec.fps,
        "splits": {"train": f"0:{spec.episodes}"},
        "data_path": V30_DATA_PATH,
        "video_path": V30_VIDEO_PATH if spec.image_storage == "video" and spec.cameras else None,
        "features": features,
    }
    write_json(tmp / "meta" / "info.json", info)


def write_v21_meta(
    tmp: Path,
    spec: SyntheticSpec,
    features: dict[str, dict],
    episode_rows: list[dict[str, Any]],
    episode_stats: list[dict[str, Any]],
) -> None:
    write_jsonl(
        tmp / "meta" / "episodes.jsonl",
        [
            {"episode_index": r["episode_index"], "tasks": r["tasks"], "length": r["length"]}
            for r in episode_rows
        ],
    )
    write_jsonl(
        tmp / "meta" / "episodes_stats.jsonl",
        [
            {"episode_index": r["episode_index"], "stats": s}
            for r, s in zip(episode_rows, episode_stats, strict=True)
        ],
    )
    write_jsonl(
        tmp / "meta" / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(spec.tasks)]
    )
    as_video = spec.image_storage == "video"
    info = {
        "codebase_version": "v2.1",
        "robot_type": ROBOT_TYPE,
        "total_episodes": spec.episodes,
        "total_frames": spec.episodes * spec.episode_length,
        "total_tasks": len(spec.tasks),
        "total_videos": spec.episodes * spec.cameras if as_video else 0,
        "total_chunks": (spec.episodes - 1) // spec.chunks_size + 1,
        "chunks_size": spec.chunks_size,
        "fps": spec.fps,
        "splits": {"train": f"0:{spec.episodes}"},
        "data_path": V21_DATA_PATH,
        "video_path": V21_VIDEO_PATH if as_video and spec.cameras else None,
        "features": features,
    }
    write_json(tmp / "meta" / "info.json", info)
