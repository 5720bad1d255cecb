"""Write a synthetic LeRobot dataset (v3.0 or v2.1) in exactly the on-disk format LeRobot writes.

Frames are deterministic functions of ``(seed, camera, episode, frame_index)`` (see
:func:`synthetic_frame`), so a reader can be checked against what was encoded. Videos are encoded
with PyAV as LeRobot encodes them (AV1 through libsvtav1, yuv420p, a keyframe every ``gop`` frames,
crf 30; or H.264 / HEVC). A v3.0 dataset packs many episodes into each data and video file, each
episode's video starting with a keyframe and located by its ``from_timestamp``, exactly as
LeRobot's concatenation leaves it.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Encoder name -> the codec name LeRobot records in info.json (``video.codec``).
CODECS: dict[str, str] = {
    "libsvtav1": "av1",
    "h264": "h264",
    "libx264": "h264",
    "hevc": "hevc",
    "libx265": "hevc",
}
VERSIONS = ("v3.0", "v2.1")
IMAGE_STORAGES = ("video", "image")

DEFAULT_TASKS = (
    "Pick up the red cube and place it in the bin.",
    "Push the blue block to the left edge of the table.",
    "Open the drawer and put the sponge inside.",
    "Stack the green cup on top of the yellow cup.",
)
SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ROBOT_TYPE = "so101_follower"
CHUNKS_SIZE = 1000  # LeRobot's default: at most this many files per chunk-XXX folder
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
CRF = 30

V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

# Not part of LeRobot's format: records the arguments a dataset was written with, so a second
# call with the same arguments reuses it and one with different arguments is refused.
MARKER_PATH = "meta/synthetic.json"

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STATS_EVERY = 10  # sample one frame in this many for the per-episode image statistics


def camera_keys(cameras: int) -> list[str]:
    """Feature keys for ``cameras`` cameras: ``front``, ``wrist``, then ``cam2``, ``cam3``, ..."""
    names = ["front", "wrist"] + [f"cam{i}" for i in range(2, cameras)]
    return [f"observation.images.{name}" for name in names[:cameras]]


def joint_names(dim: int) -> list[str]:
    """SO-101 joint names for the first six dimensions, ``joint_<i>`` beyond."""
    return [f"{SO101_JOINTS[i] if i < len(SO101_JOINTS) else f'joint_{i}'}.pos" for i in range(dim)]


# ----------------------------------------------------------------------------------------------
# Deterministic content
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _background(seed: int, camera: int, height: int, width: int) -> np.ndarray:
    """A textured scene (H, W, 3) uint8: a smooth colour field, wood-grain stripes and fine grain."""
    rng = np.random.default_rng([seed, camera, 7])
    cell = max(8, min(height, width) // 6)
    coarse = rng.random((height // cell + 2, width // cell + 2, 3), dtype=np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1.001, height, dtype=np.float32)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width, dtype=np.float32)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    field = top * (1 - fy) + bottom * fy  # bilinear colour field in [0, 1]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.15, 0.35)
    grain = np.sin(xx * freq + 3.0 * np.sin(yy * freq * 0.21)) * 18.0
    noise = rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
    img = 40.0 + field * 170.0 + (grain + noise)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=256)
def _objects(seed: int, camera: int, episode: int) -> np.ndarray:
    """Per-episode moving objects: rows of (colour r,g,b, size, freq x, freq y, phase x, phase y)."""
    rng = np.random.default_rng([seed, camera, episode, 11])
    count = 3
    colours = rng.integers(0, 256, (count, 3)).astype(np.float32)
    sizes = rng.uniform(0.12, 0.25, (count, 1))
    freqs = rng.uniform(0.15, 0.6, (count, 2))
    phases = rng.uniform(0, 2 * math.pi, (count, 2))
    return np.concatenate([colours, sizes, freqs, phases], axis=1)


def synthetic_frame(
    seed: int, camera: int, episode: int, frame_index: int, image_size: tuple[int, int], fps: int = 30
) -> np.ndarray:
    """The RGB frame (H, W, 3) uint8 that the writer encodes at ``frame_index`` of ``episode``.

    A textured scene panning sideways by about 1% of the width per frame, with three coloured
    blocks moving along smooth paths: real motion for the codec, and different from frame to frame.
    """
    height, width = image_size
    background = _background(seed, camera, height, width)
    shift = int(round(frame_index * max(1.0, width / 100.0) + episode * width / 7)) % width
    img = np.roll(background, -shift, axis=1)
    t = frame_index / fps
    for r, g, b, size, fx, fy, px, py in _objects(seed, camera, episode):
        half_w = max(2, int(size * width / 2))
        half_h = max(2, int(size * height / 2))
        cx = int(width * (0.5 + 0.35 * math.sin(2 * math.pi * fx * t + px)))
        cy = int(height * (0.5 + 0.35 * math.sin(2 * math.pi * fy * t + py)))
        y0, y1 = max(0, cy - half_h), min(height, cy + half_h)
        x0, x1 = max(0, cx - half_w), min(width, cx + half_w)
        img[y0:y1, x0:x1] = (r, g, b)
        border = max(1, half_w // 5)
        img[y0:y1, x0 : min(x1, x0 + border)] = (r * 0.4, g * 0.4, b * 0.4)
    return img


def _trajectories(
    seed: int, episode: int, length: int, fps: int, state_dim: int, action_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth joint trajectories: state (L, S) and action (L, A), the action leading the state."""
    rng = np.random.default_rng([seed, episode, 3])
    dim = max(state_dim, action_dim)
    lead = 3  # the commanded position runs a few frames ahead of the measured one
    t = (np.arange(length + lead, dtype=np.float64) / fps)[:, None]
    offsets = rng.uniform(-30.0, 30.0, dim)
    signal = np.zeros((length + lead, dim))
    for _ in range(3):
        amplitude = rng.uniform(5.0, 25.0, dim)
        freq = rng.uniform(0.05, 0.6, dim)
        phase = rng.uniform(0, 2 * math.pi, dim)
        signal += amplitude * np.sin(2 * math.pi * freq * t + phase)
    positions = offsets + signal
    state = positions[:length, :state_dim] + rng.normal(0.0, 0.05, (length, state_dim))
    action = positions[lead : lead + length, :action_dim]
    return state.astype(np.float32), action.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Video encoding
