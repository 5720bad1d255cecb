"""Write a synthetic LeRobot dataset: :func:`write_synthetic_dataset` and the file-by-file writing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from probes.synthetic.episodes import (
    FileGroup,
    episode_statistics,
    episode_table_row,
    write_episode,
    write_group_data,
    write_group_videos,
)
from probes.synthetic.files import write_json
from probes.synthetic.meta import camera_keys, dataset_features, write_v21_meta, write_v30_meta
from probes.synthetic.spec import SyntheticSpec

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
    start_s = time.perf_counter()
    if not _write_into_place(root, spec):
        return root
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


def _write_into_place(root: Path, spec: SyntheticSpec) -> bool:
    """Write the dataset in a sibling temporary folder and rename it to ``root``; False where
    another process finished first (its dataset then checked as one to reuse)."""
    tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        _write_dataset(tmp, spec)
        write_json(tmp / MARKER_PATH, spec.marker())
        try:
            os.rename(tmp, root)  # atomic; replaces an empty directory on POSIX
        except OSError:
            if (root / "meta" / "info.json").is_file():  # another process finished first
                _check_reusable(root, spec)
                return False
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


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
    n_eps = spec.episodes
    keys = camera_keys(spec.cameras)
    features = dataset_features(spec, keys)
    per_file = 1 if spec.version == "v2.1" else (spec.episodes_per_file or n_eps)
    groups = [list(range(s, min(s + per_file, n_eps))) for s in range(0, n_eps, per_file)]

    episode_rows: list[dict[str, Any]] = []
    episode_stats: list[dict[str, Any]] = []
    for position, episodes in enumerate(groups):
        chunk_index, file_index = _chunk_file(position, spec.chunks_size)
        group = FileGroup.empty(spec, episodes, chunk_index, file_index, keys)
        for ep in episodes:
            write_episode(tmp, spec, group, ep)
        video_meta = write_group_videos(tmp, spec, group)
        write_group_data(tmp, spec, group, features)
        for j, ep in enumerate(episodes):
            episode_stats.append(episode_statistics(group, j, ep))
            episode_rows.append(episode_table_row(spec, group, ep, video_meta[ep]))
        logger.info("wrote file %d/%d (%d episodes)", position + 1, len(groups), len(episodes))

    shutil.rmtree(tmp / ".episodes", ignore_errors=True)
    if spec.version == "v3.0":
        write_v30_meta(tmp, spec, features, episode_rows, episode_stats, len(groups))
    else:
        write_v21_meta(tmp, spec, features, episode_rows, episode_stats)
