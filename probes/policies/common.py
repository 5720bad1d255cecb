"""What every policy package shares, torch-free: flag values, parameter counts, checks, ``--set``."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any


def flag_value(value: Any) -> str:
    """A config value as ``lerobot-train`` (draccus) parses it: ``true``, ``[512,512]``, ``0.1``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def count_params(params: Iterable[Any]) -> int:
    """Elements in ``params`` (tensors or parameters)."""
    return sum(p.numel() for p in params)


def check_positive_int(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an int above zero (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def parse_overrides(config_cls: type, pairs: list[str]) -> dict[str, object]:
    """``["num_vlm_layers=2", "resize_imgs_with_padding=64x64"]`` -> typed ``Config`` fields.

    Values are converted by the field's declared type (int, float, bool, str, or a tuple of
    ints or floats written ``64x64`` or ``0.9,0.95``); ``ValueError`` names a bad key or value.
    """
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
        if origin in (typing.Union, types.UnionType):
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