# ----------------------------------------------------------------------------------------------


def _encoder_options(codec: str, gop: int) -> dict[str, str]:
    """PyAV encoder options: LeRobot's ``g`` and ``crf``, plus a fast preset and quiet logs."""
    options = {"g": str(gop), "crf": str(CRF)}
    if codec == "libsvtav1":
        options["preset"] = "12"  # the fastest; SVT-AV1 4.x maps it to 11
    elif CODECS[codec] == "h264":
        options["preset"] = "veryfast"
    else:
        options["preset"] = "veryfast"
        options["x265-params"] = "log-level=error"
    return options


def _encode_video(
    path: Path, frames: Iterator[np.ndarray], *, fps: int, size: tuple[int, int], codec: str, gop: int
) -> None:
    """Encode RGB frames into an mp4 at ``path`` (yuv420p), as LeRobot's ``encode_video_frames``."""
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told otherwise
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=_encoder_options(codec, gop))
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = size
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _video_duration_s(path: Path) -> float:
    """Duration of the video stream in seconds, as LeRobot's ``get_video_duration_in_s``."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration / av.time_base)


def _concat_videos(parts: Sequence[Path], out: Path) -> None:
    """Concatenate same-codec mp4s by copying packets with shifted timestamps (no re-encoding).

    What LeRobot's v3.0 writer does with ffmpeg's concat demuxer: every episode keeps its own
    leading keyframe, and episode ``k`` starts at the summed durations of episodes ``0..k-1``.
    """
    import av

    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as output:
        out_stream = None
        offset = 0
        for part in parts:
            with av.open(str(part)) as source:
                stream = source.streams.video[0]
                if out_stream is None:
                    out_stream = output.add_stream_from_template(stream, opaque=True)
                for packet in source.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream flush packet
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    output.mux(packet)
                offset += stream.duration


def _video_info(height: int, width: int, codec: str, fps: int) -> dict[str, Any]:
    """The ``info`` block LeRobot's ``get_video_info`` stores for a video feature."""
    return {
        "video.height": height,
        "video.width": width,
        "video.codec": CODECS[codec],
        "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def _numeric_stats(values: np.ndarray, quantiles: bool = False) -> dict[str, Any]:
    """LeRobot's per-feature statistics of a (N, D) or (N,) array, as JSON-able lists."""
    values = values.reshape(len(values), -1).astype(np.float64)
    stats = {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [len(values)],
    }
    if quantiles:
        for q in QUANTILES:
            stats[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0).tolist()
    return stats


def _image_stats(frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per-channel image statistics in [0, 1] with LeRobot's (3, 1, 1) shape."""
    pixels = np.stack(frames).reshape(-1, 3).astype(np.float64) / 255.0

    def per_channel(v: np.ndarray) -> list:
        return [[[float(x)]] for x in v]

    return {
        "min": per_channel(pixels.min(axis=0)),
        "max": per_channel(pixels.max(axis=0)),
        "mean": per_channel(pixels.mean(axis=0)),
        "std": per_channel(pixels.std(axis=0)),
        "count": [len(frames)],
    }


def _aggregate_stats(per_episode: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-episode statistics: weighted means, pooled variances, overall min/max."""
    out: dict[str, Any] = {}
    for key in per_episode[0]:
        counts = np.array([ep[key]["count"][0] for ep in per_episode], dtype=np.float64)
        means = [np.asarray(ep[key]["mean"]) for ep in per_episode]
        stds = [np.asarray(ep[key]["std"]) for ep in per_episode]
        weights = [c / counts.sum() for c in counts]
        mean = sum(w * m for w, m in zip(weights, means, strict=True))
        var = sum(w * (s**2 + (m - mean) ** 2) for w, m, s in zip(weights, means, stds, strict=True))
        agg = {
            "min": np.min([np.asarray(ep[key]["min"]) for ep in per_episode], axis=0).tolist(),
            "max": np.max([np.asarray(ep[key]["max"]) for ep in per_episode], axis=0).tolist(),
            "mean": np.asarray(mean).tolist(),
            "std": np.sqrt(var).tolist(),
            "count": [int(counts.sum())],
        }
        for name in per_episode[0][key]:
            if name.startswith("q"):  # quantiles do not combine exactly; LeRobot averages them too
                qs = [np.asarray(ep[key][name]) for ep in per_episode]
                agg[name] = np.asarray(sum(w * q for w, q in zip(weights, qs, strict=True))).tolist()
        out[key] = agg
    return out


# ----------------------------------------------------------------------------------------------
# Parquet helpers
# ----------------------------------------------------------------------------------------------


def _hf_features(features: dict[str, dict]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature description stored in the parquet schema metadata."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            value = {"dtype": ft["dtype"], "_type": "Value"}
            out[key] = {"feature": value, "length": ft["shape"][0], "_type": "Sequence"}
    return out


def _write_parquet(path: Path, columns: dict[str, Any], features: dict[str, dict], images: bool) -> None:
    """Write one data parquet with HF's schema metadata, as ``datasets`` does for LeRobot."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for key, value in columns.items():
        if isinstance(value, np.ndarray) and value.ndim == 2:
            flat = pa.array(value.reshape(-1), type=pa.float32())
            arrays[key] = pa.FixedSizeListArray.from_arrays(flat, value.shape[1])
        elif isinstance(value, np.ndarray):
            arrays[key] = pa.array(value)
        else:  # image structs
            arrays[key] = pa.array(value, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table(arrays)
    meta = {"info": {"features": {k: v for k, v in _hf_features(features).items() if k in arrays}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    # datasets writes image tables in small row groups (100 rows) and others in larger ones.
    pq.write_table(table, path, row_group_size=100 if images else 1000, compression="snappy")


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# ----------------------------------------------------------------------------------------------
# The writer
# ----------------------------------------------------------------------------------------------


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
    """
    root = Path(root)
    task_list = list(dict.fromkeys(tasks)) if tasks else list(DEFAULT_TASKS)
    params = {
        "cameras": cameras,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "fps": fps,
        "episodes": episodes,
        "episode_length": episode_length,
        "state_dim": state_dim,
        "action_dim": action_dim,
        "codec": codec,
        "gop": gop,
        "version": version,
        "image_storage": image_storage,
        "episodes_per_file": episodes_per_file,
        "seed": seed,
        "tasks": task_list,
        "chunks_size": chunks_size,
    }
    _validate(params)

    if (root / "meta" / "info.json").is_file():
        _check_reusable(root, params)
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
        _write_dataset(tmp, params)
        _write_json(tmp / MARKER_PATH, params)
        try:
            os.rename(tmp, root)  # atomic; replaces an empty directory on POSIX
        except OSError:
            if (root / "meta" / "info.json").is_file():  # another process finished first
                _check_reusable(root, params)
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


def _validate(p: dict[str, Any]) -> None:
    def positive(name: str) -> None:
        if not isinstance(p[name], int) or p[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {p[name]!r}")

    for name in ("fps", "episodes", "episode_length", "state_dim", "action_dim", "gop", "chunks_size"):
        positive(name)
    if not isinstance(p["cameras"], int) or p["cameras"] < 0:
        raise ValueError(f"cameras must be a non-negative integer, got {p['cameras']!r}")
    if p["version"] not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {p['version']!r}")
    if p["image_storage"] not in IMAGE_STORAGES:
        raise ValueError(f"image_storage must be one of {IMAGE_STORAGES}, got {p['image_storage']!r}")
    if p["codec"] not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {p['codec']!r}")
    height, width = p["image_size"]
    if height < 8 or width < 8:
        raise ValueError(f"image_size must be at least 8x8, got {tuple(p['image_size'])}")
    if p["image_storage"] == "video" and (height % 2 or width % 2):
        raise ValueError(f"image_size must be even for yuv420p video, got {tuple(p['image_size'])}")
    per_file = p["episodes_per_file"]
    if per_file is not None:
        if p["version"] != "v3.0":
            raise ValueError("episodes_per_file applies to v3.0 only (v2.1 keeps one episode per file)")
        if not isinstance(per_file, int) or per_file < 1:
            raise ValueError(f"episodes_per_file must be a positive integer, got {per_file!r}")


def _check_reusable(root: Path, params: dict[str, Any]) -> None:
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


def _write_dataset(tmp: Path, p: dict[str, Any]) -> None:
    fps, version, seed = p["fps"], p["version"], p["seed"]
    n_eps, length = p["episodes"], p["episode_length"]
    height, width = p["image_size"]
    keys = camera_keys(p["cameras"])
    as_video = p["image_storage"] == "video"
    task_list = p["tasks"]
    codec, gop = p["codec"], p["gop"]

    features = _features(p, keys)
    per_file = 1 if version == "v2.1" else (p["episodes_per_file"] or n_eps)
    groups = [list(range(s, min(s + per_file, n_eps))) for s in range(0, n_eps, per_file)]

    episode_rows: list[dict[str, Any]] = []
    episode_stats: list[dict[str, Any]] = []
    workers = max(1, min(len(keys), os.cpu_count() or 1))

    for position, group in enumerate(groups):
        chunk_index, file_index = _chunk_file(position, p["chunks_size"])
        columns: dict[str, list] = {
            k: [] for k in ("state", "action", "timestamp", "frame", "episode", "index", "task")
        }
        image_columns: dict[str, list] = {k: [] for k in keys} if not as_video else {}
        sampled: dict[int, dict[str, list[np.ndarray]]] = {ep: {k: [] for k in keys} for ep in group}
        episode_videos: dict[str, list[Path]] = {k: [] for k in keys}

        for ep in group:
            state, action = _trajectories(seed, ep, length, fps, p["state_dim"], p["action_dim"])
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
                            episode_chunk=ep // p["chunks_size"], video_key=key, episode_index=ep
                        )
                        path = tmp / rel
                    else:
                        path = tmp / ".episodes" / key / f"episode_{ep:06d}.mp4"
                    episode_videos[key].append(path)
                    jobs.append((path, cam))
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [
                        pool.submit(
                            _encode_video,
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
                        {"bytes": _png_bytes(img), "path": None} for img in frames_of(cam)
                    )

        # Video files: one per episode (v2.1) or the group's episodes concatenated (v3.0).
        video_meta: dict[int, dict[str, Any]] = {ep: {} for ep in group}
        if as_video:
            for key in keys:
                durations = [_video_duration_s(path) for path in episode_videos[key]]
                if version == "v3.0":
                    out = tmp / V30_VIDEO_PATH.format(
                        video_key=key, chunk_index=chunk_index, file_index=file_index
                    )
                    _concat_videos(episode_videos[key], out)
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
            "action": np.concatenate(columns["action"]),
            "observation.state": np.concatenate(columns["state"]),
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
            rel = V21_DATA_PATH.format(episode_chunk=group[0] // p["chunks_size"], episode_index=group[0])
        else:
            rel = V30_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        _write_parquet(tmp / rel, data_columns, features, images=not as_video)

        # Per-episode metadata and statistics.
        for j, ep in enumerate(group):
            ep_stats: dict[str, Any] = {
                "action": _numeric_stats(columns["action"][j], quantiles=True),
                "observation.state": _numeric_stats(columns["state"][j], quantiles=True),
            }
            for key in keys:
                ep_stats[key] = _image_stats(sampled[ep][key])
            for name, col in (
                ("timestamp", "timestamp"),
                ("frame_index", "frame"),
                ("episode_index", "episode"),
                ("index", "index"),
                ("task_index", "task"),
            ):
                ep_stats[name] = _numeric_stats(columns[col][j])
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
        _write_v30_meta(tmp, p, features, episode_rows, episode_stats, len(groups))
    else:
        _write_v21_meta(tmp, p, features, episode_rows, episode_stats)


def _features(p: dict[str, Any], keys: list[str]) -> dict[str, dict]:
    height, width = p["image_size"]
    as_video = p["image_storage"] == "video"
    features: dict[str, dict] = {
        "action": {"dtype": "float32", "shape": [p["action_dim"]], "names": joint_names(p["action_dim"])},
        "observation.state": {
            "dtype": "float32",
            "shape": [p["state_dim"]],
            "names": joint_names(p["state_dim"]),
        },
    }
    for key in keys:
        ft: dict[str, Any] = {
            "dtype": "video" if as_video else "image",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
        }
        if as_video:
            ft["info"] = _video_info(height, width, p["codec"], p["fps"])
        features[key] = ft
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    if p["version"] == "v3.0":  # LeRobot's v2.1 -> v3.0 conversion tags non-video features with fps
        for ft in features.values():
            if ft["dtype"] != "video":
                ft["fps"] = p["fps"]
    return features


def _write_v30_meta(
    tmp: Path,
    p: dict[str, Any],
    features: dict[str, dict],
    episode_rows: list[dict[str, Any]],
    episode_stats: list[dict[str, Any]],
    n_files: int,
) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for row, stats in zip(episode_rows, episode_stats, strict=True):
        full = dict(row)
        for key, ft_stats in stats.items():
            for name, value in ft_stats.items():
                full[f"stats/{key}/{name}"] = value
        full["meta/episodes/chunk_index"] = 0
        full["meta/episodes/file_index"] = 0
        rows.append(full)
    table = pa.Table.from_pylist(rows)
    path = tmp / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")

    tasks = pd.DataFrame({"task_index": range(len(p["tasks"]))}, index=pd.Index(p["tasks"], name="task"))
    tasks.to_parquet(tmp / "meta" / "tasks.parquet")
    _write_json(tmp / "meta" / "stats.json", _aggregate_stats(episode_stats))

    total_frames = p["episodes"] * p["episode_length"]
    info = {
        "codebase_version": "v3.0",
        "robot_type": ROBOT_TYPE,
        "total_episodes": p["episodes"],
        "total_frames": total_frames,
        "total_tasks": len(p["tasks"]),
        "chunks_size": p["chunks_size"],
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": p["fps"],
        "splits": {"train": f"0:{p['episodes']}"},
        "data_path": V30_DATA_PATH,
        "video_path": V30_VIDEO_PATH if p["image_storage"] == "video" and p["cameras"] else None,
        "features": features,
    }
    _write_json(tmp / "meta" / "info.json", info)


def _write_v21_meta(
    tmp: Path,
    p: dict[str, Any],
    features: dict[str, dict],
    episode_rows: list[dict[str, Any]],
    episode_stats: list[dict[str, Any]],
) -> None:
    _write_jsonl(
        tmp / "meta" / "episodes.jsonl",
        [
            {"episode_index": r["episode_index"], "tasks": r["tasks"], "length": r["length"]}
            for r in episode_rows
        ],
    )
    _write_jsonl(
        tmp / "meta" / "episodes_stats.jsonl",
        [
            {"episode_index": r["episode_index"], "stats": s}
            for r, s in zip(episode_rows, episode_stats, strict=True)
        ],
    )
    _write_jsonl(
        tmp / "meta" / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(p["tasks"])]
    )
    as_video = p["image_storage"] == "video"
    info = {
        "codebase_version": "v2.1",
        "robot_type": ROBOT_TYPE,
        "total_episodes": p["episodes"],
        "total_frames": p["episodes"] * p["episode_length"],
        "total_tasks": len(p["tasks"]),
        "total_videos": p["episodes"] * p["cameras"] if as_video else 0,
        "total_chunks": (p["episodes"] - 1) // p["chunks_size"] + 1,
        "chunks_size": p["chunks_size"],
        "fps": p["fps"],
        "splits": {"train": f"0:{p['episodes']}"},
        "data_path": V21_DATA_PATH,
        "video_path": V21_VIDEO_PATH if as_video and p["cameras"] else None,
        "features": features,
    }
    _write_json(tmp / "meta" / "info.json", info)
