"""Read a local LeRobot dataset (v3.0 or v2.1) and yield samples exactly as LeRobot's loader does."""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import re
import struct
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from probes.train_step import FeatureStats

__all__ = [
    "DatasetError",
    "DatasetMeta",
    "EpisodeRecord",
    "EpisodeVideo",
    "FrameDataset",
    "decode_video_frame",
    "load_meta",
    "lerobot_home",
    "load_stats",
    "resolve_dataset_root",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v3.0", "v2.1")
TOLERANCE_S = 1e-4  # LeRobot's default timestamp tolerance when decoding video frames
STATE_KEY = "observation.state"
ACTION_KEY = "action"
ROOT_HINT = "point --dataset at a LeRobot dataset root (the folder holding meta/info.json)"
REFETCH_HINT = "download the dataset again or regenerate it"


class DatasetError(Exception):
    """A problem with the dataset on disk; the message is one line: file, problem, what to do."""


def _error(path: Path | str, problem: str, hint: str) -> DatasetError:
    text = f"dataset {path}: {problem}; {hint}"
    return DatasetError(re.sub(r"\s*\n\s*", " ", text).strip())


def _reason(exc: BaseException) -> str:
    """An exception as a short, single-line reason."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


# ----------------------------------------------------------------------------------------------
# Locating a dataset
# ----------------------------------------------------------------------------------------------


def lerobot_home() -> Path:
    """LeRobot's local dataset cache: ``$HF_LEROBOT_HOME``, else ``$HF_HOME/lerobot``."""
    if "HF_LEROBOT_HOME" in os.environ:
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return hf_home / "lerobot"


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_dataset_root(spec: str) -> Path:
    """The dataset root for ``spec``: an existing directory, or a ``user/name`` repo id found in
    LeRobot's local cache (``$HF_LEROBOT_HOME/<repo_id>``). Never touches the network."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if _REPO_ID.match(spec) and not spec.startswith((".", "/")):
        home = lerobot_home()
        candidate = home / spec
        if candidate.is_dir():
            return candidate
        # Newer LeRobot downloads into a revision-safe hub cache under $HF_LEROBOT_HOME/hub.
        user, name = spec.split("/")
        snapshots = home / "hub" / f"datasets--{user}--{name}" / "snapshots"
        if snapshots.is_dir():
            found = [p for p in snapshots.iterdir() if (p / "meta" / "info.json").is_file()]
            if found:
                return max(found, key=lambda p: (p / "meta" / "info.json").stat().st_mtime)
        raise _error(
            spec,
            f"not a directory, and no local copy at {candidate}",
            "pass the dataset folder, or download it first "
            f"(huggingface-cli download --repo-type dataset {spec} --local-dir {candidate})",
        )
    raise _error(spec, "no such directory", ROOT_HINT)


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeVideo:
    """Where one episode of one camera lives: its mp4 and the time the episode starts in it."""

    path: Path
    from_timestamp: float


@dataclass
class EpisodeRecord:
    """One episode: its frames are global indices ``[dataset_from_index, dataset_to_index)``."""

    episode_index: int
    length: int
    dataset_from_index: int
    dataset_to_index: int
    data_file: Path
    videos: dict[str, EpisodeVideo] = field(default_factory=dict)


@dataclass
class DatasetMeta:
    """What autotune needs to know about a LeRobot dataset, validated when loaded."""

    root: Path
    version: str  # "v3.0" or "v2.1"
    fps: int
    camera_keys: list[str]  # full keys, e.g. "observation.images.front", sorted
    camera_shapes: dict[str, tuple[int, int, int]]  # (H, W, C)
    camera_storage: dict[str, str]  # "video" or "image"
    camera_codecs: dict[str, str | None]  # e.g. "av1", "h264"; None for image cameras
    state_dim: int
    action_dim: int
    total_episodes: int
    total_frames: int
    episodes: list[EpisodeRecord]
    tasks: dict[int, str]
    robot_type: str | None = None
    features: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def video_keys(self) -> list[str]:
        return [k for k in self.camera_keys if self.camera_storage[k] == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k in self.camera_keys if self.camera_storage[k] == "image"]

    @property
    def data_files(self) -> list[Path]:
        return list(dict.fromkeys(ep.data_file for ep in self.episodes))

    @property
    def video_files(self) -> list[Path]:
        return list(dict.fromkeys(v.path for ep in self.episodes for v in ep.videos.values()))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise _error(path, "missing", ROOT_HINT)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _error(
            path, f"not valid JSON ({_reason(exc)})", "restore the file from the original dataset"
        ) from exc


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise _error(path, "missing", REFETCH_HINT)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(path, f"line {n} is not valid JSON ({_reason(exc)})", REFETCH_HINT) from exc
        if not isinstance(row, dict):
            raise _error(path, f"line {n} is not a JSON object", REFETCH_HINT)
        rows.append(row)
    return rows


def _shape_hwc(info_path: Path, key: str, ft: dict) -> tuple[int, int, int]:
    shape = ft.get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(isinstance(s, int) for s in shape):
        raise _error(info_path, f"feature {key!r} has shape {shape!r}, expected [H, W, C]", REFETCH_HINT)
    names = ft.get("names") or []
    if isinstance(names, list) and len(names) == 3 and names[0] in ("channel", "channels"):
        c, h, w = shape  # some converted datasets store (C, H, W)
        return (h, w, c)
    return (shape[0], shape[1], shape[2])


def _vector_dim(info_path: Path, features: dict, key: str) -> int:
    if key not in features:
        raise _error(
            info_path, f"no {key!r} feature", "autotune needs a dataset with observation.state and action"
        )
    shape = features[key].get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 1 or not isinstance(shape[0], int):
        raise _error(info_path, f"feature {key!r} has shape {shape!r}, expected [n]", REFETCH_HINT)
    return shape[0]


def _format_path(info_path: Path, template: Any, name: str, **fields: Any) -> str:
    if not isinstance(template, str):
        raise _error(info_path, f"{name} is {template!r}, expected a path template", REFETCH_HINT)
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise _error(
            info_path, f"{name} template {template!r} cannot be filled ({_reason(exc)})", REFETCH_HINT
        ) from exc


def _check_parquet_file(path: Path) -> None:
    if not path.is_file():
        raise _error(path, "missing", REFETCH_HINT)
    size = path.stat().st_size
    if size == 0:
        raise _error(path, "empty", REFETCH_HINT)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if head != b"PAR1" or tail != b"PAR1" or size < 12:
        raise _error(path, "not a complete parquet file (truncated or corrupt)", REFETCH_HINT)


def _check_mp4_file(path: Path) -> None:
    """Exists, non-empty, and for mp4/mov files: its top-level boxes fill the file and include moov."""
    if not path.is_file():
        raise _error(path, "missing", REFETCH_HINT)
    size = path.stat().st_size
    if size == 0:
        raise _error(path, "empty", REFETCH_HINT)
    if path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
        return
    boxes: set[bytes] = set()
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(8)
            if len(header) < 8:
                raise _error(path, "truncated mp4 (partial box header at the end)", REFETCH_HINT)
            box_size, box_type = struct.unpack(">I4s", header)
            if box_size == 1:
                large = f.read(8)
                if len(large) < 8:
                    raise _error(path, "truncated mp4 (partial box header at the end)", REFETCH_HINT)
                box_size = struct.unpack(">Q", large)[0]
            elif box_size == 0:
                box_size = size - pos
            if box_size < 8 or pos + box_size > size:
                raise _error(
                    path, f"truncated mp4 ({box_type!r} box runs past the end of the file)", REFETCH_HINT
                )
            boxes.add(box_type)
            pos += box_size
    if b"moov" not in boxes:
        raise _error(path, "not a complete mp4 (no moov box)", REFETCH_HINT)


def _probe_codec(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].codec_context.codec.canonical_name
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise _error(path, f"cannot open video ({_reason(exc)})", REFETCH_HINT) from exc


def load_meta(root: Path | str) -> DatasetMeta:
    """Read and validate a dataset's metadata; every file it references must exist and look whole.

    Cheap: reads the small meta files and stats each data and video file (plus a few header bytes),
    so a broken dataset fails here, before any tuning starts. Raises :class:`DatasetError`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _error(root, "no such directory", ROOT_HINT)
    info_path = root / "meta" / "info.json"
    info = _read_json(info_path)
    if not isinstance(info, dict):
        raise _error(info_path, "is not a JSON object", "restore the file from the original dataset")
    for name in ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path"):
        if name not in info:
            raise _error(info_path, f"no {name!r} field", "restore the file from the original dataset")
    version = info["codebase_version"]
    if version not in SUPPORTED_VERSIONS:
        raise _error(
            info_path,
            f"codebase_version {version!r} is not supported (autotune reads v3.0 and v2.1)",
            "convert the dataset with LeRobot's conversion scripts (lerobot.datasets.v30.convert_dataset_v21_to_v30)",
        )
    fps = info["fps"]
    if not isinstance(fps, int | float) or fps <= 0 or int(fps) != fps:
        raise _error(info_path, f"fps is {fps!r}, expected a positive integer", REFETCH_HINT)
    features = info["features"]
    if not isinstance(features, dict):
        raise _error(info_path, "features is not an object", REFETCH_HINT)
    for name in ("total_episodes", "total_frames"):
        if not isinstance(info[name], int) or info[name] < 0:
            raise _error(info_path, f"{name} is {info[name]!r}, expected a count", REFETCH_HINT)

    state_dim = _vector_dim(info_path, features, STATE_KEY)
    action_dim = _vector_dim(info_path, features, ACTION_KEY)
    camera_keys = sorted(
        k for k, ft in features.items() if isinstance(ft, dict) and ft.get("dtype") in ("video", "image")
    )
    shapes = {k: _shape_hwc(info_path, k, features[k]) for k in camera_keys}
    storage = {k: features[k]["dtype"] for k in camera_keys}
    video_keys = [k for k in camera_keys if storage[k] == "video"]
    if video_keys and not isinstance(info.get("video_path"), str):
        raise _error(info_path, "has video features but no video_path template", REFETCH_HINT)

    if version == "v3.0":
        episodes, tasks = _load_v30_episodes(root, info, video_keys)
    else:
        episodes, tasks = _load_v21_episodes(root, info, video_keys)

    if len(episodes) != info["total_episodes"]:
        raise _error(
            info_path,
            f"total_episodes is {info['total_episodes']} but the episode metadata lists {len(episodes)}",
            REFETCH_HINT,
        )
    expected_start = 0
    for ep in episodes:
        if (
            ep.dataset_from_index != expected_start
            or ep.dataset_to_index - ep.dataset_from_index != ep.length
        ):
            raise _error(
                root / "meta",
                f"episode {ep.episode_index} covers frames [{ep.dataset_from_index}, {ep.dataset_to_index}) "
                f"with length {ep.length}, expected to start at {expected_start}",
                REFETCH_HINT,
            )
        expected_start = ep.dataset_to_index
    if expected_start != info["total_frames"]:
        raise _error(
            info_path,
            f"total_frames is {info['total_frames']} but the episodes hold {expected_start}",
            REFETCH_HINT,
        )

    data_files = list(dict.fromkeys(ep.data_file for ep in episodes))
    for path in data_files:
        _check_parquet_file(path)
    video_files = list(dict.fromkeys(v.path for ep in episodes for v in ep.videos.values()))
    for path in video_files:
        _check_mp4_file(path)

    codecs: dict[str, str | None] = {}
    for key in camera_keys:
        block = features[key].get("info") or features[key].get("video_info") or {}
        codec = block.get("video.codec") if isinstance(block, dict) else None
        if storage[key] == "video" and codec is None and episodes:
            codec = _probe_codec(episodes[0].videos[key].path)
        codecs[key] = codec if storage[key] == "video" else None

    return DatasetMeta(
        root=root,
        version=version,
        fps=int(fps),
        camera_keys=camera_keys,
        camera_shapes=shapes,
        camera_storage=storage,
        camera_codecs=codecs,
        state_dim=state_dim,
        action_dim=action_dim,
        total_episodes=info["total_episodes"],
        total_frames=info["total_frames"],
        episodes=episodes,
        tasks=tasks,
        robot_type=info.get("robot_type"),
        features=features,
    )


def _read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """A pyarrow table, with every pyarrow failure turned into a DatasetError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise _error(path, "missing", REFETCH_HINT)
    try:
        if columns is not None:
            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise _error(path, f"no column {missing[0]!r}", REFETCH_HINT)
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise _error(path, f"cannot read parquet ({_reason(exc)})", REFETCH_HINT) from exc


def _load_v30_episodes(
    root: Path, info: dict, video_keys: list[str]
) -> tuple[list[EpisodeRecord], dict[int, str]]:
    info_path = root / "meta" / "info.json"
    meta_dir = root / "meta" / "episodes"
    files = sorted(meta_dir.glob("*/*.parquet"))
    if not files:
        raise _error(meta_dir, "no episode metadata (chunk-XXX/file-YYY.parquet)", REFETCH_HINT)
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
        rows.extend(_read_parquet(path, columns).to_pylist())
    rows.sort(key=lambda r: r["dataset_from_index"])

    episodes = []
    for r in rows:
        data_rel = _format_path(
            info_path,
            info["data_path"],
            "data_path",
            chunk_index=r["data/chunk_index"],
            file_index=r["data/file_index"],
        )
        videos = {}
        for key in video_keys:
            video_rel = _format_path(
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
    table = _read_parquet(tasks_path)
    try:
        frame = table.to_pandas()
    except (ValueError, TypeError, ImportError) as exc:
        raise _error(tasks_path, f"cannot read tasks ({_reason(exc)})", REFETCH_HINT) from exc
    if "task_index" not in frame.columns:
        raise _error(tasks_path, "no 'task_index' column", REFETCH_HINT)
    # LeRobot stores the task strings as the (named or unnamed) index of the frame.
    texts = frame["task"] if "task" in frame.columns else frame.index
    tasks = {int(i): str(t) for i, t in zip(frame["task_index"], texts, strict=True)}
    return episodes, tasks


def _load_v21_episodes(
    root: Path, info: dict, video_keys: list[str]
) -> tuple[list[EpisodeRecord], dict[int, str]]:
    info_path = root / "meta" / "info.json"
    episodes_path = root / "meta" / "episodes.jsonl"
    rows = _read_jsonl(episodes_path)
    for row in rows:
        if not isinstance(row.get("episode_index"), int) or not isinstance(row.get("length"), int):
            raise _error(episodes_path, "an entry lacks an integer episode_index or length", REFETCH_HINT)
    rows.sort(key=lambda r: r["episode_index"])
    chunks_size = info.get("chunks_size", 1000)
    if not isinstance(chunks_size, int) or chunks_size < 1:
        raise _error(info_path, f"chunks_size is {chunks_size!r}, expected a positive integer", REFETCH_HINT)

    episodes = []
    start = 0
    for r in rows:
        ep_index, length = r["episode_index"], r["length"]
        chunk = ep_index // chunks_size
        data_rel = _format_path(
            info_path, info["data_path"], "data_path", episode_chunk=chunk, episode_index=ep_index
        )
        videos = {}
        for key in video_keys:
            video_rel = _format_path(
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
    for row in _read_jsonl(tasks_path):
        if not isinstance(row.get("task_index"), int) or not isinstance(row.get("task"), str):
            raise _error(tasks_path, "an entry lacks task_index or task", REFETCH_HINT)
        tasks[row["task_index"]] = row["task"]
    return episodes, tasks


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def load_stats(meta: DatasetMeta) -> dict[str, FeatureStats]:
    """Mean and std of ``observation.state`` and ``action``: from meta/stats.json when it has them,
    else (v2.1) pooled from meta/episodes_stats.jsonl, else computed from the data parquet."""
    dims = {STATE_KEY: meta.state_dim, ACTION_KEY: meta.action_dim}
    stats_path = meta.root / "meta" / "stats.json"
    if stats_path.is_file():
        found = _stats_from_dict(_read_json(stats_path), dims)
        if found is not None:
            return found
        logger.warning("%s lacks usable state/action mean and std; computing them from the data", stats_path)
    episodes_stats = meta.root / "meta" / "episodes_stats.jsonl"
    if meta.version == "v2.1" and episodes_stats.is_file():
        pooled = _pool_episode_stats(_read_jsonl(episodes_stats), dims)
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
    for key in (STATE_KEY, ACTION_KEY):
        arrays = [_vector_column(_read_parquet(p, [key]), key, p) for p in meta.data_files]
        values = np.concatenate(arrays).astype(np.float64)
        out[key] = FeatureStats(
            mean=torch.tensor(values.mean(axis=0), dtype=torch.float32),
            std=torch.tensor(values.std(axis=0), dtype=torch.float32),
        )
    return out


def _vector_column(table: Any, key: str, path: Path) -> np.ndarray:
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
        raise _error(path, f"column {key!r} is not a vector per row ({_reason(exc)})", REFETCH_HINT) from exc
    raise _error(path, f"column {key!r} has type {column.type}, expected a list of floats", REFETCH_HINT)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def decode_video_frame(path: Path, timestamp_s: float, tolerance_s: float = TOLERANCE_S) -> torch.Tensor:
    """The frame of ``path`` at ``timestamp_s`` as uint8 (3, H, W), decoded as LeRobot's PyAV path does.

    Opens the file for this query, seeks to the keyframe at or before the timestamp, decodes
    forward (converting each decoded frame to RGB, as LeRobot does) until reaching it, and keeps the
    closest frame, which must lie within ``tolerance_s``.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise _error(path, f"cannot open video ({_reason(exc)})", REFETCH_HINT) from exc
    loaded: list[tuple[float, np.ndarray]] = []
    try:
        with container:
            if not container.streams.video:
                raise _error(path, "has no video stream", REFETCH_HINT)
            stream = container.streams.video[0]
            container.seek(
                round(timestamp_s / stream.time_base) - 1, backward=True, any_frame=False, stream=stream
            )
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                current_s = float(frame.pts * stream.time_base)
                loaded.append((current_s, frame.to_ndarray(format="rgb24")))
                if current_s >= timestamp_s:
                    break
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _error(
            path, f"cannot decode the frame at {timestamp_s:.6f} s ({_reason(exc)})", REFETCH_HINT
        ) from exc
    if not loaded:
        raise _error(
            path, f"no frame decoded at {timestamp_s:.6f} s (the video ends before it)", REFETCH_HINT
        )
    best_s, best = min(loaded, key=lambda item: abs(item[0] - timestamp_s))
    if not abs(best_s - timestamp_s) < tolerance_s:
        raise _error(
            path,
            f"no frame within {tolerance_s} s of timestamp {timestamp_s:.6f} s (nearest {best_s:.6f} s)",
            "the video and the metadata disagree; " + REFETCH_HINT,
        )
    return torch.from_numpy(best).permute(2, 0, 1).contiguous()


def _decode_image(value: Any, root: Path, path: Path, row: int, key: str) -> torch.Tensor:
    """An HF ``Image`` cell ({bytes, path}) as uint8 (3, H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(value, dict) and value.get("bytes"):
            img = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            file = Path(value["path"])
            img = Image.open(file if file.is_absolute() else root / file)
        else:
            raise _error(path, f"row {row} of {key!r} holds no image", REFETCH_HINT)
        array = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise _error(
            path, f"row {row} of {key!r} is not a readable image ({_reason(exc)})", REFETCH_HINT
        ) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@dataclass
class _DataFile:
    """One data parquet loaded in this process: its low-dimensional columns, images on demand.

    Arrays are ordered by global ``index``; ``file_rows`` maps back to the file's own row order
    when the file was not already sorted.
    """

    path: Path
    index: np.ndarray
    episode_index: np.ndarray
    frame_index: np.ndarray
    timestamp: np.ndarray
    task_index: np.ndarray
    state: np.ndarray
    action: np.ndarray
    image_keys: list[str]
    file_rows: np.ndarray | None = None
    parquet: Any = None  # pyarrow.parquet.ParquetFile, opened when an image is first read
    row_group_starts: list[int] = field(default_factory=list)
    row_groups: OrderedDict = field(default_factory=OrderedDict)  # small LRU of image row groups
    first_index: int | None = field(init=False, default=None)  # row = index - first_index if contiguous

    def __post_init__(self) -> None:
        n = len(self.index)
        contiguous = n > 0 and int(self.index[-1]) - int(self.index[0]) == n - 1
        self.first_index = int(self.index[0]) if contiguous else None

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows (in index order) holding the global ``indices``; DatasetError if one is absent."""
        n = len(self.index)
        if self.first_index is not None:
            rows = indices - self.first_index
            ok = (rows >= 0) & (rows < n)
        else:
            rows = np.minimum(np.searchsorted(self.index, indices), max(n - 1, 0))
            ok = self.index[rows] == indices if n else np.zeros(len(indices), dtype=bool)
        if not ok.all():
            raise _error(self.path, f"has no row with index {int(indices[~ok][0])}", REFETCH_HINT)
        return rows

    def image(self, row: int, key: str, root: Path) -> torch.Tensor:
        import pyarrow as pa
        import pyarrow.parquet as pq

        file_row = int(self.file_rows[row]) if self.file_rows is not None else row
        try:
            if self.parquet is None:
                self.parquet = pq.ParquetFile(self.path)
                md = self.parquet.metadata
                starts, total = [], 0
                for g in range(md.num_row_groups):
                    starts.append(total)
                    total += md.row_group(g).num_rows
                self.row_group_starts = starts
            group = bisect.bisect_right(self.row_group_starts, file_row) - 1
            table = self.row_groups.get(group)
            if table is None:
                table = self.parquet.read_row_group(group, columns=self.image_keys)
                self.row_groups[group] = table
                while len(self.row_groups) > 2:
                    self.row_groups.popitem(last=False)
            value = table.column(key)[file_row - self.row_group_starts[group]].as_py()
        except (pa.ArrowException, OSError) as exc:
            raise _error(self.path, f"cannot read {key!r} ({_reason(exc)})", REFETCH_HINT) from exc
        return _decode_image(value, root, self.path, file_row, key)


def _load_data_file(path: Path, meta: DatasetMeta) -> _DataFile:
    import pyarrow as pa

    columns = ["index", "episode_index", "frame_index", "timestamp", "task_index", STATE_KEY, ACTION_KEY]
    table = _read_parquet(path, columns)
    if meta.image_keys:
        names = _read_parquet_schema_names(path)
        for key in meta.image_keys:
            if key not in names:
                raise _error(path, f"no column {key!r}", REFETCH_HINT)

    def scalar(name: str, dtype: type) -> np.ndarray:
        try:
            return table.column(name).to_numpy().astype(dtype, copy=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise _error(
                path, f"column {name!r} is not a plain number column ({_reason(exc)})", REFETCH_HINT
            ) from exc

    arrays = {
        "index": scalar("index", np.int64),
        "episode_index": scalar("episode_index", np.int64),
        "frame_index": scalar("frame_index", np.int64),
        "timestamp": scalar("timestamp", np.float32),
        "task_index": scalar("task_index", np.int64),
        "state": _vector_column(table, STATE_KEY, path),
        "action": _vector_column(table, ACTION_KEY, path),
    }
    if arrays["state"].shape[1:] != (meta.state_dim,) or arrays["action"].shape[1:] != (meta.action_dim,):
        raise _error(
            path,
            f"state/action widths {arrays['state'].shape[1:]}/{arrays['action'].shape[1:]} differ from "
            f"info.json ({meta.state_dim}/{meta.action_dim})",
            REFETCH_HINT,
        )
    file_rows = None
    if np.any(np.diff(arrays["index"]) <= 0):
        file_rows = np.argsort(arrays["index"], kind="stable")
        arrays = {name: values[file_rows] for name, values in arrays.items()}
        if np.any(np.diff(arrays["index"]) == 0):
            raise _error(path, "holds the same index twice", REFETCH_HINT)
    data = _DataFile(path=path, image_keys=list(meta.image_keys), file_rows=file_rows, **arrays)
    # Every episode that points at this file must find its first and last rows here.
    for ep in meta.episodes:
        if ep.data_file != path:
            continue
        rows = data.rows(np.array([ep.dataset_from_index, ep.dataset_to_index - 1], dtype=np.int64))
        if (data.episode_index[rows] != ep.episode_index).any():
            raise _error(path, f"rows of episode {ep.episode_index} do not match meta/episodes", REFETCH_HINT)
    return data


def _read_parquet_schema_names(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise _error(path, f"cannot read parquet ({_reason(exc)})", REFETCH_HINT) from exc


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------


class FrameDataset(Dataset):
    """A LeRobot dataset as a map-style torch Dataset yielding what LeRobot's loader yields.

    Each item: every camera as uint8 (3, H, W) at the sample's timestamp, ``observation.state``
    (S,), an ``action`` chunk (chunk_size, A) over delta timestamps ``i / fps`` clamped to the
    episode with ``action_is_pad``, ``index``, ``episode_index``, ``frame_index``, ``task_index``,
    ``timestamp`` and, when ``with_task``, the task string. Video cameras are decoded in parallel
    threads, each query opening its file afresh, as LeRobot does. Data parquet files are loaded
    lazily and cached per process; pickling drops the cache, so spawned workers start light.
    """

    def __init__(
        self,
        root_or_meta: DatasetMeta | Path | str,
        chunk_size: int,
        with_task: bool = False,
        tolerance_s: float = TOLERANCE_S,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if isinstance(root_or_meta, DatasetMeta):
            self.meta = root_or_meta
        else:
            self.meta = load_meta(resolve_dataset_root(str(root_or_meta)))
        self.chunk_size = chunk_size
        self.with_task = with_task
        self.tolerance_s = tolerance_s
        self._starts = [ep.dataset_from_index for ep in self.meta.episodes]
        self._deltas = np.arange(chunk_size, dtype=np.int64)
        self._stats: dict[str, FeatureStats] | None = None
        self._files: dict[Path, _DataFile] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # reloaded lazily in each process
        return state

    def __len__(self) -> int:
        return self.meta.total_frames

    @property
    def stats(self) -> dict[str, FeatureStats]:
        """Normalisation statistics of ``observation.state`` and ``action``."""
        if self._stats is None:
            self._stats = load_stats(self.meta)
        return self._stats

    def _data_file(self, path: Path) -> _DataFile:
        if self._pid != os.getpid():  # forked: open files afresh in this process
            self._files, self._pid = {}, os.getpid()
        data = self._files.get(path)
        if data is None:
            data = _load_data_file(path, self.meta)
            self._files[path] = data
        return data

    def episode_of(self, index: int) -> EpisodeRecord:
        return self.meta.episodes[bisect.bisect_right(self._starts, index) - 1]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = int(idx)
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} frames")
        ep = self.episode_of(idx)
        data = self._data_file(ep.data_file)
        row = int(data.rows(np.array([idx], dtype=np.int64))[0])
        frame_index = int(data.frame_index[row])

        wanted = idx + self._deltas
        pad = (wanted < ep.dataset_from_index) | (wanted >= ep.dataset_to_index)
        rows = data.rows(np.clip(wanted, ep.dataset_from_index, ep.dataset_to_index - 1))

        item: dict[str, Any] = {
            STATE_KEY: torch.from_numpy(data.state[row].copy()),
            ACTION_KEY: torch.from_numpy(data.action[rows]),
            "action_is_pad": torch.from_numpy(pad),
            "timestamp": torch.tensor(data.timestamp[row], dtype=torch.float32),
            "frame_index": torch.tensor(frame_index, dtype=torch.int64),
            "episode_index": torch.tensor(int(data.episode_index[row]), dtype=torch.int64),
            "index": torch.tensor(idx, dtype=torch.int64),
            "task_index": torch.tensor(int(data.task_index[row]), dtype=torch.int64),
        }
        for key in self.meta.image_keys:
            item[key] = data.image(row, key, self.meta.root)
        item.update(self._decode_videos(ep, frame_index))
        if self.with_task:
            task_index = int(data.task_index[row])
            if task_index not in self.meta.tasks:
                raise _error(ep.data_file, f"task_index {task_index} is not in the task list", REFETCH_HINT)
            item["task"] = self.meta.tasks[task_index]
        return item

    def _decode_videos(self, ep: EpisodeRecord, frame_index: int) -> dict[str, torch.Tensor]:
        # LeRobot queries the frame grid (frame_index / fps), shifted to where the episode starts.
        query_s = frame_index / self.meta.fps
        keys = self.meta.video_keys

        def decode(key: str) -> torch.Tensor:
            video = ep.videos[key]
            return decode_video_frame(video.path, video.from_timestamp + query_s, self.tolerance_s)

        if len(keys) <= 1:
            return {key: decode(key) for key in keys}
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            futures = {key: pool.submit(decode, key) for key in keys}
            return {key: future.result() for key, future in futures.items()}
