"""A PPO probe: rl_games's update at one minibatch size, over a rollout batch held on the device.

The rollout (``num_envs x horizon_length`` transitions: observations, actions, old negative
log-probabilities, values, returns, advantages and the old policy's mean and sigma) sits on the
device, as rl_games's experience buffer does. Each step is one minibatch of an update that makes
``mini_epochs`` passes over the shuffled batch: the actor-critic's forward pass, the clipped
surrogate, the clipped value loss, the entropy bonus and the bounds loss, weighted as rl_games
weighs them (``rl_games/algos_torch/a2c_continuous.py``, ``calc_gradients``), backward through the
gradient scaler, gradient clipping, Adam (eps 1e-7, as rl_games builds it), and the KL to the old
policy read back, which synchronises like rl_games's ``kl_dist.item()``. Isaac Lab's cartpole
config (``rl_games_ppo_cfg.yaml``) gives the coefficients: e_clip 0.2, critic_coef 4,
bounds_loss_coef 0.0001, grad_norm 1.0 with truncate_grads.

Search probes time ``measure_steps`` minibatch steps; a ``full_update`` probe times a whole update
(``mini_epochs x ceil(batch / minibatch)`` steps, at most ``max_steps``). A minibatch size that
does not divide the batch ends each pass with a smaller minibatch (rl_games would refuse it; the
search may still probe it, since peak memory follows the largest minibatch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Normal

from probes.protocol import ProbeRequest
from probes.rl.loop import param_counts, result_fields, start, timed_steps
from probes.rl.networks import ActorCritic
from probes.rl.spec import RlSpec
from probes.train_step import autocast_context

E_CLIP = 0.2
CRITIC_COEF = 4.0
ENTROPY_COEF = 0.0  # Isaac Lab's value; the entropy is computed and backpropagated regardless
BOUNDS_LOSS_COEF = 1e-4
GRAD_NORM = 1.0
LEARNING_RATE = 3e-4
ADAM_EPS = 1e-7
SOFT_BOUND = 1.1


@dataclass
class Rollout:
    """A rollout batch on the device, as rl_games's experience buffer holds it."""

    obs: torch.Tensor
    actions: torch.Tensor
    old_neglogp: torch.Tensor
    old_values: torch.Tensor
    returns: torch.Tensor
    advantages: torch.Tensor
    old_mu: torch.Tensor
    old_sigma: torch.Tensor


def synthetic_rollout(spec: RlSpec, device: torch.device) -> Rollout:
    n, a = spec.rollout_batch, spec.act_dim
    if spec.obs_dtype == "uint8":
        obs = torch.randint(0, 256, (n, *spec.obs_shape), dtype=torch.uint8, device=device)
    else:
        obs = torch.randn((n, *spec.obs_shape), device=device)
    mu = torch.randn(n, a, device=device) * 0.5
    sigma = torch.full((n, a), 0.8, device=device)
    actions = mu + sigma * torch.randn(n, a, device=device)
    neglogp = -Normal(mu, sigma).log_prob(actions).sum(-1)
    advantages = torch.randn(n, device=device)
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)  # normalize_advantage
    return Rollout(
        obs=obs,
        actions=actions,
        old_neglogp=neglogp,
        old_values=torch.randn(n, 1, device=device),
        returns=torch.randn(n, 1, device=device),
        advantages=advantages,
        old_mu=mu,
        old_sigma=sigma,
    )


def minibatch_indices(
    batch: int, minibatch: int, mini_epochs: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """The indices of each minibatch, update after update: ``mini_epochs`` shuffled passes each."""
    while True:
        for _ in range(mini_epochs):
            order = torch.randperm(batch, device=device)
            for begin in range(0, batch, minibatch):
                yield order[begin : begin + minibatch]


def gaussian_kl(
    mu: torch.Tensor, sigma: torch.Tensor, mu0: torch.Tensor, sigma0: torch.Tensor
) -> torch.Tensor:
    """KL(old || new) of diagonal Gaussians, summed over actions, averaged over the minibatch."""
    kl = torch.log(sigma / sigma0 + 1e-5) + (sigma0**2 + (mu0 - mu) ** 2) / (2 * sigma**2 + 1e-5) - 0.5
    return kl.sum(-1).mean()


def run_ppo_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Train PPO minibatches of ``request.batch_size`` and report peak memory and step time."""
    spec = RlSpec.from_request(request)
    minibatch = request.batch_size
    if not 1 <= minibatch <= spec.rollout_batch:
        raise ValueError(f"minibatch {minibatch} must lie in [1, {spec.rollout_batch}]")
    harness = start(request, on_exceed)
    device, scaler = harness.device, harness.scaler
    assert scaler is not None
    model = ActorCritic(spec.obs_shape, spec.act_dim, spec.hidden).to(device)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE, eps=ADAM_EPS)
    harness.optimizers = [optimizer]
    rollout = synthetic_rollout(spec, device)
    order = minibatch_indices(spec.rollout_batch, minibatch, spec.mini_epochs, device)

    def step() -> None:
        idx = next(order)
        old_mu, old_sigma = rollout.old_mu[idx], rollout.old_sigma[idx]
        advantages, old_values, returns = (
            rollout.advantages[idx],
            rollout.old_values[idx],
            rollout.returns[idx],
        )
        for p in params:
            p.grad = None
        model.train()
        with autocast_context(device, request.precision):
            mu, sigma, values = model(rollout.obs[idx])
            mu, sigma, values = mu.float(), sigma.float(), values.float()
            dist = Normal(mu, sigma)
            neglogp = -dist.log_prob(rollout.actions[idx]).sum(-1)
            ratio = torch.exp(rollout.old_neglogp[idx] - neglogp)
            a_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - E_CLIP, 1 + E_CLIP))
            clipped = old_values + (values - old_values).clamp(-E_CLIP, E_CLIP)
            c_loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
            entropy = dist.entropy().sum(-1)
            b_loss = ((mu - SOFT_BOUND).clamp_min(0) ** 2 + (-mu - SOFT_BOUND).clamp_min(0) ** 2).sum(-1)
            loss = (
                a_loss.mean()
                + 0.5 * CRITIC_COEF * c_loss.mean()
                - ENTROPY_COEF * entropy.mean()
                + BOUNDS_LOSS_COEF * b_loss.mean()
            )
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, GRAD_NORM)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            gaussian_kl(mu.detach(), sigma.detach(), old_mu, old_sigma).item()

    steps_per_update = spec.mini_epochs * math.ceil(spec.rollout_batch / minibatch)
    measured = min(steps_per_update, spec.max_steps) if spec.full_update else request.measure_steps
    times, warmup = timed_steps(harness, step, measured)
    fields = result_fields(harness, times, warmup, samples_per_step=minibatch)
    # The update's time, extrapolated from the median minibatch step where fewer were timed.
    fields["updt_s"] = fields["step_time_s"] * steps_per_update
    return {**fields, **param_counts([model])}
