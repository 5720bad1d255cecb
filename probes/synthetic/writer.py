"""Write a synthetic LeRobot dataset: :func:`write_synthetic_dataset` and the episode-by-episode writing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from probes.keys import ACTION, STATE
from probes.synthetic.content import synthetic_frame, trajectories
from probes.synthetic.files import png_bytes, write_json, write_parquet
from probes.synthetic.meta import (
    V21_DATA_PATH,
    V21_VIDEO_PATH,
    V30_DATA_PATH,
    V30_VIDEO_PATH,
    camera_keys,
    dataset_features,
    write_v21_meta,
    write_v30_meta,
)
from probes.synthetic.spec import SyntheticSpec
from probes.synthetic.stats import IMAGE_STATS_EVERY, image_stats, numeric_stats
from probes.synthetic.video import concat_videos, encode_video, video_duration_s

logger = logging.getLogger(__name__)

DEFAULT_TASKS = (
    "Pick up the red cube and place it in the bin.",
    "Push the blue block to the left edge of the table.",
    "Open the drawer and put the sponge inside.",
    "Stack the green cup on top of the yellow cup.",
)
CHUNKS_SIZE = 1000  # LeRobot's default: at most this many files per chunk-XXX folder


# Not part of LeRobot's format: records the arguments a dataset was written with, so a second
# call with the same arguments reuses it and one with different arguments is refused.
MARKER_PATH = "meta/synthetic.json"


def write_synthetic_dataset(
    root: Path,
    *,
    cameras: int = 2,
    image_size: tuple[int, int] = (480, 640),
    fps: int = 30,
    episodes: int,
    episode_length: int,
    state_dim: int = 6,
    action_dim: int = 6,
    codec: str = "libsvtav1",
    gop: int = 2,
    version: str = "v3.0",
    image_storage: str = "video",
    episodes_per_file: int | None = None,
    seed: int = 0,
    tasks: list[str] | None = None,
    chunks_size: int = CHUNKS_SIZE,
) -> Path:
    """Write a LeRobot dataset at ``root`` and return ``root``.

    The dataset is built in a sibling temporary folder and renamed into place, so an interrupted
    write never leaves a partial dataset at ``root``. If ``root`` already holds a complete dataset
    written with the same arguments, it is returned untouched.

    ``episodes_per_file`` (v3.0 only) caps how many episodes share one data file and one video
    file per camera (default: all in one); ``chunks_size`` caps files per ``chunk-XXX`` folder.
    ``image_storage="image"`` stores PNG frames inside the parquet instead of mp4 videos.
    ``ValueError`` (from :class:`SyntheticSpec`) names an argument out of range.
    """
    root = Path(root)
    task_list = list(dict.fromkeys(tasks)) if tasks else list(DEFAULT_TASKS)
    spec = SyntheticSpec(
        cameras=cameras,
        image_size=image_size,
        fps=fps,
        episodes=episodes,
        episode_length=episode_length,
        state_dim=state_dim,
        action_dim=action_dim,
        codec=codec,
        gop=gop,
        version=version,
        image_storage=image_storage,
        episodes_per_file=episodes_per_file,
        seed=seed,
        tasks=tuple(task_list),
        chunks_size=chunks_size,
    )

    if (root / "meta" / "info.json").is_file():
        _check_reusable(root, spec)
        logger.info("reusing the synthetic dataset at %s", root)
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not a complete LeRobot dataset; remove it or pick another path"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    start_s = time.perf_counter()
    try:
        _write_dataset(tmp, spec)
        write_json(tmp / MARKER_PATH, spec.marker())
        try:
            os.rename(tmp, root)  # atomic; replaces an empty directory on POSIX
        except OSError:
            if (root / "meta" / "info.json").is_file():  # another process finished first
                _check_reusable(root, spec)
                return root
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "wrote %d episodes x %d frames (%d cameras, %s) to %s in %.1f s",
        episodes,
        episode_length,
        cameras,
        codec if image_storage == "video" else "png",
        root,
        time.perf_counter() - start_s,
    )
    return root


def _check_reusable(root: Path, spec: SyntheticSpec) -> None:
    params = spec.marker()
    marker = root / MARKER_PATH
    if not marker.is_file():
        logger.warning("%s holds a dataset not written by this module; reusing it as it is", root)
        return
    written = json.loads(marker.read_text())
    if written != params:
        changed = sorted(k for k in params if written.get(k) != params[k])
        raise FileExistsError(
            f"{root} holds a synthetic dataset written with different {', '.join(changed)}; "
            "remove it or pick another path"
        )


def _chunk_file(position: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk_index, file_index) of the ``position``-th file, as LeRobot numbers them."""
    return position // chunks_size, position % chunks_size


