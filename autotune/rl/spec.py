"""The network an RL probe trains, parsed from flags, and the request a probe child reads.

The probe child reads the request's ``rl`` mapping with :mod:`probes.rl.spec` (the tuner never
imports it); the keys written here are the contract between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autotune.errors import UserError

DEFAULT_HIDDEN = (256, 128, 64)  # rl_games's usual MLP for Isaac Lab locomotion tasks
DEFAULT_REWARD_HIDDEN = (256, 256)  # the RRD reference's reward MLP (algorithm/rrd.py, mlp_rrd)


def parse_obs_shape(text: str) -> tuple[int, ...]:
    """``"39"`` -> ``(39,)`` (a vector); ``"256x256x3"`` -> ``(256, 256, 3)`` (H x W x C images)."""
    parts = re.split(r"\s*[xX×]\s*", text.strip())
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(
            f"--obs-shape {text!r}: use D for a vector or HxWxC for images, e.g. 256x256x3"
        ) from None
    if len(shape) not in (1, 3):
        raise UserError(f"--obs-shape {text!r}: use D for a vector or HxWxC for images, e.g. 256x256x3")
    if min(shape) < 1:
        raise UserError(f"--obs-shape {text!r}: every size must be at least 1")
    return shape


def parse_hidden(text: str, flag: str = "--hidden") -> tuple[int, ...]:
    """``"256,128,64"`` -> ``(256, 128, 64)``: the widths of the MLP's hidden layers."""
    try:
        widths = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: comma-separated layer widths, e.g. 256,128,64") from None
    if not widths or min(widths) < 1:
        raise UserError(f"{flag} {text!r}: comma-separated positive layer widths, e.g. 256,128,64")
    return widths


def default_obs_dtype(obs_shape: tuple[int, ...]) -> str:
    """uint8 for images (normalised on the device, as rl_games and the RRD reference do), float32
    for vectors."""
    return "uint8" if len(obs_shape) == 3 else "float32"


@dataclass(frozen=True)
class NetSpec:
    """The networks a probe builds: a CNN encoder for HxWxC observations, then MLPs."""

    obs_shape: tuple[int, ...]
    act_dim: int
    obs_dtype: str = "float32"
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    reward_hidden: tuple[int, ...] = DEFAULT_REWARD_HIDDEN  # RRD's reward network

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3

    @property
    def image_hw(self) -> tuple[int, int]:
        return (self.obs_shape[0], self.obs_shape[1]) if self.is_image else (0, 0)

    def describe(self) -> str:
        obs = "x".join(map(str, self.obs_shape))
        what = (
            f"{obs} {self.obs_dtype} images (CNN encoder)" if self.is_image else f"{obs}-dim {self.obs_dtype}"
        )
        return f"obs {what}, act {self.act_dim}, hidden {','.join(map(str, self.hidden))}"

    def probe_fields(self) -> dict[str, Any]:
        return {
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.obs_dtype,
            "act_dim": self.act_dim,
            "hidden": list(self.hidden),
            "reward_hidden": list(self.reward_hidden),
        }


@dataclass(frozen=True)
class PpoProbe:
    """A PPO probe: minibatches of the probed size over a rollout batch of ``rollout_batch``."""

    net: NetSpec
    rollout_batch: int
    mini_epochs: int
    full_update: bool = False  # time a whole update (mini_epochs passes), not a few minibatch steps
    max_steps: int = 256  # the most minibatch steps a full update is timed over

    def to_dict(self) -> dict[str, Any]:
        return {
            "algo": "ppo",
            **self.net.probe_fields(),
            "rollout_batch": self.rollout_batch,
            "mini_epochs": self.mini_epochs,
            "full_update": self.full_update,
            "max_steps": self.max_steps,
        }


@dataclass(frozen=True)
class RrdProbe:
    """An RRD probe: ``vary`` says whether the probed size is BATCH_SIZE or the subsequence count."""

    net: NetSpec
    batch_size: int
    rrd_sample_size: int
    subsequences: int
    vary: str = "batch_size"  # or "subsequences"

    def to_dict(self) -> dict[str, Any]:
        return {
            "algo": "rrd",
            **self.net.probe_fields(),
            "batch_size": self.batch_size,
            "rrd_sample_size": self.rrd_sample_size,
            "subsequences": self.subsequences,
            "vary": self.vary,
        }
