"""The contract every policy module (``probes/act.py``, ``probes/smolvla.py``) fulfils.

A policy module exposes:

- ``Config``: a dataclass with LeRobot's defaults, typed and commented fields, validated in
  ``__post_init__`` (``ValueError`` naming the bad value). It has at least ``cameras``,
  ``image_size`` (H, W), ``state_dim``, ``action_dim``, ``chunk_size``, ``gradient_checkpointing``
  and the optimiser settings ``lr``, ``betas``, ``eps``, ``weight_decay``, ``grad_clip_norm``.
- ``Model(cfg)``: an ``nn.Module`` whose ``forward(batch)`` returns the scalar training loss for a
  batch that :func:`probes.train_step.prepare_batch` already put on the device (images float,
  normalised; state and action normalised), and whose ``param_groups()`` returns the AdamW
  parameter groups LeRobot uses. ``set_gradient_checkpointing(enabled)`` switches checkpointing.
- ``synthetic_batch(cfg, batch_size, generator)``: a CPU batch of the real shapes and dtypes
  (images uint8 ``(B, 3, H, W)`` under ``observation.images.<cam>``) for the batch-size probes.
- ``describe(cfg)``: a JSON-able dict with the configuration, tokens per camera, sequence lengths,
  ``total_params`` and ``trainable_params`` (computed on the meta device).
- ``lerobot_args(cfg)``: the ``lerobot-train`` flags that select this policy and its settings.
- ``DATASET_NEEDS``: which dataset keys the policy reads, and its chunk size, so the data reader
  yields exactly what training consumes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

POLICIES: dict[str, str] = {"act": "probes.act", "smolvla": "probes.smolvla"}


def policy_module(name: str) -> ModuleType:
    """The module implementing policy ``name``; ``ValueError`` naming the choices if unknown."""
    if name not in POLICIES:
        choices = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown policy {name!r}: choose one of {choices}")
    return importlib.import_module(POLICIES[name])


def image_keys(cameras: int) -> list[str]:
    """LeRobot's batch keys for ``cameras`` cameras, in a fixed order."""
    return [f"observation.images.cam{i}" for i in range(cameras)]


def parse_overrides(config_cls: type, pairs: list[str]) -> dict[str, object]:
    """``["num_vlm_layers=2", "resize_imgs_with_padding=64x64"]`` -> typed ``Config`` fields.

    Values are converted by the field's declared type (int, float, bool, str, or a tuple of
    ints or floats written ``64x64`` or ``0.9,0.95``); ``ValueError`` names a bad key or value.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: use KEY=VALUE")
        if key not in names:
            raise ValueError(f"--set {key}: no such {config_cls.__module__}.Config field")
        out[key] = _convert(key, raw.strip(), hints[key])
    return out


def _convert(key: str, raw: str, kind: object) -> object:
    import typing

    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        if origin is tuple:
            args = typing.get_args(kind)
            parts = [p for p in raw.replace("x", ",").replace("X", ",").split(",") if p.strip()]
            element = args[0] if args else float
            return tuple(element(p.strip()) for p in parts)  # type: ignore[operator]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            for option in typing.get_args(kind):
                if option is type(None):
                    if raw.lower() in ("none", "null"):
                        return None
                    continue
                try:
                    return _convert(key, raw, option)
                except ValueError:
                    continue
            raise ValueError(raw)
    except ValueError:
        raise ValueError(f"--set {key}={raw}: not a valid {getattr(kind, '__name__', kind)}") from None
    raise ValueError(f"--set {key}: fields of type {kind} cannot be set from the command line")
