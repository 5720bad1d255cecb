"""The policies autotune can build, their configurations and their ``lerobot-train`` arguments.

Together with :mod:`probes.protocol` this is all of ``probes/`` the tuner imports. It is torch-free:
each policy's ``config`` module holds its ``Config`` dataclass (LeRobot's defaults, validated in
``__post_init__``) and its ``lerobot_args``, apart from the model, which only a probe child loads
(:func:`model_module`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from probes.policies.common import parse_overrides as _parse_overrides
from probes.protocol import ModelSpec

# ACT cut in width and depth, the ResNet-18 backbone kept.
_ACT_QUICK: dict[str, object] = {
    "dim_model": 64,
    "dim_feedforward": 128,
    "n_encoder_layers": 1,
    "n_vae_encoder_layers": 1,
}
# Each policy's cut-down sizes, by name, as typed ``Config`` overrides: the one place they are
# written. ``cut_down(policy, name)`` gives one as an overrides dict, ``set_flags`` as ``--set`` flags.
CUT_DOWN: dict[str, dict[str, dict[str, object]]] = {
    "act": {
        # What the progress line suggests for a quick look on a CPU; also the cut-down ACT of the
        # estimate tests and of the trainer and backend agreement benchmarks.
        "quick": _ACT_QUICK,
        # "quick" with a 20-step action chunk, so that CPU tests run in seconds: the CLI and probe
        # tests (tests/cli.py SMALL_ACT) and the benchmarks that run as they do (faults, probe_time,
        # noise_stability).
        "tests": {**_ACT_QUICK, "chunk_size": 20, "n_action_steps": 20},
        # Width only: the lerobot-train command tests (any small model's flags) and the faults
        # benchmark's killed probe.
        "narrow": {"dim_model": 64, "dim_feedforward": 128},
        # Halfway, so that one step takes about a second on two cores: the real CPU scenario of the
        # search, estimate-accuracy and worker benchmarks.
        "cpu_second": {
            "dim_model": 128,
            "dim_feedforward": 512,
            "n_encoder_layers": 2,
            "n_vae_encoder_layers": 2,
        },
    },
    "smolvla": {
        # Two of the VLM's layers and 256x256 images: what the progress line suggests for a quick
        # look on a CPU, and the probe_time benchmark's SmolVLA.
        "quick": {"num_vlm_layers": 2, "resize_imgs_with_padding": (256, 256)},
        # Every part cut (vision tower, text model, vocabulary), so that a CPU trains it in seconds:
        # the estimate and end-to-end tests, and the search and estimate-accuracy benchmarks.
        "tiny": {
            "resize_imgs_with_padding": (64, 64),
            "tokenizer_max_length": 16,
            "vision_hidden": 64,
            "vision_layers": 2,
            "vision_heads": 2,
            "vision_mlp": 128,
            "vision_patch_size": 8,
            "vision_image_size": 64,
            "scale_factor": 2,
            "text_layers": 4,
            "num_vlm_layers": 2,
            "text_hidden": 64,
            "text_mlp": 128,
            "text_heads": 4,
            "text_kv_heads": 2,
            "text_head_dim": 16,
            "vocab_size": 1000,
        },
    },
}


def cut_down(policy: str, name: str = "quick") -> dict[str, object]:
    """The cut-down set ``name`` of ``policy`` (:data:`CUT_DOWN`), a fresh overrides dict;
    ``ValueError`` naming the choices if either is unknown."""
    sets = CUT_DOWN.get(entry(policy).name, {})
    if name not in sets:
        raise ValueError(f"no cut-down set {name!r} for {policy}: choose one of {', '.join(sets)}")
    return dict(sets[name])


def set_pairs(overrides: Mapping[str, object]) -> list[str]:
    """``{"num_vlm_layers": 2, "resize_imgs_with_padding": (256, 256)}`` ->
    ``["num_vlm_layers=2", "resize_imgs_with_padding=256x256"]``, as ``--set`` reads them."""
    return [f"{key}={_set_text(value)}" for key, value in overrides.items()]


def set_flags(overrides: Mapping[str, object]) -> list[str]:
    """``{"dim_model": 64}`` -> ``["--set", "dim_model=64"]``."""
    return [part for pair in set_pairs(overrides) for part in ("--set", pair)]


def _set_text(value: object) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class PolicyEntry:
    """One policy autotune rebuilds: where its code lives and what its data reader must yield."""

    name: str
    package: str  # probes.policies.<name>: ``config`` (torch-free) and ``model``
    reads_task: bool  # the loader yields the task string (language-conditioned policies)

    @property
    def quick(self) -> tuple[str, ...]:
        """The ``--set`` overrides that cut the model down for a quick look on a CPU (its
        ``CUT_DOWN`` "quick" set)."""
        return tuple(set_pairs(CUT_DOWN.get(self.name, {}).get("quick", {})))


POLICIES: dict[str, PolicyEntry] = {
    "act": PolicyEntry("act", "probes.policies.act", reads_task=False),
    "smolvla": PolicyEntry("smolvla", "probes.policies.smolvla", reads_task=True),
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
