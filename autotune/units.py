"""Parsing and formatting of sizes (``12GiB``) and image shapes (``480x640``)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_SHAPE = re.compile(r"^\s*([0-9]+)\s*[xX×]\s*([0-9]+)\s*$")


def parse_size(text: str) -> int:
    """``"12GiB"`` -> bytes. Binary (KiB, MiB, GiB) and decimal (KB, MB, GB) units; bare = bytes."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"malformed size {text!r}: use a number with a unit, e.g. 12GiB or 800MiB")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"size {text!r} must be positive")
    return int(value)


def parse_image_size(text: str) -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` as (height, width)."""
    match = _SHAPE.match(text)
    if not match:
        raise ValueError(f"malformed image size {text!r}: use HEIGHTxWIDTH, e.g. 480x640")
    h, w = int(match.group(1)), int(match.group(2))
    if h <= 0 or w <= 0:
        raise ValueError(f"image size {text!r} must have a positive height and width")
    return h, w


def format_bytes(n: float) -> str:
    """Bytes as a short binary-unit string: ``1.5 GiB``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
