"""Randomized return decomposition (RRD) on an off-policy learner: how its batch knobs couple.

Each of ``TRAIN_BATCHES`` batches per iteration holds ``BATCH_SIZE`` transitions for the
Q-network and policy, and ``RRD_BATCH_SIZE // RRD_SAMPLE_SIZE`` subsequences of
``RRD_SAMPLE_SIZE`` timesteps for the reward network, each drawn from one episode, whose target is
that episode's return (per step). In the reference implementation
(Stilwell-Git/Randomized-Return-Decomposition, ``algorithm/replay_buffer/mujoco_buffer/
rrd_buffer.py``: ``ReplayBuffer_RRD.sample_batch`` and ``Trajectory.rrd_sample``) the subsequence
count is a floor division, so an ``RRD_BATCH_SIZE`` that is not a multiple of ``RRD_SAMPLE_SIZE``
silently drops the remainder; and a subsequence longer than its episode is drawn with replacement,
repeating timesteps (its bias correction does not handle that case), so a sample size larger than
the shortest episode is refused here.

Memory per batch, as the issue counts it: ``(BATCH_SIZE + subsequences x RRD_SAMPLE_SIZE) x
transition bytes``, a transition being one observation and its action. The buffer also gathers
each timestep's next observation (and a reward and done flag per transition), which is reported
beside as ``gathered_bytes_per_batch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.errors import UserError

DTYPE_BYTES = {"uint8": 1, "float32": 4}
ACTION_BYTES = 4  # float32
SCALAR_BYTES = 4  # float32 reward, done flag or return target
DEFAULT_TRAIN_BATCHES = 64
DEFAULT_ACT_DIM = 7  # a 7-DoF arm's action (LIBERO, Franka)


def observation_bytes(obs_shape: tuple[int, ...], obs_dtype: str) -> int:
    return math.prod(obs_shape) * DTYPE_BYTES[obs_dtype]


def nearby_multiples(value: int, step: int) -> tuple[int, int]:
    """The multiples of ``step`` at or just below and just above ``value`` (the lower at least ``step``)."""
    below = max(step, value // step * step)
    above = (value // step + 1) * step
    return below, above


@dataclass(frozen=True)
class RrdBatch:
    """One RRD setting and the observation it carries."""

    batch_size: int
    rrd_batch_size: int
    rrd_sample_size: int
    train_batches: int
    obs_shape: tuple[int, ...]
    act_dim: int = DEFAULT_ACT_DIM
    obs_dtype: str = "uint8"
    episode_length: int | None = None  # the shortest episode, where known

    def __post_init__(self) -> None:
        for flag, value in (
            ("--batch-size", self.batch_size),
            ("--rrd-batch-size", self.rrd_batch_size),
            ("--rrd-sample-size", self.rrd_sample_size),
            ("--train-batches", self.train_batches),
            ("--act-dim", self.act_dim),
            ("--episode-length", 1 if self.episode_length is None else self.episode_length),
        ):
            if value < 1:
                raise UserError(f"{flag} {value}: must be at least 1")
        if self.obs_dtype not in DTYPE_BYTES:
            raise UserError(f"--obs-dtype {self.obs_dtype}: use one of {', '.join(DTYPE_BYTES)}")
        if self.episode_length is not None and self.rrd_sample_size > self.episode_length:
            fits = [d for d in range(self.episode_length, 0, -1) if self.rrd_batch_size % d == 0][:3]
            raise UserError(
                f"--rrd-sample-size {self.rrd_sample_size} is larger than an episode "
                f"(--episode-length {self.episode_length}): its subsequences would repeat timesteps; "
                f"use at most {self.episode_length} (dividing --rrd-batch-size {self.rrd_batch_size}: "
                f"{', '.join(map(str, fits))})"
            )
        if self.rrd_batch_size < self.rrd_sample_size:
            raise UserError(
                f"--rrd-batch-size {self.rrd_batch_size} is smaller than --rrd-sample-size "
                f"{self.rrd_sample_size}: no subsequence reaches the reward network; use a multiple "
                f"of {self.rrd_sample_size} ({self.rrd_sample_size}, {2 * self.rrd_sample_size}, ...)"
            )

    @property
    def subsequences_per_batch(self) -> int:
        return self.rrd_batch_size // self.rrd_sample_size

    @property
    def rrd_timesteps(self) -> int:
        """Timesteps the reward network really sees per batch."""
        return self.subsequences_per_batch * self.rrd_sample_size

    @property
    def dropped_timesteps(self) -> int:
        """Of ``RRD_BATCH_SIZE``, the timesteps the floor division silently drops."""
        return self.rrd_batch_size - self.rrd_timesteps

    @property
    def valid(self) -> bool:
        return self.dropped_timesteps == 0

    @property
    def transition_bytes(self) -> int:
        """One observation and its action."""
        return observation_bytes(self.obs_shape, self.obs_dtype) + self.act_dim * ACTION_BYTES

    @property
    def q_bytes_per_batch(self) -> int:
        return self.batch_size * self.transition_bytes

    @property
    def rrd_bytes_per_batch(self) -> int:
        return self.rrd_timesteps * self.transition_bytes

    @property
    def bytes_per_batch(self) -> int:
        return self.q_bytes_per_batch + self.rrd_bytes_per_batch

    @property
    def bytes_per_iteration(self) -> int:
        return self.bytes_per_batch * self.train_batches

    @property
    def gathered_bytes_per_batch(self) -> int:
        """What the reference replay buffer copies per batch: each timestep's observation and next
        observation and action, a reward and done flag per transition, a target per subsequence."""
        obs = observation_bytes(self.obs_shape, self.obs_dtype)
        timestep = 2 * obs + self.act_dim * ACTION_BYTES
        return (
            self.batch_size * (timestep + 2 * SCALAR_BYTES)
            + self.rrd_timesteps * timestep
            + self.subsequences_per_batch * SCALAR_BYTES
        )

    def coupling_note(self) -> str | None:
        """One line when ``RRD_BATCH_SIZE`` drops timesteps, naming the nearby valid values."""
        if self.valid:
            return None
        below, above = nearby_multiples(self.rrd_batch_size, self.rrd_sample_size)
        sizes = [
            d
            for d in range(1, self.rrd_batch_size + 1)
            if self.rrd_batch_size % d == 0 and (self.episode_length is None or d <= self.episode_length)
        ]
        near = sorted(sizes, key=lambda d: (abs(d - self.rrd_sample_size), d))[:2]
        return (
            f"--rrd-batch-size {self.rrd_batch_size} is not a multiple of --rrd-sample-size "
            f"{self.rrd_sample_size}: {self.subsequences_per_batch} subsequences use "
            f"{self.rrd_timesteps} timesteps and {self.dropped_timesteps} are silently dropped; "
            f"valid nearby: --rrd-batch-size {below} or {above}, or --rrd-sample-size "
            f"{' or '.join(map(str, sorted(near)))}"
        )
