"""Synthetic batches of LeRobot's real shapes and dtypes, shared by the policies (imports torch)."""

from __future__ import annotations

from typing import Any

import torch

from probes.keys import ACTION, STATE, image_keys
from probes.policies.common import check_positive_int


def frames_state_actions(
    cfg: Any, batch_size: int, generator: torch.Generator | None = None
) -> dict[str, Any]:
    """A CPU batch as LeRobot's loader yields it: every camera as uint8 ``(B, 3, H, W)``, the state
    ``(B, state_dim)`` and an action chunk ``(B, chunk_size, action_dim)``; the policy adds the
    padding flags (and the task) its data carries."""
    check_positive_int("batch_size", batch_size)
    height, width = cfg.image_size
    batch: dict[str, Any] = {
        key: torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, generator=generator)
        for key in image_keys(cfg.cameras)
    }
    batch[STATE] = torch.randn(batch_size, cfg.state_dim, generator=generator)
    batch[ACTION] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=generator)
    return batch
