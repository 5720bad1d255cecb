"""An RRD probe: one training batch of randomized return decomposition on SAC.

A batch (sampled on the host, as the reference replay buffer samples it, then moved to the device)
holds ``BATCH_SIZE`` transitions (observation, next observation, action, done) and
``subsequences`` subsequences of ``RRD_SAMPLE_SIZE`` timesteps, each with its episode's return per
step as the target. One step trains, as the reference does per batch
(Stilwell-Git/Randomized-Return-Decomposition, ``algorithm/rrd.py``):

1. the reward network on the subsequences: the mean of its per-step predictions over each
   subsequence regressed onto the target (squared error), Adam;
2. SAC on the transitions with the reward network's predictions (no gradient) as rewards: the twin
   critic against the target critic's soft value, then the actor through the critic, each with
   Adam; then a Polyak update of the target critic.

The probed size is BATCH_SIZE or the subsequence count (``vary``); samples per second count every
timestep the step trained on (transitions plus subsequence timesteps).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from probes.protocol import ProbeRequest
from probes.rl.loop import param_counts, result_fields, start, timed_steps
from probes.rl.networks import RewardNet, SquashedGaussianActor, TwinQ
from probes.rl.spec import RlSpec
from probes.train_step import autocast_context

GAMMA = 0.99
POLYAK = 0.995
ALPHA = 0.2  # SAC's entropy temperature, fixed
LEARNING_RATE = 3e-4


def _observations(spec: RlSpec, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if spec.obs_dtype == "uint8":
        return torch.randint(0, 256, (*shape, *spec.obs_shape), dtype=torch.uint8, generator=generator)
    return torch.randn((*shape, *spec.obs_shape), generator=generator)


def synthetic_batch(spec: RlSpec, batch_size: int, subsequences: int, seed: int) -> dict[str, torch.Tensor]:
    """One RRD batch on the host, shaped as the reference buffer's ``sample_batch`` returns it."""
    g = torch.Generator().manual_seed(seed)
    k, s, a = subsequences, spec.rrd_sample_size, spec.act_dim
    return {
        "obs": _observations(spec, (batch_size,), g),
        "obs_next": _observations(spec, (batch_size,), g),
        "acts": torch.rand(batch_size, a, generator=g) * 2 - 1,
        "done": (torch.rand(batch_size, 1, generator=g) < 0.01).float(),
        "rrd_obs": _observations(spec, (k, s), g),
        "rrd_obs_next": _observations(spec, (k, s), g),
        "rrd_acts": torch.rand(k, s, a, generator=g) * 2 - 1,
        "rrd_rews": torch.randn(k, 1, generator=g),
    }


def run_rrd_probe(request: ProbeRequest, on_exceed: Any) -> dict[str, Any]:
    """Train RRD batches at the probed size and report peak memory and step time."""
    spec = RlSpec.from_request(request)
    batch_size, subsequences = spec.rrd_sizes(request.batch_size)
    if batch_size < 1 or subsequences < 1:
        raise ValueError(f"BATCH_SIZE {batch_size} and {subsequences} subsequences must be at least 1")
    harness = start(request, on_exceed)
    device, scaler = harness.device, harness.scaler
    assert scaler is not None
    reward = RewardNet(spec.obs_shape, spec.act_dim, spec.reward_hidden).to(device)
    critic = TwinQ(spec.obs_shape, spec.act_dim, spec.hidden).to(device)
    target = copy.deepcopy(critic).requires_grad_(False)
    actor = SquashedGaussianActor(critic.encoder.out_dim, spec.act_dim, spec.hidden).to(device)
    optimizers = [torch.optim.Adam(net.parameters(), lr=LEARNING_RATE) for net in (reward, critic, actor)]
    r_opt, q_opt, pi_opt = optimizers
    harness.optimizers = optimizers
    host = synthetic_batch(spec, batch_size, subsequences, request.seed)
    non_blocking = device.type == "cuda"
    k, s = subsequences, spec.rrd_sample_size

    def step() -> None:
        b = {key: value.to(device, non_blocking=non_blocking) for key, value in host.items()}
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        # 1. The reward network on the subsequences.
        with autocast_context(device, request.precision):
            per_step = reward(
                b["rrd_obs"].flatten(0, 1), b["rrd_acts"].flatten(0, 1), b["rrd_obs_next"].flatten(0, 1)
            )
            r_loss = F.mse_loss(per_step.float().view(k, s).mean(dim=1, keepdim=True), b["rrd_rews"])
        scaler.scale(r_loss).backward()
        scaler.step(r_opt)
        # 2. SAC's critic, with the reward network's rewards.
        with torch.no_grad(), autocast_context(device, request.precision):
            rews = reward(b["obs"], b["acts"], b["obs_next"]).float()
            next_act, next_logp = actor(critic.encoder(b["obs_next"]))
            next_q = torch.min(*target(b["obs_next"], next_act)).float() - ALPHA * next_logp.float()
            y = rews + GAMMA * (1 - b["done"]) * next_q
        with autocast_context(device, request.precision):
            features = critic.encoder(b["obs"])
            q1, q2 = critic.q(features, b["acts"])
            q_loss = F.mse_loss(q1.float(), y) + F.mse_loss(q2.float(), y)
        scaler.scale(q_loss).backward()
        scaler.step(q_opt)
        # 3. SAC's actor, through the critic (its encoder's features detached).
        with autocast_context(device, request.precision):
            act, logp = actor(features.detach())
            q_pi = torch.min(*critic.q(features.detach(), act)).float()
            pi_loss = (ALPHA * logp.float() - q_pi).mean()
        scaler.scale(pi_loss).backward()
        scaler.step(pi_opt)
        scaler.update()
        with torch.no_grad():
            for p, p_target in zip(critic.parameters(), target.parameters(), strict=True):
                p_target.mul_(POLYAK).add_(p.detach(), alpha=1 - POLYAK)
        float(r_loss.item() + q_loss.item() + pi_loss.item())  # the reference logs them: synchronises

    times, warmup = timed_steps(harness, step, request.measure_steps)
    fields = result_fields(harness, times, warmup, samples_per_step=batch_size + k * s)
    fields["updt_s"] = fields["step_time_s"]
    return {**fields, **param_counts([reward, critic, actor])}
