"""LeRobot's batch keys: what a sample and a batch are called, in one place (torch-free)."""

from __future__ import annotations

IMAGE_PREFIX = "observation.images."
STATE = "observation.state"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TASK = "task"
LANGUAGE_TOKENS = "observation.language.tokens"
LANGUAGE_MASK = "observation.language.attention_mask"


def image_keys(cameras: int) -> list[str]:
    """Batch keys for ``cameras`` synthetic cameras, in a fixed order (``observation.images.cam0``, ...)."""
    return [f"{IMAGE_PREFIX}cam{i}" for i in range(cameras)]


def is_image_key(key: str) -> bool:
    return key.startswith(IMAGE_PREFIX)


def pad_key(key: str) -> str:
    """The boolean padding flag LeRobot adds beside a chunked feature (``action`` -> ``action_is_pad``)."""
    return f"{key}_is_pad"
