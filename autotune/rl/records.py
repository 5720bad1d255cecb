"""What ``autotune rl --measure`` leaves behind: a ``results/rl_probes.csv`` row per probe and a
profile, ``results/profiles/rl-ppo.json`` or ``rl-rrd.json`` (written atomically, with a copy under
``profiles/history/``), like ``autotune run``'s."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from autotune.files import write_atomic
from autotune.outputs.profile import profile_path
from autotune.outputs.results import FILES, append_rows, check_header, stamped
from autotune.rl.ppo import PpoBatch
from autotune.rl.rrd import RrdBatch
from autotune.rl.spec import NetSpec
from probes.protocol import ProbeResult

RL_PROBES = "rl_probes.csv"
PROFILE_VERSION = 1


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-rl"


class Recorder:
    """Appends one ``rl_probes.csv`` row per probe, keyed like every autotune CSV."""

    def __init__(self, results: Path, algo: str, key: dict[str, Any], run_id: str | None = None) -> None:
        self.path = results / RL_PROBES
        self.algo = algo
        self.run_id = run_id or new_run_id()
        self.key = {**key, "run_id": self.run_id, "policy": f"rl-{algo}", "grad_checkpointing": False}
        check_header(self.path, FILES[RL_PROBES])  # refuse a file of another version up front

    def _append(self, row: dict[str, Any]) -> None:
        append_rows(self.path, FILES[RL_PROBES], [stamped({**self.key, "algo": self.algo, **row})])

    @staticmethod
    def _net(net: NetSpec) -> dict[str, Any]:
        return {
            "obs_shape": "x".join(map(str, net.obs_shape)),
            "obs_dtype": net.obs_dtype,
            "act_dim": net.act_dim,
            "hidden": ",".join(map(str, net.hidden)),
        }

    @staticmethod
    def _measured(r: ProbeResult) -> dict[str, Any]:
        return {
            "status": r.status,
            "peak_allocated_bytes": r.peak_allocated_bytes,
            "peak_reserved_bytes": r.peak_reserved_bytes,
            "step_time_s": round(r.step_time_s, 6),
            "updt_s": round(r.updt_s, 6),
            "samples_per_s": round(r.samples_per_s, 3),
            "steps": r.steps,
            "wall_s": round(r.wall_s, 3),
            "memory_cap_bytes": r.memory_cap_bytes,
            "message": r.message,
        }

    def ppo_row(self, r: ProbeResult, phase: str, ppo: PpoBatch, net: NetSpec) -> None:
        self._append(
            {
                "phase": phase,
                "searched": "minibatch_size",
                "batch_size": ppo.batch_size,
                "minibatch_size": r.batch_size,
                "valid": ppo.batch_size % r.batch_size == 0,
                "num_envs": ppo.num_envs,
                "horizon_length": ppo.horizon_length,
                "mini_epochs": ppo.mini_epochs,
                **self._net(net),
                **self._measured(r),
            }
        )

    def rrd_row(
        self, r: ProbeResult, vary: str, rrd: RrdBatch, net: NetSpec, batch_size: int, rrd_batch_size: int
    ) -> None:
        self._append(
            {
                "phase": "search",
                "searched": "batch_size" if vary == "batch_size" else "rrd_batch_size",
                "batch_size": batch_size,
                "rrd_batch_size": rrd_batch_size,
                "rrd_sample_size": rrd.rrd_sample_size,
                "valid": True,
                **self._net(net),
                **self._measured(r),
            }
        )


def run_key(
    device: str,
    gpu_name: str,
    precision: str,
    net: NetSpec,
    memory_limit_bytes: int,
) -> dict[str, Any]:
    """The columns every autotune CSV starts with (an image observation counts as one camera)."""
    h, w = net.image_hw
    return {
        "device": device,
        "gpu_name": gpu_name,
        "precision": precision,
        "cameras": 1 if net.is_image else 0,
        "image_h": h,
        "image_w": w,
        "memory_limit_bytes": memory_limit_bytes,
    }


def search_summary(outcome: Any) -> dict[str, Any]:
    """``max_batch_size``, ``certified``, ``capped`` and the probes of one search."""
    return {
        "max_batch_size": outcome.max_batch,
        "certified": outcome.certified,
        "capped": outcome.capped,
        "budget_bytes": outcome.budget_bytes,
        "probes": len(outcome.probes),
        "probed_sizes": [p.batch_size for p in outcome.probes],
        "peak_reserved_bytes": [p.peak_reserved_bytes for p in outcome.probes],
        "statuses": [p.status for p in outcome.probes],
    }


def write_rl_profile(results: Path, algo: str, profile: dict[str, Any]) -> Path:
    """Write ``profiles/rl-<algo>.json`` atomically, and a copy under ``profiles/history/``."""
    name = f"rl-{algo}"
    path = profile_path(results, name)
    history = path.parent / "history" / f"{name}-{profile['run_id']}.json"
    text = json.dumps(profile, indent=2, default=_plain) + "\n"
    for target in (history, path):
        write_atomic(target, text)
    return path


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
