"""The PPO minibatch: the hand rule on its published table, the valid sizes, rl_games's lines."""

from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.rl.ppo import (
    PpoBatch,
    divisors,
    hand_rule_minibatch,
    hand_rule_note,
    isaaclab_overrides,
    largest_valid_at_most,
    nearest_valid,
    rl_games_yaml,
    script_code_minibatch,
    valid_minibatch_sizes,
)

# meetsitaram/g1-piano-play BATCH_SIZE_DYNAMIC.md, horizon 16: num_envs -> minibatch_size.
PUBLISHED_TABLE = [(2048, 8192), (1024, 4096), (256, 1024), (16, 128), (4, 64)]


@pytest.mark.parametrize(("num_envs", "minibatch"), PUBLISHED_TABLE)
def test_hand_rule_gives_every_row_of_the_published_table(num_envs: int, minibatch: int) -> None:
    ppo = PpoBatch(num_envs=num_envs, horizon_length=16)
    assert ppo.hand_rule_minibatch == minibatch
    assert ppo.batch_size % minibatch == 0


def test_the_published_codes_floor_contradicts_its_table_at_1024_envs() -> None:
    ppo = PpoBatch(num_envs=1024, horizon_length=16)
    assert ppo.script_code_minibatch == 8192  # what the code computes
    assert ppo.hand_rule_minibatch == 4096  # what the table says, and what autotune follows
    note = hand_rule_note(ppo)
    assert "8192 floor" in note and "table is followed" in note and "code would give 8192" in note
    # Where the floor changes nothing, the note still says which is followed, without the aside.
    assert "code would give" not in hand_rule_note(PpoBatch(num_envs=16, horizon_length=16))


def test_hand_rule_bands_then_halves_until_it_divides() -> None:
    assert hand_rule_minibatch(1024) == 256  # batch / 4 from 1024
    assert hand_rule_minibatch(512) == 256  # max(batch / 2, 64) from 256 to 1023
    assert hand_rule_minibatch(255) == 255  # the whole batch below 256
    assert hand_rule_minibatch(1030) == 2  # 1030 // 4 = 257, halved to 128, 64, ... 2 divides
    assert script_code_minibatch(32768) == 8192 and script_code_minibatch(8192) == 8192


def test_hand_rule_always_divides_the_batch() -> None:
    for batch in [*range(1, 5000), 2**20, 3 * 5 * 7 * 11 * 13 * 16]:
        m = hand_rule_minibatch(batch)
        assert 1 <= m <= batch and batch % m == 0, batch


@pytest.mark.parametrize("n", [1, 2, 12, 64, 97, 360, 4096, 5040, 32768])
def test_valid_minibatch_sizes_are_exactly_the_divisors(n: int) -> None:
    assert valid_minibatch_sizes(n) == [d for d in range(1, n + 1) if n % d == 0]
    assert divisors(n) == sorted(divisors(n))


def test_nearest_and_largest_valid() -> None:
    assert nearest_valid(16384, 1000) == (512, 1024)
    assert nearest_valid(12, 12) == (6, None)
    assert largest_valid_at_most(16384, 3000) == 2048
    assert largest_valid_at_most(96, 50) == 48
    assert largest_valid_at_most(96, 0) == 0


def test_a_minibatch_that_does_not_divide_is_refused_naming_what_works() -> None:
    ppo = PpoBatch(num_envs=1024, horizon_length=16)
    ppo.check_minibatch(2048)
    with pytest.raises(UserError) as err:
        ppo.check_minibatch(1000)
    text = str(err.value)
    assert "--minibatch-size 1000" in text and "16384" in text and "512 or 1024" in text
    assert "\n" not in text
    with pytest.raises(UserError, match="at least 1"):
        ppo.check_minibatch(0)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"num_envs": 0, "horizon_length": 16}, "--num-envs 0"),
        ({"num_envs": -4, "horizon_length": 16}, "--num-envs -4"),
        ({"num_envs": 4, "horizon_length": 0}, "--horizon 0"),
        ({"num_envs": 4, "horizon_length": 16, "mini_epochs": 0}, "--mini-epochs 0"),
    ],
)
def test_zero_or_negative_sizes_are_refused(kwargs: dict, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        PpoBatch(**kwargs)


def test_rl_games_lines_and_isaaclab_overrides_carry_the_batch() -> None:
    ppo = PpoBatch(num_envs=2048, horizon_length=16, mini_epochs=5)
    yaml = "\n".join(rl_games_yaml(ppo, 8192))
    for line in (
        "params:",
        "  config:",
        "num_actors: 2048",
        "horizon_length: 16",
        "minibatch_size: 8192",
        "mini_epochs: 5",
    ):
        assert line in yaml
    assert isaaclab_overrides(ppo, 8192) == [
        "--num_envs 2048",
        "agent.params.config.horizon_length=16",
        "agent.params.config.minibatch_size=8192",
        "agent.params.config.mini_epochs=5",
    ]
    assert "agent.params.config.mixed_precision=True" in isaaclab_overrides(ppo, 8192, mixed_precision=True)
    assert ppo.optimizer_steps_per_update(8192) == 5 * 4
