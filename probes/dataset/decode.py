"""Decoding camera frames: a video frame at a timestamp, as LeRobot decodes it with torchcodec or with
PyAV (``video_backend``), or a stored image.

LeRobot 0.6.1 (datasets/video_utils.py, utils/import_utils.py) decodes with torchcodec where
``import torchcodec`` succeeds (FFmpeg's shared libraries load) and with PyAV otherwise;
``--dataset.video_backend`` picks one. torchcodec keeps one ``VideoDecoder`` per file open in each
process (an LRU of 100, seek mode "approximate") and asks for the frame index nearest the timestamp;
PyAV opens the file for each query and decodes forward from the keyframe before it.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.dataset.errors import REFETCH_HINT, dataset_error, reason

TOLERANCE_S = 1e-4  # LeRobot's default timestamp tolerance when decoding video frames
BACKENDS = ("torchcodec", "pyav")  # LeRobot's --dataset.video_backend values for these decoders
DECODER_CACHE_SIZE = 100  # LeRobot 0.6.1's DEFAULT_DECODER_CACHE_SIZE


def backend_error(backend: str) -> str | None:
    """None where ``backend`` loads in this process, else why not (its first line), as LeRobot
    tells: torchcodec installed but unable to load its FFmpeg libraries is an error here."""
    try:
        if backend == "torchcodec":
            import torchcodec.decoders  # noqa: F401  (loads FFmpeg's shared libraries)
        elif backend == "pyav":
            import av  # noqa: F401
        else:
            return f"unknown video backend {backend!r} (known: {', '.join(BACKENDS)})"
    except (ImportError, OSError, RuntimeError) as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def decode_video_frame(
    path: Path, timestamp_s: float, tolerance_s: float = TOLERANCE_S, backend: str = "pyav"
) -> torch.Tensor:
    """The frame of ``path`` at ``timestamp_s`` as uint8 (3, H, W), decoded as LeRobot's
    ``backend`` path does."""
    if backend == "torchcodec":
        return _decode_torchcodec(path, timestamp_s, tolerance_s)
    return _decode_pyav(path, timestamp_s, tolerance_s)


class _Decoders:
    """torchcodec decoders kept open per file in this process (LeRobot's VideoDecoderCache): a
    DataLoader worker forked from a process that decoded opens its own."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self.lock = threading.Lock()  # the cameras of a sample decode in threads

    def get(self, path: Path) -> Any:
        with self.lock:
            return self._get(path)

    def _get(self, path: Path) -> Any:
        from torchcodec.decoders import VideoDecoder

        if self.pid != os.getpid():  # forked: the parent's file handles are not ours to share
            self.pid, self.open = os.getpid(), OrderedDict()
        key = str(path)
        if key in self.open:
            self.open.move_to_end(key)
            return self.open[key][0]
        handle = open(key, "rb")  # noqa: SIM115  (kept open with its decoder, as LeRobot's fsspec file)
        try:
            decoder = VideoDecoder(handle, seek_mode="approximate")
        except Exception:
            handle.close()
            raise
        self.open[key] = (decoder, handle)
        while len(self.open) > DECODER_CACHE_SIZE:
            _, (_, old) = self.open.popitem(last=False)
            old.close()
        return decoder


_decoders = _Decoders()


def _decode_torchcodec(path: Path, timestamp_s: float, tolerance_s: float) -> torch.Tensor:
    try:
        decoder = _decoders.get(path)
        index = round(timestamp_s * decoder.metadata.average_fps)
        frames = decoder.get_frames_at(indices=[index])
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        raise dataset_error(
            path,
            f"cannot decode the frame at {timestamp_s:.6f} s with torchcodec ({reason(exc)})",
            REFETCH_HINT,
        ) from exc
    loaded_s = float(frames.pts_seconds[0])
    if not abs(loaded_s - timestamp_s) < tolerance_s:
        raise dataset_error(
            path,
            f"no frame within {tolerance_s} s of timestamp {timestamp_s:.6f} s (nearest {loaded_s:.6f} s)",
            "the video and the metadata disagree; " + REFETCH_HINT,
        )
    return frames.data[0].contiguous()


def _decode_pyav(path: Path, timestamp_s: float, tolerance_s: float) -> torch.Tensor:
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


def decode_probe_fields(
    wanted: str, read_s: Callable[[str], float | None], misses: tuple[type[BaseException], ...]
) -> dict[str, Any]:
    """A decode probe's fields: ``read_s(backend)`` (seconds per sample; None: no videos, so the
    other backends read the same) for ``wanted`` and then every other backend that loads here. One
    that raises ``misses`` is recorded in ``backend_errors`` unless it is ``wanted``."""
    by_backend: dict[str, float] = {}
    errors: dict[str, str] = {}
    for backend in (wanted, *(b for b in BACKENDS if b != wanted)):
        error = backend_error(backend)
        if error is not None:
            errors[backend] = error
            continue
        try:
            seconds = read_s(backend)
        except misses as exc:
            if backend == wanted:
                raise
            errors[backend] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            continue
        if seconds is None:
            break
        by_backend[backend] = seconds
    if wanted in errors:
        message = f"video backend {wanted} cannot load: {errors[wanted]}"
        return {"status": "error", "message": message, "backend_errors": errors}
    return {
        "status": "ok",
        "decode_s_per_sample": by_backend[wanted],
        "decode_s_by_backend": by_backend,
        "backend_errors": errors,
    }
