"""What an RL probe trains, read from the request's ``rl`` mapping (written by autotune/rl/spec.py).

Torch-free, so a bad request is refused before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probes.protocol import ProbeRequest

MIN_IMAGE_SIDE = 8  # the CNN encoder's three convolutions need at least 8x8


@dataclass(frozen=True)
class RlSpec:
    """The networks and batch shape of a ``ppo`` or ``rrd`` probe; the probed size is the request's
    ``batch_size`` (PPO: the minibatch; RRD: BATCH_SIZE or the subsequence count, per ``vary``)."""

    algo: str  # "ppo" or "rrd"
    obs_shape: tuple[int, ...]  # (D,) or (H, W, C)
    obs_dtype: str  # "float32" or "uint8"
    act_dim: int
    hidden: tuple[int, ...]
    reward_hidden: tuple[int, ...] = (256, 256)
    # PPO
    rollout_batch: int = 0  # num_envs x horizon_length, held on the device
    mini_epochs: int = 1
    full_update: bool = False  # time a whole update (mini_epochs passes), up to max_steps steps
    max_steps: int = 256
    # RRD
    batch_size: int = 0  # BATCH_SIZE, when not the probed size
    rrd_sample_size: int = 1
    subsequences: int = 0  # RRD_BATCH_SIZE // RRD_SAMPLE_SIZE, when not the probed size
    vary: str = "batch_size"  # "batch_size" or "subsequences"

    def __post_init__(self) -> None:
        if self.algo not in ("ppo", "rrd"):
            raise ValueError(f"unknown RL probe algorithm {self.algo!r}")
        if len(self.obs_shape) not in (1, 3) or min(self.obs_shape) < 1:
            raise ValueError(f"observation shape {self.obs_shape}: use (D,) or (H, W, C)")
        if self.is_image and min(self.obs_shape[:2]) < MIN_IMAGE_SIDE:
            raise ValueError(f"images of {self.obs_shape[0]}x{self.obs_shape[1]} are below 8x8")
        if self.obs_dtype not in ("float32", "uint8"):
            raise ValueError(f"observation dtype {self.obs_dtype!r}: float32 or uint8")
        if self.vary not in ("batch_size", "subsequences"):
            raise ValueError(f"unknown RRD size to vary {self.vary!r}")

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3

    @classmethod
    def from_request(cls, request: ProbeRequest) -> RlSpec:
        raw: dict[str, Any] = dict(getattr(request, "rl", None) or {})
        if not raw:
            raise ValueError(f"a {request.kind} probe needs the request's rl mapping")
        for key in ("obs_shape", "hidden", "reward_hidden"):
            if key in raw:
                raw[key] = tuple(int(v) for v in raw[key])
        return cls(**raw)

    def rrd_sizes(self, probed: int) -> tuple[int, int]:
        """(BATCH_SIZE, subsequences) of an RRD probe at the probed size."""
        if self.vary == "batch_size":
            return probed, self.subsequences
        return self.batch_size, probed
