"""What a loaded dataset is: its episodes, where their frames and videos live, and its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
