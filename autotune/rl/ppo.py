"""PPO under rl_games (as Isaac Lab runs it): the batch, its valid minibatch sizes, a common hand
rule, and the config lines that set them.

What rl_games does (Denys88/rl_games, ``rl_games/common/a2c_common.py``, ``A2CBase.__init__``):
the batch is ``horizon_length * num_actors * num_agents`` (``num_agents`` is 1 for Isaac Lab's
single-agent tasks), the minibatch is ``params.config.minibatch_size`` (or
``minibatch_size_per_env * num_actors``), and start-up asserts
``assert(self.batch_size % self.minibatch_size == 0)``: a minibatch that does not divide the batch
crashes the run before it trains. Each update then makes ``mini_epochs`` passes over the shuffled
batch, ``batch_size // minibatch_size`` optimizer steps per pass.

Isaac Lab (``scripts/reinforcement_learning/rl_games/train.py``) sets ``num_actors`` from the
environment's ``num_envs`` (its ``--num_envs`` flag; the YAML holds ``num_actors: -1``) and passes
Hydra overrides of the agent config as ``agent.params.config.<key>=<value>``.

The hand rule is the one published by meetsitaram/g1-piano-play (``BATCH_SIZE_DYNAMIC.md``): its
table (horizon 16) gives 2048 envs -> 8192, 1024 -> 4096, 256 -> 1024, 16 -> 128, 4 -> 64, read as:
batch >= 1024 -> batch / 4; 256..1023 -> max(batch / 2, 64); below 256 -> the whole batch; then
halve until it divides. The code printed on the same page also floors the minibatch at 8192 for
batches of 8192 or more, which gives 8192, not the table's 4096, at 1024 envs: the table is
followed here, and the output says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.errors import UserError

HAND_RULE_SOURCE = "meetsitaram/g1-piano-play BATCH_SIZE_DYNAMIC.md"
# The published code's floor (not followed: it contradicts the published table at 1024 envs).
SCRIPT_FLOOR = 8192
DEFAULT_MINI_EPOCHS = 8  # Isaac Lab's cartpole rl_games_ppo_cfg.yaml
HYDRA_PREFIX = "agent.params.config."
ASSERT_TEXT = "assert(self.batch_size % self.minibatch_size == 0)"  # rl_games/common/a2c_common.py


def divisors(n: int) -> list[int]:
    """Every positive divisor of ``n``, ascending."""
    if n < 1:
        raise ValueError(f"{n} has no positive divisors")
    small, large = [], []
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            small.append(d)
            if d != n // d:
                large.append(n // d)
    return small + large[::-1]


def valid_minibatch_sizes(batch_size: int) -> list[int]:
    """Every minibatch size rl_games accepts for ``batch_size``: its divisors."""
    return divisors(batch_size)


def _halve_until_it_divides(batch_size: int, minibatch: int) -> int:
    while batch_size % minibatch:
        minibatch //= 2
    return minibatch


def hand_rule_minibatch(batch_size: int) -> int:
    """The hand rule's minibatch, as its published table has it (no 8192 floor)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if batch_size >= 1024:
        minibatch = batch_size // 4
    elif batch_size >= 256:
        minibatch = max(batch_size // 2, 64)
    else:
        minibatch = batch_size
    return _halve_until_it_divides(batch_size, minibatch)


def script_code_minibatch(batch_size: int) -> int:
    """What the same project's code computes: the rule with a floor of 8192 from a batch of 8192
    up (contradicting its own table at 1024 envs x 16: 8192, where the table says 4096)."""
    if batch_size >= SCRIPT_FLOOR:
        return _halve_until_it_divides(batch_size, max(batch_size // 4, SCRIPT_FLOOR))
    return hand_rule_minibatch(batch_size)


def nearest_valid(batch_size: int, minibatch: int) -> tuple[int | None, int | None]:
    """The valid minibatch sizes just below and just above ``minibatch`` (None where none)."""
    valid = valid_minibatch_sizes(batch_size)
    below = [d for d in valid if d < minibatch]
    above = [d for d in valid if d > minibatch]
    return (below[-1] if below else None), (above[0] if above else None)


def largest_valid_at_most(batch_size: int, limit: int) -> int:
    """The largest valid minibatch size at most ``limit`` (0 when ``limit`` < 1)."""
    if limit < 1:
        return 0
    return max(d for d in valid_minibatch_sizes(batch_size) if d <= limit)


@dataclass(frozen=True)
class PpoBatch:
    """One rl_games PPO setting: ``num_envs`` actors, ``horizon_length`` steps each, ``mini_epochs``
    passes per update."""

    num_envs: int
    horizon_length: int
    mini_epochs: int = DEFAULT_MINI_EPOCHS

    def __post_init__(self) -> None:
        for flag, value in (
            ("--num-envs", self.num_envs),
            ("--horizon", self.horizon_length),
            ("--mini-epochs", self.mini_epochs),
        ):
            if value < 1:
                raise UserError(f"{flag} {value}: must be at least 1 (e.g. {flag} {_example(flag)})")

    @property
    def batch_size(self) -> int:
        """rl_games's ``batch_size``: ``horizon_length * num_actors`` (one agent per env)."""
        return self.num_envs * self.horizon_length

    @property
    def valid_minibatch_sizes(self) -> list[int]:
        return valid_minibatch_sizes(self.batch_size)

    @property
    def hand_rule_minibatch(self) -> int:
        return hand_rule_minibatch(self.batch_size)

    @property
    def script_code_minibatch(self) -> int:
        return script_code_minibatch(self.batch_size)

    def minibatches_per_epoch(self, minibatch: int) -> int:
        return self.batch_size // minibatch

    def optimizer_steps_per_update(self, minibatch: int) -> int:
        return self.mini_epochs * self.minibatches_per_epoch(minibatch)

    def check_minibatch(self, minibatch: int) -> None:
        """Refuse a minibatch rl_games would refuse, naming the valid sizes nearest to it."""
        if minibatch < 1:
            raise UserError(
                f"--minibatch-size {minibatch}: must be at least 1; the hand rule gives "
                f"{self.hand_rule_minibatch} for a batch of {self.batch_size}"
            )
        if self.batch_size % minibatch == 0:
            return
        below, above = nearest_valid(self.batch_size, minibatch)
        options = " or ".join(str(v) for v in (below, above) if v is not None)
        raise UserError(
            f"--minibatch-size {minibatch} does not divide the batch {self.batch_size} "
            f"(--num-envs {self.num_envs} x --horizon {self.horizon_length}); rl_games asserts "
            f"batch_size % minibatch_size == 0 at start-up; nearest valid: {options} "
            f"(hand rule: {self.hand_rule_minibatch})"
        )


def _example(flag: str) -> int:
    return {"--num-envs": 4096, "--horizon": 16, "--mini-epochs": DEFAULT_MINI_EPOCHS}.get(flag, 1)


def rl_games_yaml(ppo: PpoBatch, minibatch: int, mixed_precision: bool = False) -> list[str]:
    """The lines of an rl_games agent YAML (``params.config``) that set this batch."""
    lines = [
        "params:",
        "  config:",
        f"    num_actors: {ppo.num_envs}  # Isaac Lab sets it from --num_envs (its YAML holds -1)",
        f"    horizon_length: {ppo.horizon_length}",
        f"    minibatch_size: {minibatch}  # batch {ppo.batch_size} / {minibatch} = "
        f"{ppo.minibatches_per_epoch(minibatch)} minibatches per epoch",
        f"    mini_epochs: {ppo.mini_epochs}",
    ]
    if mixed_precision:
        lines.append("    mixed_precision: True  # fp16 autocast with a gradient scaler")
    return lines


def isaaclab_overrides(ppo: PpoBatch, minibatch: int, mixed_precision: bool = False) -> list[str]:
    """Isaac Lab's ``train.py`` arguments for this batch: ``--num_envs`` and Hydra overrides."""
    args = [
        f"--num_envs {ppo.num_envs}",
        f"{HYDRA_PREFIX}horizon_length={ppo.horizon_length}",
        f"{HYDRA_PREFIX}minibatch_size={minibatch}",
        f"{HYDRA_PREFIX}mini_epochs={ppo.mini_epochs}",
    ]
    if mixed_precision:
        args.append(f"{HYDRA_PREFIX}mixed_precision=True")
    return args


def hand_rule_note(ppo: PpoBatch) -> str:
    """One line: the rule, its source, and where its published code disagrees with its table."""
    note = (
        f"rule from {HAND_RULE_SOURCE}, as its table has it: batch >= 1024 -> batch/4, 256..1023 -> "
        "max(batch/2, 64), below 256 -> the whole batch, then halve until it divides; its code's "
        "8192 floor for batches >= 8192 contradicts its own table at 1024 envs x 16 (8192 vs 4096), "
        "so the table is followed"
    )
    code = ppo.script_code_minibatch
    if code != ppo.hand_rule_minibatch:
        note += f" (here the code would give {code})"
    return note
