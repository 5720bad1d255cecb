"""The episodes that share one file of a synthetic dataset, written: frames, videos, data, statistics, rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probes.keys import ACTION, STATE
from probes.synthetic.content import synthetic_frame, trajectories
from probes.synthetic.files import png_bytes, write_parquet
from probes.synthetic.meta import V21_DATA_PATH, V21_VIDEO_PATH, V30_DATA_PATH, V30_VIDEO_PATH
from probes.synthetic.spec import SyntheticSpec
from probes.synthetic.stats import IMAGE_STATS_EVERY, image_stats, numeric_stats
from probes.synthetic.video import concat_videos, encode_video, video_duration_s

# The per-frame columns a group collects; then, beside state and action, each one's name in the data
# parquet and the statistics, with the collected column it comes from.
_COLUMNS = ("state", "action", "timestamp", "frame", "episode", "index", "task")
_INDEX_COLUMNS = (
    ("timestamp", "timestamp"),
    ("frame_index", "frame"),
    ("episode_index", "episode"),
    ("index", "index"),
    ("task_index", "task"),
)


@dataclass
class FileGroup:
    """The episodes that share one data file (and, in v3.0, one video file per camera), as written:
    their columns, their PNG frames (image storage) or per-episode videos, and the frames sampled
    for the image statistics."""

    episodes: list[int]
    chunk_index: int
    file_index: int
    keys: list[str]
    columns: dict[str, list]
    image_columns: dict[str, list]
    sampled: dict[int, dict[str, list[np.ndarray]]]
    episode_videos: dict[str, list[Path]]

    @classmethod
    def empty(
        cls, spec: SyntheticSpec, episodes: list[int], chunk_index: int, file_index: int, keys: list[str]
    ) -> FileGroup:
        return cls(
            episodes,
            chunk_index,
            file_index,
            keys,
            columns={k: [] for k in _COLUMNS},
            image_columns={k: [] for k in keys} if spec.image_storage != "video" else {},
            sampled={ep: {k: [] for k in keys} for ep in episodes},
            episode_videos={k: [] for k in keys},
        )


def write_episode(tmp: Path, spec: SyntheticSpec, group: FileGroup, ep: int) -> None:
    """Episode ``ep``'s columns, and its frames: a video per camera, or PNGs in the image columns."""
    length, fps = spec.episode_length, spec.fps
    state, action = trajectories(spec.seed, ep, length, fps, spec.state_dim, spec.action_dim)
    frames = np.arange(length)
    columns = group.columns
    columns["state"].append(state)
    columns["action"].append(action)
    columns["timestamp"].append((frames / fps).astype(np.float32))
    columns["frame"].append(frames.astype(np.int64))
    columns["episode"].append(np.full(length, ep, dtype=np.int64))
    columns["index"].append(np.arange(ep * length, (ep + 1) * length, dtype=np.int64))
    columns["task"].append(np.full(length, ep % len(spec.tasks), dtype=np.int64))
    if spec.image_storage == "video":
        encode_episode(tmp, spec, group, ep)
        return
    for cam, key in enumerate(group.keys):
        group.image_columns[key].extend(
            {"bytes": png_bytes(img), "path": None} for img in camera_frames(spec, group, cam, ep)
        )


def camera_frames(spec: SyntheticSpec, group: FileGroup, cam: int, ep: int) -> Iterator[np.ndarray]:
    """Camera ``cam``'s frames of episode ``ep``; every ``IMAGE_STATS_EVERY``-th, downsampled, is
    kept in ``group.sampled`` for the image statistics."""
    for i in range(spec.episode_length):
        img = synthetic_frame(spec.seed, cam, ep, i, spec.image_size, spec.fps)
        if i % IMAGE_STATS_EVERY == 0:
            group.sampled[ep][group.keys[cam]].append(img[::4, ::4])
        yield img


