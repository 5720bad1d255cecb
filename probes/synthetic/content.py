"""What a synthetic dataset holds: deterministic camera frames and smooth joint trajectories."""

from __future__ import annotations

import functools
import math

import numpy as np


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


def trajectories(
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
