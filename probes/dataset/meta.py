"""Load and validate a dataset's metadata (``meta/info.json`` and the episode tables) and check its files."""

from __future__ import annotations

import struct
from pathlib import Path

from probes.dataset.errors import REFETCH_HINT, ROOT_HINT, dataset_error, reason
from probes.dataset.files import read_json
from probes.dataset.records import DatasetMeta, EpisodeRecord, EpisodeVideo
from probes.dataset.v21 import load_v21_episodes
from probes.dataset.v30 import load_v30_episodes
from probes.keys import ACTION, STATE

__all__ = ["DatasetMeta", "EpisodeRecord", "EpisodeVideo", "load_meta"]

SUPPORTED_VERSIONS = ("v3.0", "v2.1")


def _shape_hwc(info_path: Path, key: str, ft: dict) -> tuple[int, int, int]:
    shape = ft.get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(isinstance(s, int) for s in shape):
        raise dataset_error(
            info_path, f"feature {key!r} has shape {shape!r}, expected [H, W, C]", REFETCH_HINT
        )
    names = ft.get("names") or []
    if isinstance(names, list) and len(names) == 3 and names[0] in ("channel", "channels"):
        c, h, w = shape  # some converted datasets store (C, H, W)
        return (h, w, c)
    return (shape[0], shape[1], shape[2])


def _vector_dim(info_path: Path, features: dict, key: str) -> int:
    if key not in features:
        raise dataset_error(
            info_path, f"no {key!r} feature", "autotune needs a dataset with observation.state and action"
        )
    shape = features[key].get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 1 or not isinstance(shape[0], int):
        raise dataset_error(info_path, f"feature {key!r} has shape {shape!r}, expected [n]", REFETCH_HINT)
    return shape[0]


def _check_parquet_file(path: Path) -> None:
    if not path.is_file():
        raise dataset_error(path, "missing", REFETCH_HINT)
    size = path.stat().st_size
    if size == 0:
        raise dataset_error(path, "empty", REFETCH_HINT)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if head != b"PAR1" or tail != b"PAR1" or size < 12:
        raise dataset_error(path, "not a complete parquet file (truncated or corrupt)", REFETCH_HINT)


def _check_mp4_file(path: Path) -> None:
    """Exists, non-empty, and for mp4/mov files: its top-level boxes fill the file and include moov."""
    if not path.is_file():
        raise dataset_error(path, "missing", REFETCH_HINT)
    size = path.stat().st_size
    if size == 0:
        raise dataset_error(path, "empty", REFETCH_HINT)
    if path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
        return
    boxes: set[bytes] = set()
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(8)
            if len(header) < 8:
                raise dataset_error(path, "truncated mp4 (partial box header at the end)", REFETCH_HINT)
            box_size, box_type = struct.unpack(">I4s", header)
            if box_size == 1:
                large = f.read(8)
                if len(large) < 8:
                    raise dataset_error(path, "truncated mp4 (partial box header at the end)", REFETCH_HINT)
                box_size = struct.unpack(">Q", large)[0]
            elif box_size == 0:
                box_size = size - pos
            if box_size < 8 or pos + box_size > size:
                raise dataset_error(
                    path, f"truncated mp4 ({box_type!r} box runs past the end of the file)", REFETCH_HINT
                )
            boxes.add(box_type)
            pos += box_size
    if b"moov" not in boxes:
        raise dataset_error(path, "not a complete mp4 (no moov box)", REFETCH_HINT)


def _probe_codec(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].codec_context.codec.canonical_name
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise dataset_error(path, f"cannot open video ({reason(exc)})", REFETCH_HINT) from exc


