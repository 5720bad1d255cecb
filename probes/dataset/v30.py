"""The episodes and tasks of a v3.0 dataset: ``meta/episodes/*/*.parquet`` and ``meta/tasks.parquet``."""

from __future__ import annotations

from pathlib import Path

from probes.dataset.errors import REFETCH_HINT, dataset_error, reason
from probes.dataset.files import format_path, read_parquet
from probes.dataset.records import EpisodeRecord, EpisodeVideo


def load_v30_episodes(
    root: Path, info: dict, video_keys: list[str]
) -> tuple[list[EpisodeRecord], dict[int, str]]:
    info_path = root / "meta" / "info.json"
    meta_dir = root / "meta" / "episodes"
    files = sorted(meta_dir.glob("*/*.parquet"))
    if not files:
        raise dataset_error(meta_dir, "no episode metadata (chunk-XXX/file-YYY.parquet)", REFETCH_HINT)
    columns = [
        "episode_index",
        "length",
        "dataset_from_index",
        "dataset_to_index",
        "data/chunk_index",
        "data/file_index",
    ]
    for key in video_keys:
        columns += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
    rows: list[dict] = []
    for path in files:
        rows.extend(read_parquet(path, columns).to_pylist())
    rows.sort(key=lambda r: r["dataset_from_index"])

    episodes = []
    for r in rows:
        data_rel = format_path(
            info_path,
            info["data_path"],
            "data_path",
            chunk_index=r["data/chunk_index"],
            file_index=r["data/file_index"],
        )
        videos = {}
        for key in video_keys:
            video_rel = format_path(
                info_path,
                info["video_path"],
                "video_path",
                video_key=key,
                chunk_index=r[f"videos/{key}/chunk_index"],
                file_index=r[f"videos/{key}/file_index"],
            )
            videos[key] = EpisodeVideo(root / video_rel, float(r[f"videos/{key}/from_timestamp"]))
        episodes.append(
            EpisodeRecord(
                episode_index=int(r["episode_index"]),
                length=int(r["length"]),
                dataset_from_index=int(r["dataset_from_index"]),
                dataset_to_index=int(r["dataset_to_index"]),
                data_file=root / data_rel,
                videos=videos,
            )
        )

    tasks_path = root / "meta" / "tasks.parquet"
    table = read_parquet(tasks_path)
    try:
        frame = table.to_pandas()
    except (ValueError, TypeError, ImportError) as exc:
        raise dataset_error(tasks_path, f"cannot read tasks ({reason(exc)})", REFETCH_HINT) from exc
    if "task_index" not in frame.columns:
        raise dataset_error(tasks_path, "no 'task_index' column", REFETCH_HINT)
    # LeRobot stores the task strings as the (named or unnamed) index of the frame.
    texts = frame["task"] if "task" in frame.columns else frame.index
    tasks = {int(i): str(t) for i, t in zip(frame["task_index"], texts, strict=True)}
    return episodes, tasks
