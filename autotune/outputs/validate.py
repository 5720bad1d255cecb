"""A profile's JSON checked against its dataclasses, field by field: types, finite numbers, values in
range. :meth:`autotune.outputs.profile.Profile.from_dict` uses it; a bad profile is one
:class:`ProfileError` naming the first field that is wrong."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any


class ProfileError(ValueError):
    """What is wrong with a profile's contents, naming the field (no file name, no advice)."""


@dataclass
class MemoryModelFields:
    """The fields of a profile's ``memory_model`` (autotune.tuning.memory_model.MemoryModel's, which this
    module cannot import: it imports the search)."""

    fixed_bytes: float
    per_sample_bytes: float
    fixed_stderr_bytes: float
    per_sample_stderr_bytes: float
    points: int
    budget_bytes: int
    measured_max_batch: int
    near_limit_unusable_bytes: float
    device_overhead_bytes: int
    raw_prediction_error: float


def missing(cls: type, data: Any, prefix: str) -> list[str]:
    if not isinstance(data, dict):
        return []
    return [
        f"{prefix}{f.name}"
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in data
    ]


def shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (nested dataclasses built); ProfileError if not."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(hint)):
                return None
            raise ProfileError(f"{where} is null")
        first: ProfileError | None = None
        for option in options:
            try:
                return _convert(value, option, where)
            except ProfileError as exc:
                first = first or exc
        assert first is not None
        raise first
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ProfileError(f"{where} is {shown(value)}, not true or false")
    if hint is int:
        if _is_number(value) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ProfileError(f"{where} is {shown(value)}, not a whole number")
    if hint is float:
        if _is_number(value) and math.isfinite(value):
            return value
        raise ProfileError(f"{where} is {shown(value)}, not a finite number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ProfileError(f"{where} is {shown(value)}, not a string")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ProfileError(f"{where} is {shown(value)}, not an object")
        return build(hint, value, f"{where}.")
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise ProfileError(f"{where} is {shown(value)}, not a list")
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"{where} is {shown(value)}, not an object")
        item = (typing.get_args(hint) or (Any, Any))[1]
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    return value


def build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from ``data``, each field checked (missing ones with a
    default take it; a missing one without is a ProfileError)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], f"{prefix}{f.name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ProfileError(f"an autotune profile without {prefix}{f.name}")
    return cls(**values)


def at(profile: Any, name: str) -> Any:
    value: Any = profile
    for part in name.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def _at_least(low: float) -> Any:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def _image_size(v: list[int]) -> str | None:
    return None if len(v) == 2 and min(v) >= 1 else "must be [height, width], both positive"


def _headroom(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _precision(v: str) -> str | None:
    return None if v in ("bf16", "fp16", "fp32") else "must be bf16, fp16 or fp32"


# Values a profile's fields must hold beyond their types (a field a later autotune adds needs none).
RULES: dict[str, Any] = {
    "precision": _precision,
    "max_batch_size": _at_least(1),
    "batch_size": _at_least(1),
    "headroom_batch_size": _at_least(0),
    "grad_accum_steps": _at_least(1),
    "num_workers": _at_least(0),
    "prefetch_factor": _at_least(1),
    "data_s": _at_least(0),
    "updt_s": _at_least(0),
    "samples_per_s": _at_least(0),
    "peak_allocated_bytes": _at_least(0),
    "peak_reserved_bytes": _at_least(0),
    "max_batch_peak_reserved_bytes": _at_least(0),
    "gpus": _at_least(1),
    "budget_bytes": _at_least(0),
    "memory_model.per_sample_bytes": _positive,
    "memory_model.budget_bytes": _positive,
    "memory_model.points": _at_least(2),
    "memory_model.measured_max_batch": _at_least(1),
    "memory_model.fixed_stderr_bytes": _at_least(0),
    "memory_model.per_sample_stderr_bytes": _at_least(0),
    "memory_model.near_limit_unusable_bytes": _at_least(0),
    "memory_model.device_overhead_bytes": _at_least(0),
    "conditions.precision": _precision,
    "conditions.cameras": _at_least(1),
    "conditions.image_size": _image_size,
    "conditions.state_dim": _at_least(1),
    "conditions.action_dim": _at_least(1),
    "conditions.memory_limit_bytes": _positive,
    "conditions.headroom": _headroom,
    "conditions.gpus": _at_least(1),
}
