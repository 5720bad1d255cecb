"""The policies autotune can build, their configurations and their ``lerobot-train`` arguments.

Together with :mod:`probes.protocol` this is all of ``probes/`` the tuner imports. It is torch-free:
each policy's ``config`` module holds its ``Config`` dataclass (LeRobot's defaults, validated in
``__post_init__``) and its ``lerobot_args``, apart from the model, which only a probe child loads
(:func:`model_module`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from probes.policies.common import parse_overrides as _parse_overrides
from probes.protocol import ModelSpec


@dataclass(frozen=True)
class PolicyEntry:
    """One policy autotune rebuilds: where its code lives and what its data reader must yield."""

    name: str
    package: str  # probes.policies.<name>: ``config`` (torch-free) and ``model``
    reads_task: bool  # the loader yields the task string (language-conditioned policies)
    quick: tuple[str, ...] = ()  # --set overrides that cut the model down for a quick look on a CPU


POLICIES: dict[str, PolicyEntry] = {
    "act": PolicyEntry(
        "act",
        "probes.policies.act",
        reads_task=False,
        quick=("dim_model=64", "dim_feedforward=128", "n_encoder_layers=1", "n_vae_encoder_layers=1"),
    ),
    "smolvla": PolicyEntry(
        "smolvla",
        "probes.policies.smolvla",
        reads_task=True,
        quick=("num_vlm_layers=2", "resize_imgs_with_padding=256x256"),
    ),
}


def entry(policy: str) -> PolicyEntry:
    """The catalogue entry for ``policy``; ``ValueError`` naming the choices if unknown."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[policy]


def config_module(policy: str) -> ModuleType:
    return importlib.import_module(f"{entry(policy).package}.config")


def model_module(policy: str) -> ModuleType:
    """The policy's ``model`` module (imports torch): ``Model``, ``synthetic_batch``, ``describe``."""
    return importlib.import_module(f"{entry(policy).package}.model")


def config_class(policy: str) -> type:
    return config_module(policy).Config


def parse_overrides(policy: str, pairs: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs as typed fields of the policy's ``Config``; ``ValueError`` if bad."""
    return _parse_overrides(config_class(policy), pairs)


def build_config(spec: ModelSpec) -> Any:
    """The policy's ``Config`` for ``spec``; ``ValueError`` naming the bad value."""
    try:
        return config_class(spec.policy)(
            cameras=spec.cameras,
            image_size=tuple(spec.image_size),
            state_dim=spec.state_dim,
            action_dim=spec.action_dim,
            gradient_checkpointing=spec.gradient_checkpointing,
            **spec.overrides,
        )
    except TypeError as exc:  # a field the Config does not have, or a value of the wrong kind
        raise ValueError(str(exc)) from None


def lerobot_importable() -> bool:
    """Whether LeRobot can be imported in this Python (looked up, not imported)."""
    import importlib.util

    return importlib.util.find_spec("lerobot") is not None


def lerobot_installed_version() -> str | None:
    """The version of the LeRobot installed in this Python, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_policy_args(spec: ModelSpec) -> list[str]:
    """The ``--policy.*`` flags of ``spec`` as the LeRobot backend passes them: its type and each
    ``--set`` override as given (LeRobot's own parser checks them)."""
    return [
        f"--policy.type={spec.policy}",
        *(f"--policy.{k}={_flag_text(v)}" for k, v in spec.overrides.items()),
    ]


def _flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_flag_text(v) for v in value) + "]"
    return "null" if value is None else str(value)


def lerobot_policy_args(spec: ModelSpec) -> list[str]:
    """The ``lerobot-train`` flags selecting the policy with ``spec``'s settings (``--policy.*``);
    ``ValueError`` for a setting lerobot-train cannot take."""
    return config_module(spec.policy).lerobot_args(build_config(spec))
