"""Decoding camera frames: a video frame at a timestamp (as LeRobot's PyAV path does), or a stored image."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.dataset.errors import REFETCH_HINT, dataset_error, reason

TOLERANCE_S = 1e-4  # LeRobot's default timestamp tolerance when decoding video frames


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
        raise dataset_error(path, f"cannot open video ({reason(exc)})", REFETCH_HINT) from exc
    loaded: list[tuple[float, np.ndarray]] = []
    try:
        with container:
            if not container.streams.video:
                raise dataset_error(path, "has no video stream", REFETCH_HINT)
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
        raise dataset_error(
            path, f"cannot decode the frame at {timestamp_s:.6f} s ({reason(exc)})", REFETCH_HINT
        ) from exc
    if not loaded:
        raise dataset_error(
            path, f"no frame decoded at {timestamp_s:.6f} s (the video ends before it)", REFETCH_HINT
        )
    best_s, best = min(loaded, key=lambda item: abs(item[0] - timestamp_s))
    if not abs(best_s - timestamp_s) < tolerance_s:
        raise dataset_error(
            path,
            f"no frame within {tolerance_s} s of timestamp {timestamp_s:.6f} s (nearest {best_s:.6f} s)",
            "the video and the metadata disagree; " + REFETCH_HINT,
        )
    return torch.from_numpy(best).permute(2, 0, 1).contiguous()


def decode_image(value: Any, root: Path, path: Path, row: int, key: str) -> torch.Tensor:
    """An HF ``Image`` cell ({bytes, path}) as uint8 (3, H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(value, dict) and value.get("bytes"):
            img = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            file = Path(value["path"])
            img = Image.open(file if file.is_absolute() else root / file)
        else:
            raise dataset_error(path, f"row {row} of {key!r} holds no image", REFETCH_HINT)
        array = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise dataset_error(
            path, f"row {row} of {key!r} is not a readable image ({reason(exc)})", REFETCH_HINT
        ) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
