"""The RL probes' training steps, in this process on the CPU, at tiny sizes: they train for real
and report what the tuner reads."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from probes.protocol import ProbeRequest  # noqa: E402
from probes.rl.networks import ActorCritic, RewardNet, TwinQ  # noqa: E402
from probes.rl.ppo import gaussian_kl, run_ppo_probe  # noqa: E402
from probes.rl.rrd import run_rrd_probe  # noqa: E402

GiB = 1024**3


def never(peak: int) -> None:
    raise AssertionError(f"the budget was exceeded at {peak} B")


def ppo_request(minibatch: int, obs_shape: list[int], dtype: str, **rl: Any) -> ProbeRequest:
    return ProbeRequest(
        kind="ppo",
        batch_size=minibatch,
        memory_limit_bytes=4 * GiB,
        measure_steps=2,
        rl={
            "algo": "ppo",
            "obs_shape": obs_shape,
            "obs_dtype": dtype,
            "act_dim": 2,
            "hidden": [32, 16],
            "rollout_batch": 48,
            "mini_epochs": 2,
            **rl,
        },
    )


@pytest.mark.parametrize(("obs_shape", "dtype"), [([6], "float32"), ([16, 16, 3], "uint8")])
def test_ppo_probe_trains_minibatches_and_reports(obs_shape: list[int], dtype: str) -> None:
    fields = run_ppo_probe(ppo_request(16, obs_shape, dtype), never)
    assert fields["status"] == "ok" and fields["steps"] == 2 and fields["warmup_steps"] >= 1
    assert fields["step_time_s"] > 0 and fields["samples_per_s"] == pytest.approx(16 / fields["step_time_s"])
    assert fields["updt_s"] == pytest.approx(fields["step_time_s"] * 2 * 3)  # 2 passes x 48 / 16
    assert fields["trainable_params"] > 0 and fields["peak_reserved_bytes"] > 0


def test_ppo_full_update_times_every_minibatch_of_every_pass() -> None:
    fields = run_ppo_probe(ppo_request(20, [6], "float32", full_update=True), never)
    assert fields["steps"] == 2 * 3  # 48 in minibatches of 20: 20, 20, 8; two passes


def test_ppo_probe_refuses_a_minibatch_larger_than_the_batch() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        run_ppo_probe(ppo_request(49, [6], "float32"), never)


@pytest.mark.parametrize("vary", ["batch_size", "subsequences"])
@pytest.mark.parametrize(("obs_shape", "dtype"), [([5], "float32"), ([12, 12, 3], "uint8")])
def test_rrd_probe_trains_reward_critic_and_actor(obs_shape: list[int], dtype: str, vary: str) -> None:
    request = ProbeRequest(
        kind="rrd",
        batch_size=3,
        memory_limit_bytes=4 * GiB,
        measure_steps=2,
        rl={
            "algo": "rrd",
            "obs_shape": obs_shape,
            "obs_dtype": dtype,
            "act_dim": 2,
            "hidden": [32, 32],
            "reward_hidden": [16],
            "batch_size": 8,
            "rrd_sample_size": 4,
            "subsequences": 2,
            "vary": vary,
        },
    )
    fields = run_rrd_probe(request, never)
    assert fields["status"] == "ok" and fields["steps"] == 2
    samples = 3 + 2 * 4 if vary == "batch_size" else 8 + 3 * 4
    assert fields["samples_per_s"] == pytest.approx(samples / fields["step_time_s"])


def test_networks_have_the_shapes_the_trainers_use() -> None:
    ac = ActorCritic((64, 64, 3), act_dim=4, hidden=(256, 128, 64))
    mu, sigma, value = ac(torch.zeros(5, 64, 64, 3, dtype=torch.uint8))
    assert mu.shape == (5, 4) and sigma.shape == (5, 4) and value.shape == (5, 1)
    q1, q2 = TwinQ((10,), 3, (32,))(torch.zeros(2, 10), torch.zeros(2, 3))
    assert q1.shape == q2.shape == (2, 1)
    # 256x256 images: the reference's convolutions leave 64 x 32 x 32 features.
    assert RewardNet((256, 256, 3), 7, (256, 256)).conv.out_dim == 64 * 32 * 32
    mu0, s0 = torch.zeros(3, 2), torch.ones(3, 2)
    assert float(gaussian_kl(mu0, s0, mu0, s0)) == pytest.approx(0.0, abs=1e-4)
