"""Synthetic batches of LeRobot's real shapes and dtypes, shared by the policies (imports torch).

They are drawn where ``device`` says (the generator's device by default): on a GPU a batch of 1,000
frames at 480x640 is drawn in milliseconds, where ``torch.randint`` on the host took seconds.
Under ``with torch.device("meta")`` and no generator they are meta tensors (the estimate counts them).
"""

from __future__ import annotations

from typing import Any

import torch

from probes.keys import ACTION, ACTION_IS_PAD, STATE, image_keys
from probes.policies.common import check_positive_int

# The samples of a synthetic batch come from the frames of an episode this many action chunks long
# (400 frames for ACT's chunk of 100, an ALOHA episode): about a quarter of them reach past the
# episode's end and carry a padded tail of actions, as LeRobot's delta timestamps give them.
EPISODE_CHUNKS = 4


def _device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device | None:
    """``device``, else the generator's; None leaves torch's default device (meta under META)."""
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else None


def frames_state_actions(
    cfg: Any,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """A batch as LeRobot's loader yields it: every camera as uint8 ``(B, 3, H, W)``, the state
    ``(B, state_dim)`` and an action chunk ``(B, chunk_size, action_dim)``, drawn on ``device``
    (default: the generator's); the policy adds the padding flags (and the task) its data carries."""
    check_positive_int("batch_size", batch_size)
    where = _device(generator, device)
    height, width = cfg.image_size
    batch: dict[str, Any] = {
        key: torch.randint(
            0, 256, (batch_size, 3, height, width), dtype=torch.uint8, generator=generator, device=where
        )
        for key in image_keys(cfg.cameras)
    }
    batch[STATE] = torch.randn(batch_size, cfg.state_dim, generator=generator, device=where)
    batch[ACTION] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=generator, device=where)
    return batch


def episode_padding(
    chunk_size: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``action_is_pad`` ``(B, chunk_size)`` of samples drawn from the frames of an episode
    ``EPISODE_CHUNKS * chunk_size`` long: a sample at frame ``f`` pads the steps ``f + i`` past the
    episode's end, a tail; the current frame's action is never padding."""
    where = _device(generator, device)
    episode_len = EPISODE_CHUNKS * chunk_size
    frame = torch.randint(0, episode_len, (batch_size, 1), generator=generator, device=where)
    return frame + torch.arange(chunk_size, device=where) >= episode_len


def redraw_padding(batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
    """``batch`` with new episode boundaries: only ``action_is_pad`` is drawn again (on the
    generator's device, then moved to where the batch holds it), every other tensor is the same
    object. What varies from step to step in real data without changing a shape: the soak's
    ``vary_padding``. Frames, state and actions do not change what a step costs, so redrawing them
    (a gigabyte of uint8 frames at batch 1,000) would only spend time."""
    if ACTION_IS_PAD not in batch:
        return dict(batch)
    old = batch[ACTION_IS_PAD]
    batch_size, chunk_size = old.shape
    new = episode_padding(chunk_size, batch_size, generator)
    return {**batch, ACTION_IS_PAD: new.to(old.device)}
