"""RRD's coupled batches: subsequences, bytes per batch and per iteration, and what is refused."""

from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.rl.rrd import RrdBatch, nearby_multiples

MiB = 1024**2


def rrd(**kwargs: object) -> RrdBatch:
    base: dict = {
        "batch_size": 32,
        "rrd_batch_size": 32,
        "rrd_sample_size": 32,
        "train_batches": 64,
        "obs_shape": (256, 256, 3),
        "obs_dtype": "uint8",
    }
    return RrdBatch(**{**base, **kwargs})


def test_the_issues_example_is_6_mib_each_12_per_batch_768_per_iteration() -> None:
    r = rrd()
    assert r.subsequences_per_batch == 1 and r.valid and r.dropped_timesteps == 0
    assert r.transition_bytes == 256 * 256 * 3 + 7 * 4
    assert r.q_bytes_per_batch == pytest.approx(6 * MiB, rel=1e-3)
    assert r.rrd_bytes_per_batch == pytest.approx(6 * MiB, rel=1e-3)
    assert r.bytes_per_batch == pytest.approx(12 * MiB, rel=1e-3)
    assert r.bytes_per_iteration == pytest.approx(768 * MiB, rel=1e-3)
    assert r.bytes_per_iteration == 64 * r.bytes_per_batch
    # The reference buffer also gathers next observations: about twice as much.
    assert r.gathered_bytes_per_batch == pytest.approx(2 * r.bytes_per_batch, rel=1e-3)


def test_subsequences_are_a_floor_division_that_drops_the_remainder() -> None:
    r = rrd(rrd_batch_size=100)
    assert r.subsequences_per_batch == 3 and r.rrd_timesteps == 96 and r.dropped_timesteps == 4
    assert not r.valid
    note = r.coupling_note()
    assert note is not None and "--rrd-batch-size 96 or 128" in note and "4 are silently dropped" in note
    assert rrd(rrd_batch_size=256).subsequences_per_batch == 8
    assert rrd(rrd_batch_size=256).coupling_note() is None
    assert nearby_multiples(100, 32) == (96, 128)
    assert nearby_multiples(20, 32) == (32, 32)


def test_vector_observations_count_four_bytes_a_value() -> None:
    r = rrd(
        obs_shape=(39,),
        obs_dtype="float32",
        act_dim=4,
        batch_size=256,
        rrd_batch_size=256,
        rrd_sample_size=64,
    )
    assert r.transition_bytes == 39 * 4 + 4 * 4
    assert r.bytes_per_batch == (256 + 256) * r.transition_bytes


def test_a_sample_longer_than_an_episode_is_refused_naming_what_fits() -> None:
    with pytest.raises(UserError) as err:
        rrd(rrd_batch_size=256, rrd_sample_size=64, episode_length=50)
    text = str(err.value)
    assert "--rrd-sample-size 64" in text and "--episode-length 50" in text and "at most 50" in text
    assert "32" in text and "\n" not in text
    rrd(rrd_batch_size=256, rrd_sample_size=50, episode_length=50)  # as long as the episode: fine


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0}, "--batch-size 0"),
        ({"rrd_batch_size": -32}, "--rrd-batch-size -32"),
        ({"rrd_sample_size": 0}, "--rrd-sample-size 0"),
        ({"train_batches": 0}, "--train-batches 0"),
        ({"act_dim": 0}, "--act-dim 0"),
        ({"episode_length": 0}, "--episode-length 0"),
        ({"rrd_batch_size": 16}, "smaller than --rrd-sample-size 32"),
    ],
)
def test_bad_sizes_are_refused_in_one_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserError) as err:
        rrd(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)
