"""Encoding synthetic videos as LeRobot does, and concatenating them into v3.0's shared files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Encoder name -> the codec name LeRobot records in info.json (``video.codec``).
CODECS: dict[str, str] = {
    "libsvtav1": "av1",
    "h264": "h264",
    "libx264": "h264",
    "hevc": "hevc",
    "libx265": "hevc",
}
CRF = 30


def encoder_options(codec: str, gop: int) -> dict[str, str]:
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


def encode_video(
    path: Path, frames: Iterator[np.ndarray], *, fps: int, size: tuple[int, int], codec: str, gop: int
) -> None:
    """Encode RGB frames into an mp4 at ``path`` (yuv420p), as LeRobot's ``encode_video_frames``."""
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told otherwise
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=encoder_options(codec, gop))
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = size
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_duration_s(path: Path) -> float:
    """Duration of the video stream in seconds, as LeRobot's ``get_video_duration_in_s``."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration / av.time_base)


def concat_videos(parts: Sequence[Path], out: Path) -> None:
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


def video_info(height: int, width: int, codec: str, fps: int) -> dict[str, Any]:
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