def load_meta(root: Path | str) -> DatasetMeta:
    """Read and validate a dataset's metadata; every file it references must exist and look whole.

    Cheap: reads the small meta files and stats each data and video file (plus a few header bytes),
    so a broken dataset fails here, before any tuning starts. Raises :class:`DatasetError`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise dataset_error(root, "no such directory", ROOT_HINT)
    info_path = root / "meta" / "info.json"
    info = _read_info(info_path)
    version, fps, features = info["codebase_version"], info["fps"], info["features"]

    state_dim = _vector_dim(info_path, features, STATE)
    action_dim = _vector_dim(info_path, features, ACTION)
    camera_keys = sorted(
        k for k, ft in features.items() if isinstance(ft, dict) and ft.get("dtype") in ("video", "image")
    )
    shapes = {k: _shape_hwc(info_path, k, features[k]) for k in camera_keys}
    storage = {k: features[k]["dtype"] for k in camera_keys}
    video_keys = [k for k in camera_keys if storage[k] == "video"]
    if video_keys and not isinstance(info.get("video_path"), str):
        raise dataset_error(info_path, "has video features but no video_path template", REFETCH_HINT)

    if version == "v3.0":
        episodes, tasks = load_v30_episodes(root, info, video_keys)
    else:
        episodes, tasks = load_v21_episodes(root, info, video_keys)
    _check_episode_ranges(root, info_path, info, episodes)
    _check_files(episodes)

    return DatasetMeta(
        root=root,
        version=version,
        fps=int(fps),
        camera_keys=camera_keys,
        camera_shapes=shapes,
        camera_storage=storage,
        camera_codecs=_camera_codecs(features, camera_keys, storage, episodes),
        state_dim=state_dim,
        action_dim=action_dim,
        total_episodes=info["total_episodes"],
        total_frames=info["total_frames"],
        episodes=episodes,
        tasks=tasks,
        robot_type=info.get("robot_type"),
        features=features,
    )


def _read_info(info_path: Path) -> dict:
    """``meta/info.json``, checked: every field the reader needs, a version it reads, a whole fps,
    a features object and episode and frame counts."""
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise dataset_error(info_path, "is not a JSON object", "restore the file from the original dataset")
    for name in ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path"):
        if name not in info:
            raise dataset_error(info_path, f"no {name!r} field", "restore the file from the original dataset")
    version = info["codebase_version"]
    if version not in SUPPORTED_VERSIONS:
        raise dataset_error(
            info_path,
            f"codebase_version {version!r} is not supported (autotune reads v3.0 and v2.1)",
            "convert the dataset with LeRobot's conversion scripts (lerobot.datasets.v30.convert_dataset_v21_to_v30)",
        )
    fps = info["fps"]
    if not isinstance(fps, int | float) or fps <= 0 or int(fps) != fps:
        raise dataset_error(info_path, f"fps is {fps!r}, expected a positive integer", REFETCH_HINT)
    if not isinstance(info["features"], dict):
        raise dataset_error(info_path, "features is not an object", REFETCH_HINT)
    for name in ("total_episodes", "total_frames"):
        if not isinstance(info[name], int) or info[name] < 0:
            raise dataset_error(info_path, f"{name} is {info[name]!r}, expected a count", REFETCH_HINT)
    return info


def _check_episode_ranges(root: Path, info_path: Path, info: dict, episodes: list[EpisodeRecord]) -> None:
    """The episodes are as many as ``total_episodes`` and cover the frames in order, each from where
    the one before ended, ``total_frames`` in all."""
    if len(episodes) != info["total_episodes"]:
        raise dataset_error(
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
            raise dataset_error(
                root / "meta",
                f"episode {ep.episode_index} covers frames [{ep.dataset_from_index}, {ep.dataset_to_index}) "
                f"with length {ep.length}, expected to start at {expected_start}",
                REFETCH_HINT,
            )
        expected_start = ep.dataset_to_index
    if expected_start != info["total_frames"]:
        raise dataset_error(
            info_path,
            f"total_frames is {info['total_frames']} but the episodes hold {expected_start}",
            REFETCH_HINT,
        )


def _check_files(episodes: list[EpisodeRecord]) -> None:
    """Every data and video file the episodes reference exists and looks whole (each checked once)."""
    data_files = list(dict.fromkeys(ep.data_file for ep in episodes))
    for path in data_files:
        _check_parquet_file(path)
    video_files = list(dict.fromkeys(v.path for ep in episodes for v in ep.videos.values()))
    for path in video_files:
        _check_mp4_file(path)


def _camera_codecs(
    features: dict, camera_keys: list[str], storage: dict[str, str], episodes: list[EpisodeRecord]
) -> dict[str, str | None]:
    """Each camera's video codec, from its feature's info or else read from its first video; None
    for cameras stored as images."""
    codecs: dict[str, str | None] = {}
    for key in camera_keys:
        block = features[key].get("info") or features[key].get("video_info") or {}
        codec = block.get("video.codec") if isinstance(block, dict) else None
        if storage[key] == "video" and codec is None and episodes:
            codec = _probe_codec(episodes[0].videos[key].path)
        codecs[key] = codec if storage[key] == "video" else None
    return codecs