def encode_episode(tmp: Path, spec: SyntheticSpec, group: FileGroup, ep: int) -> None:
    """Episode ``ep``'s video of every camera, encoded in parallel: where LeRobot keeps it (v2.1),
    or apart until the group's videos are concatenated (v3.0)."""
    jobs = []
    for cam, key in enumerate(group.keys):
        if spec.version == "v2.1":
            rel = V21_VIDEO_PATH.format(episode_chunk=ep // spec.chunks_size, video_key=key, episode_index=ep)
            path = tmp / rel
        else:
            path = tmp / ".episodes" / key / f"episode_{ep:06d}.mp4"
        group.episode_videos[key].append(path)
        jobs.append((path, cam))
    workers = max(1, min(len(group.keys), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                encode_video,
                path,
                camera_frames(spec, group, cam, ep),
                fps=spec.fps,
                size=spec.image_size,
                codec=spec.codec,
                gop=spec.gop,
            )
            for path, cam in jobs
        ]
        for future in futures:
            future.result()


def write_group_videos(tmp: Path, spec: SyntheticSpec, group: FileGroup) -> dict[int, dict[str, Any]]:
    """Video files: one per episode (v2.1) or the group's episodes concatenated (v3.0). Returns each
    episode's video columns of the episode table (none with image storage)."""
    video_meta: dict[int, dict[str, Any]] = {ep: {} for ep in group.episodes}
    if spec.image_storage != "video":
        return video_meta
    chunk_index, file_index = group.chunk_index, group.file_index
    for key in group.keys:
        parts = group.episode_videos[key]
        durations = [video_duration_s(path) for path in parts]
        if spec.version == "v3.0":
            out = tmp / V30_VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
            concat_videos(parts, out)
            for path in parts:
                path.unlink()
        start = 0.0
        for ep, duration in zip(group.episodes, durations, strict=True):
            video_meta[ep].update(
                {
                    f"videos/{key}/chunk_index": chunk_index,
                    f"videos/{key}/file_index": file_index,
                    f"videos/{key}/from_timestamp": start,
                    f"videos/{key}/to_timestamp": start + duration,
                }
            )
            start += duration
    return video_meta


def write_group_data(tmp: Path, spec: SyntheticSpec, group: FileGroup, features: dict[str, dict]) -> None:
    """Data parquet: one per episode (v2.1) or one for the group (v3.0)."""
    columns = group.columns
    data_columns: dict[str, Any] = {
        ACTION: np.concatenate(columns["action"]),
        STATE: np.concatenate(columns["state"]),
    }
    for key in group.image_columns:
        data_columns[key] = group.image_columns[key]
    data_columns.update({name: np.concatenate(columns[col]) for name, col in _INDEX_COLUMNS})
    first = group.episodes[0]
    if spec.version == "v2.1":
        rel = V21_DATA_PATH.format(episode_chunk=first // spec.chunks_size, episode_index=first)
    else:
        rel = V30_DATA_PATH.format(chunk_index=group.chunk_index, file_index=group.file_index)
    write_parquet(tmp / rel, data_columns, features, images=spec.image_storage != "video")


def episode_statistics(group: FileGroup, j: int, ep: int) -> dict[str, Any]:
    """The statistics of episode ``ep``, the ``j``-th of ``group``."""
    columns = group.columns
    ep_stats: dict[str, Any] = {
        ACTION: numeric_stats(columns["action"][j], quantiles=True),
        STATE: numeric_stats(columns["state"][j], quantiles=True),
    }
    for key in group.keys:
        ep_stats[key] = image_stats(group.sampled[ep][key])
    for name, col in _INDEX_COLUMNS:
        ep_stats[name] = numeric_stats(columns[col][j])
    return ep_stats


def episode_table_row(
    spec: SyntheticSpec, group: FileGroup, ep: int, videos: dict[str, Any]
) -> dict[str, Any]:
    """Episode ``ep``'s row of the episode table: its task, its frames, its data file and ``videos``."""
    length = spec.episode_length
    row: dict[str, Any] = {
        "episode_index": ep,
        "tasks": [spec.tasks[ep % len(spec.tasks)]],
        "length": length,
        "data/chunk_index": group.chunk_index,
        "data/file_index": group.file_index,
        "dataset_from_index": ep * length,
        "dataset_to_index": (ep + 1) * length,
    }
    row.update(videos)
    return row
