"""The dataset a run measures: the user's, or a synthetic one written once; read through a probe child.

The tuner never opens a dataset itself: a ``dataset`` probe writes the synthetic dataset (when it is
not there yet) and reads the metadata, so that decoding libraries and torch stay in the child.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from autotune.errors import ProbeError, UserError
from autotune.run.config import DEFAULT_CAMERAS, DEFAULT_IMAGE_SIZE, RunConfig
from autotune.run.probe_client import run_probe
from probes.protocol import DatasetInfo, ProbeRequest, SyntheticRequest

log = logging.getLogger(__name__)

# The synthetic dataset: an SO-101-like recording, 30 fps, long enough that decoding is real
# work and random access rarely hits the same frames twice.
SYNTHETIC_FPS = 30
SYNTHETIC_EPISODES = 12
SYNTHETIC_EPISODE_LENGTH = 150
SYNTHETIC_REPO_ID = "local/autotune-synthetic"
# Small variants written to measure remedies for an input-bound run.
VARIANT_EPISODES = 2
VARIANT_EPISODE_LENGTH = 90
# Codec names as the dataset reports them -> the encoder that writes them.
ENCODERS = {"av1": "libsvtav1", "h264": "h264", "hevc": "hevc"}
# Writing a dataset of 12 AV1 episodes takes well under a minute even at 480x640 on 2 cores.
DATASET_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DatasetShape:
    """What the data fixes about the model: camera count and size, state and action sizes."""

    root: Path
    repo_id: str
    kind: str  # "synthetic" or "user"
    cameras: int
    image_size: tuple[int, int]
    state_dim: int
    action_dim: int
    fps: int = SYNTHETIC_FPS
    codec: str | None = "av1"  # of the first video camera; None when cameras are images
    version: str = "v3.0"  # the LeRobotDataset format: "v3.0" or "v2.1"
    undecodable: dict[str, str] = field(default_factory=dict)  # backend -> the first sample it failed

    @property
    def encoder(self) -> str | None:
        """The encoder that writes this dataset's codec (None: not one autotune can write)."""
        return ENCODERS.get(self.codec or "")


def synthetic_request(cfg: RunConfig) -> SyntheticRequest:
    h, w = cfg.image_size or DEFAULT_IMAGE_SIZE
    cameras = cfg.cameras or DEFAULT_CAMERAS
    name = (
        f"synthetic-v3.0-{cameras}cam-{h}x{w}-{SYNTHETIC_FPS}fps-"
        f"{SYNTHETIC_EPISODES}x{SYNTHETIC_EPISODE_LENGTH}-s{cfg.state_dim}a{cfg.action_dim}"
    )
    return SyntheticRequest(
        root=str(cfg.results / "datasets" / name),
        cameras=cameras,
        image_size=(h, w),
        fps=SYNTHETIC_FPS,
        episodes=SYNTHETIC_EPISODES,
        episode_length=SYNTHETIC_EPISODE_LENGTH,
        state_dim=cfg.state_dim,
        action_dim=cfg.action_dim,
        seed=cfg.seed,
    )


def read_dataset(
    source: str | None, synthetic: SyntheticRequest | None, timeout_s: float = DATASET_TIMEOUT_S
) -> DatasetInfo:
    """Write ``synthetic`` if it is not there yet, then read the metadata of it (or of ``source``,
    a dataset folder or a repo id in the local LeRobot cache). A broken dataset is a UserError."""
    if synthetic is not None and not (Path(synthetic.root) / "meta" / "info.json").exists():
        log.info("writing the synthetic dataset %s (once; later runs reuse it)", synthetic.root)
    result = run_probe(
        ProbeRequest(kind="dataset", dataset_root=source, synthetic=synthetic),
        max(timeout_s, DATASET_TIMEOUT_S),
    )
    if result.invalid_input:
        raise UserError(result.message)
    if not result.fits or result.dataset is None:
        raise ProbeError(f"reading the dataset failed: {result.message or result.status}")
    return result.dataset


def prepare_dataset(cfg: RunConfig) -> DatasetShape:
    """Open the user's dataset, or write (once) and open the synthetic one."""
    if cfg.dataset is not None:
        info = read_dataset(cfg.dataset, None, cfg.probe_timeout_s)
        kind = "user"
        repo_id = cfg.dataset if not Path(cfg.dataset).exists() else Path(info.root).name
    else:
        info = read_dataset(None, synthetic_request(cfg), cfg.probe_timeout_s)
        kind, repo_id = "synthetic", SYNTHETIC_REPO_ID
    root = Path(info.root)
    if not info.camera_shapes:
        raise UserError(f"dataset {root}: has no camera features (observation.images.*)")
    shapes = {tuple(shape[:2]) for shape in info.camera_shapes.values()}
    if len(shapes) > 1:
        listing = ", ".join(f"{k} {s[0]}x{s[1]}" for k, s in info.camera_shapes.items())
        raise UserError(
            f"dataset {root}: cameras differ in shape ({listing}); {cfg.policy} needs every camera at one size"
        )
    ((height, width),) = shapes
    return DatasetShape(
        root=root,
        repo_id=repo_id,
        kind=kind,
        cameras=info.cameras,
        image_size=(int(height), int(width)),
        state_dim=info.state_dim,
        action_dim=info.action_dim,
        fps=info.fps,
        codec=info.codec,
        version=info.version,
        undecodable=dict(info.undecodable),
    )


def write_variant(
    data: DatasetShape, folder: Path, size: tuple[int, int], gop: int, seed: int, timeout_s: float
) -> Path:
    """A small synthetic dataset in ``data``'s codec and shapes, at camera ``size`` with a keyframe
    every ``gop`` frames (to measure what a remedy would change)."""
    encoder = data.encoder
    if encoder is None:
        raise ValueError(f"autotune cannot write {data.codec!r} video")
    name = (
        f"probe-{encoder}-{data.cameras}cam-{size[0]}x{size[1]}-gop{gop}-s{data.state_dim}a{data.action_dim}"
    )
    request = SyntheticRequest(
        root=str(folder / name),
        cameras=data.cameras,
        image_size=size,
        fps=data.fps,
        episodes=VARIANT_EPISODES,
        episode_length=VARIANT_EPISODE_LENGTH,
        state_dim=data.state_dim,
        action_dim=data.action_dim,
        codec=encoder,
        gop=gop,
        seed=seed,
    )
    return Path(read_dataset(None, request, timeout_s).root)
