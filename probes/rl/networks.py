"""The networks RL probes train: rl_games's actor-critic for PPO; SAC's actor and twin critic and
RRD's reward network for RRD. Image observations (H x W x C, uint8 or float) go through a small
CNN encoder first.

- PPO (rl_games ``actor_critic`` network, ``separate: False``, model ``continuous_a2c_logstd``): a
  shared MLP trunk with ELU, a mean head, a value head and a state-independent log standard
  deviation (``fixed_sigma: True``), as Isaac Lab's rl_games configs set it.
- RRD reward network (Stilwell-Git/Randomized-Return-Decomposition, ``algorithm/rrd.py``): an MLP
  (256, 256, ReLU) over ``[obs, act, obs - obs_next]`` for vectors; for images three convolutions
  (32 8x8/4, 64 4x4/2, 64 3x3/1) over ``[obs, obs - obs_next]`` stacked on channels, then a
  dense layer; the continuous action joins after the convolutions.
- SAC: a tanh-squashed Gaussian actor over the critic's encoder features (detached), twin Q MLPs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_STD_RANGE = (-5.0, 2.0)


def mlp(in_dim: int, widths: tuple[int, ...], activation: type[nn.Module]) -> tuple[nn.Sequential, int]:
    """Linear layers of ``widths`` with ``activation`` after each; returns it and its output width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    return nn.Sequential(*layers), in_dim


def _conv_side(side: int) -> int:
    for kernel, stride, pad in ((8, 4, 2), (4, 2, 1), (3, 1, 1)):
        side = (side + 2 * pad - kernel) // stride + 1
    return side


class ImageEncoder(nn.Module):
    """Three convolutions (32 8x8/4, 64 4x4/2, 64 3x3/1, ReLU) and a flatten, over N x H x W x C."""

    def __init__(self, obs_shape: tuple[int, ...], channels_in: int | None = None) -> None:
        super().__init__()
        h, w, c = obs_shape
        self.net = nn.Sequential(
            nn.Conv2d(channels_in or c, 32, 8, 4, 2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.out_dim = 64 * _conv_side(h) * _conv_side(w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.permute(0, 3, 1, 2))


def as_float(obs: torch.Tensor) -> torch.Tensor:
    """uint8 frames to [0, 1] (rl_games's and the RRD reference's preprocessing); floats as they are."""
    return obs.float().div_(255.0) if obs.dtype == torch.uint8 else obs


class Encoder(nn.Module):
    """A CNN for images, a pass-through for vectors; ``out_dim`` is its feature width."""

    def __init__(self, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = ImageEncoder(obs_shape) if len(obs_shape) == 3 else None
        self.out_dim = self.conv.out_dim if self.conv is not None else obs_shape[0]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = as_float(obs)
        return self.conv(x) if self.conv is not None else x


class ActorCritic(nn.Module):
    """rl_games's continuous actor-critic: shared trunk, Gaussian policy head, value head."""

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = Encoder(obs_shape)
        self.trunk, width = mlp(self.encoder.out_dim, hidden, nn.ELU)
        self.mu = nn.Linear(width, act_dim)
        self.value = nn.Linear(width, 1)
        self.log_std = nn.Parameter(torch.zeros(act_dim))  # sigma_init const 0, fixed_sigma

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, standard deviation and value of a batch of observations."""
        h = self.trunk(self.encoder(obs))
        mu = self.mu(h)
        return mu, self.log_std.exp().expand_as(mu), self.value(h)


class TwinQ(nn.Module):
    """SAC's critic: an encoder and two Q heads over ``[features, action]``."""

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = Encoder(obs_shape)
        self.heads = nn.ModuleList()
        for _ in range(2):
            body, width = mlp(self.encoder.out_dim + act_dim, hidden, nn.ReLU)
            self.heads.append(nn.Sequential(body, nn.Linear(width, 1)))

    def q(self, features: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([features, act], dim=-1)
        return self.heads[0](x), self.heads[1](x)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(self.encoder(obs), act)


class SquashedGaussianActor(nn.Module):
    """SAC's policy over encoder features: a tanh-squashed Gaussian."""

    def __init__(self, feature_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.body, width = mlp(feature_dim, hidden, nn.ReLU)
        self.head = nn.Linear(width, 2 * act_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in (-1, 1) and its log-probability."""
        mean, log_std = self.head(self.body(features)).chunk(2, dim=-1)
        std = log_std.clamp(*LOG_STD_RANGE).exp()
        pre = mean + std * torch.randn_like(mean)
        logp = (-0.5 * ((pre - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        act = torch.tanh(pre)
        logp = logp - torch.log1p(-act.pow(2) + 1e-6).sum(-1)
        return act, logp.unsqueeze(-1)


class RewardNet(nn.Module):
    """RRD's reward network: a per-step reward from ``(obs, act, obs_next)``."""

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.image = len(obs_shape) == 3
        if self.image:
            self.conv = ImageEncoder(obs_shape, channels_in=2 * obs_shape[2])
            in_dim = self.conv.out_dim + act_dim
        else:
            in_dim = 2 * obs_shape[0] + act_dim
        body, width = mlp(in_dim, hidden, nn.ReLU)
        self.mlp = nn.Sequential(body, nn.Linear(width, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor, obs_next: torch.Tensor) -> torch.Tensor:
        x, x_next = as_float(obs), as_float(obs_next)
        if self.image:
            features = self.conv(torch.cat([x, x - x_next], dim=-1))
            return self.mlp(torch.cat([features, act], dim=-1))
        return self.mlp(torch.cat([x, act, x - x_next], dim=-1))
