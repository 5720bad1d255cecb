"""The episodes and tasks of a v2.1 dataset: ``meta/episodes.jsonl`` and ``meta/tasks.jsonl``."""

from __future__ import annotations

from pathlib import Path

from probes.dataset.errors import REFETCH_HINT, dataset_error
from probes.dataset.files import format_path, read_jsonl
from probes.dataset.records import EpisodeRecord, EpisodeVideo


def load_v21_episodes(
    root: Path, info: dict, video_keys: list[str]
) -> tuple[list[EpisodeRecord], dict[int, str]]:
    info_path = root / "meta" / "info.json"
    episodes_path = root / "meta" / "episodes.jsonl"
    rows = read_jsonl(episodes_path)
    for row in rows:
        if not isinstance(row.get("episode_index"), int) or not isinstance(row.get("length"), int):
            raise dataset_error(
                episodes_path, "an entry lacks an integer episode_index or length", REFETCH_HINT
            )
    rows.sort(key=lambda r: r["episode_index"])
    chunks_size = info.get("chunks_size", 1000)
    if not isinstance(chunks_size, int) or chunks_size < 1:
        raise dataset_error(
            info_path, f"chunks_size is {chunks_size!r}, expected a positive integer", REFETCH_HINT
        )

    episodes = []
    start = 0
    for r in rows:
        ep_index, length = r["episode_index"], r["length"]
        chunk = ep_index // chunks_size
        data_rel = format_path(
            info_path, info["data_path"], "data_path", episode_chunk=chunk, episode_index=ep_index
        )
        videos = {}
        for key in video_keys:
            video_rel = format_path(
                info_path,
                info["video_path"],
                "video_path",
                episode_chunk=chunk,
                video_key=key,
                episode_index=ep_index,
            )
            videos[key] = EpisodeVideo(root / video_rel, 0.0)
        episodes.append(
            EpisodeRecord(
                episode_index=ep_index,
                length=length,
                dataset_from_index=start,
                dataset_to_index=start + length,
                data_file=root / data_rel,
                videos=videos,
            )
        )
        start += length

    tasks_path = root / "meta" / "tasks.jsonl"
    tasks = {}
    for row in read_jsonl(tasks_path):
        if not isinstance(row.get("task_index"), int) or not isinstance(row.get("task"), str):
            raise dataset_error(tasks_path, "an entry lacks task_index or task", REFETCH_HINT)
        tasks[row["task_index"]] = row["task"]
    return episodes, tasks
