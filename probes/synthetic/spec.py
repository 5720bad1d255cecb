"""What a synthetic dataset is written with: :class:`SyntheticSpec`, validated when built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from probes.synthetic.video import CODECS

VERSIONS = ("v3.0", "v2.1")
IMAGE_STORAGES = ("video", "image")


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    """The arguments of :func:`~probes.synthetic.writer.write_synthetic_dataset`, checked.

    ``ValueError`` naming the bad value if one is out of range. Fields keep the order in which
    ``meta/synthetic.json`` records them (:meth:`marker`).
    """

    cameras: int  # camera streams, named front, wrist, cam2, ...; 0 writes none
    image_size: tuple[int, int]  # (H, W) of every camera; even for yuv420p video
    fps: int  # frames per second, of the data and the videos
    episodes: int  # episodes written
    episode_length: int  # frames per episode (all episodes are the same length)
    state_dim: int  # observation.state width
    action_dim: int  # action width
    codec: str  # PyAV encoder name, a key of CODECS (libsvtav1, h264, hevc, ...)
    gop: int  # a keyframe every this many frames (LeRobot's ``g``)
    version: str  # "v3.0" or "v2.1"
    image_storage: str  # "video" (mp4 per camera) or "image" (PNGs inside the data parquet)
    episodes_per_file: int | None  # v3.0 only: episodes per data/video file; None: all in one
    seed: int  # every frame and trajectory is a function of it
    tasks: tuple[str, ...]  # task strings, episode i doing tasks[i % len(tasks)]
    chunks_size: int  # at most this many files per chunk-XXX folder

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for name in ("fps", "episodes", "episode_length", "state_dim", "action_dim", "gop", "chunks_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.cameras, int) or self.cameras < 0:
            raise ValueError(f"cameras must be a non-negative integer, got {self.cameras!r}")
        if self.version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {self.version!r}")
        if self.image_storage not in IMAGE_STORAGES:
            raise ValueError(f"image_storage must be one of {IMAGE_STORAGES}, got {self.image_storage!r}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        height, width = self.image_size
        if height < 8 or width < 8:
            raise ValueError(f"image_size must be at least 8x8, got {self.image_size}")
        if self.image_storage == "video" and (height % 2 or width % 2):
            raise ValueError(f"image_size must be even for yuv420p video, got {self.image_size}")
        per_file = self.episodes_per_file
        if per_file is not None:
            if self.version != "v3.0":
                raise ValueError("episodes_per_file applies to v3.0 only (v2.1 keeps one episode per file)")
            if not isinstance(per_file, int) or per_file < 1:
                raise ValueError(f"episodes_per_file must be a positive integer, got {per_file!r}")

    def marker(self) -> dict[str, Any]:
        """The settings as ``meta/synthetic.json`` records them (JSON lists for the tuples)."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["tasks"] = list(self.tasks)
        return out
