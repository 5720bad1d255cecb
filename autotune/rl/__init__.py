"""Batch sizes for reinforcement learning: PPO's minibatch under rl_games, RRD's coupled batches.

Pure rules and arithmetic live in :mod:`autotune.rl.ppo` and :mod:`autotune.rl.rrd`; measurement
(isolated probe children, like the rest of autotune) in :mod:`autotune.rl.measure`; the ``autotune
rl`` subcommand in :mod:`autotune.cli.rl`. Nothing here imports torch.
"""

from autotune.rl.ppo import PpoBatch, hand_rule_minibatch, valid_minibatch_sizes
from autotune.rl.rrd import RrdBatch

__all__ = ["PpoBatch", "RrdBatch", "hand_rule_minibatch", "valid_minibatch_sizes"]