def _write_dataset(tmp: Path, spec: SyntheticSpec) -> None:
    fps, version, seed = spec.fps, spec.version, spec.seed
    n_eps, length = spec.episodes, spec.episode_length
    height, width = spec.image_size
    keys = camera_keys(spec.cameras)
    as_video = spec.image_storage == "video"
    task_list = spec.tasks
    codec, gop = spec.codec, spec.gop

    features = dataset_features(spec, keys)
    per_file = 1 if version == "v2.1" else (spec.episodes_per_file or n_eps)
    groups = [list(range(s, min(s + per_file, n_eps))) for s in range(0, n_eps, per_file)]

    episode_rows: list[dict[str, Any]] = []
    episode_stats: list[dict[str, Any]] = []
    workers = max(1, min(len(keys), os.cpu_count() or 1))

    for position, group in enumerate(groups):
        chunk_index, file_index = _chunk_file(position, spec.chunks_size)
        columns: dict[str, list] = {
            k: [] for k in ("state", "action", "timestamp", "frame", "episode", "index", "task")
        }
        image_columns: dict[str, list] = {k: [] for k in keys} if not as_video else {}
        sampled: dict[int, dict[str, list[np.ndarray]]] = {ep: {k: [] for k in keys} for ep in group}
        episode_videos: dict[str, list[Path]] = {k: [] for k in keys}

        for ep in group:
            state, action = trajectories(seed, ep, length, fps, spec.state_dim, spec.action_dim)
            frames = np.arange(length)
            columns["state"].append(state)
            columns["action"].append(action)
            columns["timestamp"].append((frames / fps).astype(np.float32))
            columns["frame"].append(frames.astype(np.int64))
            columns["episode"].append(np.full(length, ep, dtype=np.int64))
            columns["index"].append(np.arange(ep * length, (ep + 1) * length, dtype=np.int64))
            columns["task"].append(np.full(length, ep % len(task_list), dtype=np.int64))

            def frames_of(cam: int, ep: int = ep, sink: dict = sampled) -> Iterator[np.ndarray]:
                for i in range(length):
                    img = synthetic_frame(seed, cam, ep, i, (height, width), fps)
                    if i % IMAGE_STATS_EVERY == 0:
                        sink[ep][keys[cam]].append(img[::4, ::4])
                    yield img

            if as_video:
                jobs = []
                for cam, key in enumerate(keys):
                    if version == "v2.1":
                        rel = V21_VIDEO_PATH.format(
                            episode_chunk=ep // spec.chunks_size, video_key=key, episode_index=ep
                        )
                        path = tmp / rel
                    else:
                        path = tmp / ".episodes" / key / f"episode_{ep:06d}.mp4"
                    episode_videos[key].append(path)
                    jobs.append((path, cam))
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [
                        pool.submit(
                            encode_video,
                            path,
                            frames_of(cam),
                            fps=fps,
                            size=(height, width),
                            codec=codec,
                            gop=gop,
                        )
                        for path, cam in jobs
                    ]
                    for future in futures:
                        future.result()
            else:
                for cam, key in enumerate(keys):
                    image_columns[key].extend(
                        {"bytes": png_bytes(img), "path": None} for img in frames_of(cam)
                    )

        # Video files: one per episode (v2.1) or the group's episodes concatenated (v3.0).
        video_meta: dict[int, dict[str, Any]] = {ep: {} for ep in group}
        if as_video:
            for key in keys:
                durations = [video_duration_s(path) for path in episode_videos[key]]
                if version == "v3.0":
                    out = tmp / V30_VIDEO_PATH.format(
                        video_key=key, chunk_index=chunk_index, file_index=file_index
                    )
                    concat_videos(episode_videos[key], out)
                    for path in episode_videos[key]:
                        path.unlink()
                start = 0.0
                for ep, duration in zip(group, durations, strict=True):
                    video_meta[ep].update(
                        {
                            f"videos/{key}/chunk_index": chunk_index,
                            f"videos/{key}/file_index": file_index,
                            f"videos/{key}/from_timestamp": start,
                            f"videos/{key}/to_timestamp": start + duration,
                        }
                    )
                    start += duration

        # Data parquet: one per episode (v2.1) or one for the group (v3.0).
        data_columns: dict[str, Any] = {
            ACTION: np.concatenate(columns["action"]),
            STATE: np.concatenate(columns["state"]),
        }
        for key in image_columns:
            data_columns[key] = image_columns[key]
        data_columns.update(
            {
                "timestamp": np.concatenate(columns["timestamp"]),
                "frame_index": np.concatenate(columns["frame"]),
                "episode_index": np.concatenate(columns["episode"]),
                "index": np.concatenate(columns["index"]),
                "task_index": np.concatenate(columns["task"]),
            }
        )
        if version == "v2.1":
            rel = V21_DATA_PATH.format(episode_chunk=group[0] // spec.chunks_size, episode_index=group[0])
        else:
            rel = V30_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        write_parquet(tmp / rel, data_columns, features, images=not as_video)

        # Per-episode metadata and statistics.
        for j, ep in enumerate(group):
            ep_stats: dict[str, Any] = {
                ACTION: numeric_stats(columns["action"][j], quantiles=True),
                STATE: numeric_stats(columns["state"][j], quantiles=True),
            }
            for key in keys:
                ep_stats[key] = image_stats(sampled[ep][key])
            for name, col in (
                ("timestamp", "timestamp"),
                ("frame_index", "frame"),
                ("episode_index", "episode"),
                ("index", "index"),
                ("task_index", "task"),
            ):
                ep_stats[name] = numeric_stats(columns[col][j])
            episode_stats.append(ep_stats)
            row: dict[str, Any] = {
                "episode_index": ep,
                "tasks": [task_list[ep % len(task_list)]],
                "length": length,
                "data/chunk_index": chunk_index,
                "data/file_index": file_index,
                "dataset_from_index": ep * length,
                "dataset_to_index": (ep + 1) * length,
            }
            row.update(video_meta[ep])
            episode_rows.append(row)
        logger.info("wrote file %d/%d (%d episodes)", position + 1, len(groups), len(group))

    shutil.rmtree(tmp / ".episodes", ignore_errors=True)
    if version == "v3.0":
        write_v30_meta(tmp, spec, features, episode_rows, episode_stats, len(groups))
    else:
        write_v21_meta(tmp, spec, features, episode_rows, episode_stats)
