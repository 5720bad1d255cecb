"""The terms on top of the estimate's live tensor count, with their values and sources, and their
calibration from a profile measured on a GPU (see :mod:`autotune.estimate`)."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.units import format_bytes
from probes.protocol import ModelSpec

if TYPE_CHECKING:
    from autotune.estimate.count import Estimate

log = logging.getLogger(__name__)

MiB = 1024**2

# The CUDA context with lazy module loading (CUDA 11.7 and newer, PyTorch's default): "around 400MB"
# and "~300MB" on recent releases, per PyTorch's maintainers (pytorch/pytorch#109888, #107667);
# autotune run measures it per card (device_overhead_bytes), which calibrate() takes over.
CUDA_CONTEXT_BYTES = 400 * MiB
# Kernels that load after the first step: the probes leave this much free beside the allocator's
# cap (LAZY_LOAD_SLACK_BYTES in probes/device.py), so a card's budget is its memory less both.
LAZY_KERNELS_BYTES = 128 * MiB
# cuBLAS's workspace per handle and stream, from CUBLAS_WORKSPACE_CONFIG (":SIZE_KiB:COUNT" pairs);
# unset, PyTorch's default is ":4096:8" (32 MiB) on Hopper and ":4096:2:16:8" (8 MiB + 128 KiB)
# before it (getChosenWorkspaceSize, aten/src/ATen/cuda/CublasHandlePool.cpp). The card is not
# known here: the larger. Training uses two handles: the forward's thread and autograd's.
CUBLAS_DEFAULT_CONFIG = ":4096:8"
CUBLAS_HANDLES = 2
# cuDNN's convolution workspace, allocated per call from the caching allocator. With
# cudnn.benchmark (LeRobot's setting) the fastest algorithm wins whatever scratch it asks for; not
# knowable without the card: an allowance, replaced by a GPU profile's measurement.
CUDNN_WORKSPACE_BYTES = 64 * MiB
# Free blocks the caching allocator cannot hand out at the peak (reserved beyond allocated, less
# segment rounding): an allowance as a share of the peak; a GPU profile's near-limit unusable memory
# replaces it.
FRAGMENTATION_SHARE = 0.03
# The CPU runtime's memory beside the tensors, as the CPU probes measure it (growth of the resident
# set from before the model is built): the committed CPU memory curves of the cut-down models
# (benchmarks/results/memory_curves_cpu.csv, 2-core x86, torch 2.14.1) lie this far above the
# count at every size from 1 to 256, within 1 MiB.
CPU_RUNTIME_BYTES = {"act": 204 * MiB, "smolvla": 180 * MiB}


@dataclass
class Term:
    """Memory the live tensor count leaves out."""

    name: str
    bytes: int
    inside_allocator: bool  # counted against the allocator's budget (else taken off the card)
    source: str


@dataclass
class Terms:
    """The terms on top of the count, and the fragmentation share of the peak."""

    terms: list[Term]
    fragmentation_share: float = 0.0
    calibrated_from: str | None = None  # the profile the measured terms came from
    notes: list[str] = field(default_factory=list)

    def outside(self) -> int:
        return sum(t.bytes for t in self.terms if not t.inside_allocator)

    def inside(self) -> int:
        return sum(t.bytes for t in self.terms if t.inside_allocator)

    def total(self) -> int:
        return sum(t.bytes for t in self.terms)


def cublas_workspace_bytes(env: dict[str, str] | None = None) -> int:
    """One cuBLAS workspace: the sum of SIZE_KiB x COUNT over CUBLAS_WORKSPACE_CONFIG's pairs."""
    config = (env if env is not None else os.environ).get("CUBLAS_WORKSPACE_CONFIG") or CUBLAS_DEFAULT_CONFIG
    numbers = [int(n) for n in config.split(":") if n.strip().isdigit()]
    pairs = zip(numbers[0::2], numbers[1::2], strict=False)
    return sum(size * count for size, count in pairs) * 1024


def default_terms(est: Estimate, env: dict[str, str] | None = None) -> Terms:
    """The terms for the device ``est`` was counted for, with their values and sources."""
    if est.device_type == "cpu":
        runtime = CPU_RUNTIME_BYTES.get(est.policy, max(CPU_RUNTIME_BYTES.values()))
        return Terms(
            [
                Term(
                    "cpu_runtime",
                    runtime,
                    True,
                    "the CPU runtime beside the tensors (torchvision's import, oneDNN, threads), "
                    "measured against CPU probes on a 2-core x86 CPU (benchmarks/estimate_accuracy.py)",
                )
            ]
        )
    workspace = cublas_workspace_bytes(env)
    return Terms(
        [
            Term(
                "cuda_context",
                CUDA_CONTEXT_BYTES,
                False,
                "the CUDA context with lazy module loading, ~300-400 MB (pytorch/pytorch#107667, #109888)",
            ),
            Term(
                "lazy_kernels",
                LAZY_KERNELS_BYTES,
                False,
                "kernels loading after the first step: what the probes leave free (probes/device.py)",
            ),
            Term(
                "cublas_workspace",
                CUBLAS_HANDLES * workspace,
                True,
                f"{CUBLAS_HANDLES} cuBLAS handles (forward, autograd) x {format_bytes(workspace)} "
                "(CUBLAS_WORKSPACE_CONFIG or PyTorch's Hopper default :4096:8, CublasHandlePool.cpp)",
            ),
            Term(
                "cudnn_workspace",
                CUDNN_WORKSPACE_BYTES,
                True,
                "cuDNN's convolution scratch: an allowance (cudnn.benchmark picks by speed, not size)",
            ),
            Term(
                "allocator_segments",
                est.segment_rounding_bytes,
                True,
                "blocks of 10 MiB and more rounded up to 2 MiB segments at the peak, counted "
                "(get_allocation_size, c10/cuda/CUDACachingAllocator.cpp)",
            ),
        ],
        fragmentation_share=FRAGMENTATION_SHARE,
        notes=[
            f"allocator_fragmentation: {FRAGMENTATION_SHARE:.0%} of the peak, an allowance for cached "
            "blocks the allocator cannot hand out"
        ],
    )


# --- calibration from a profile measured on a GPU ------------------------------------------------


def gpu_profiles(results: Path) -> list[dict[str, Any]]:
    """Readable profiles measured on CUDA with a memory model, newest first: this machine's
    (``results/profiles``), then the committed reference runs (``results/reference/*/profiles``)."""
    found: list[tuple[bool, str, dict[str, Any]]] = []
    paths = [(False, p) for p in sorted((results / "profiles").glob("*.json"))]
    paths += [(True, p) for p in sorted((results / "reference").glob("*/profiles/*.json"))]
    for reference, path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # not UTF-8 (UnicodeDecodeError) or not JSON
            log.debug("%s: not a readable profile; skipped", path)
            continue
        if (
            isinstance(data, dict)
            and (data.get("fingerprint") or {}).get("device_type") == "cuda"
            and isinstance(data.get("memory_model"), dict)
            and all(  # a memory model of numbers only (a damaged one is skipped, not a traceback)
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in data["memory_model"].values()
            )
        ):
            found.append((reference, str(data.get("created_at", "")), data))
    found.sort(key=lambda item: item[1], reverse=True)  # newest first ...
    found.sort(key=lambda item: item[0])  # ... this machine's before the references (stable)
    return [data for _, _, data in found]


def same_conditions(profile: dict[str, Any], est: Estimate, spec: ModelSpec) -> bool:
    """Whether ``profile`` measured the very model and variant ``est`` counted."""
    cond = profile.get("conditions") or {}
    return (
        profile.get("policy") == est.policy
        and profile.get("precision") == est.precision
        and bool(profile.get("grad_checkpointing")) == est.grad_checkpointing
        and cond.get("cameras") == spec.cameras
        and list(cond.get("image_size") or []) == list(spec.image_size)
        and cond.get("state_dim") == spec.state_dim
        and cond.get("action_dim") == spec.action_dim
        and (cond.get("policy_overrides") or {}) == {k: v for k, v in spec.overrides.items()}
    )


def calibrate(terms: Terms, est: Estimate, spec: ModelSpec, results: Path) -> Terms:
    """The terms, with what a CUDA profile under ``results`` measured in place of the defaults.

    Any CUDA profile (the same policy's first) gives the memory outside the allocator (context,
    libraries, kernels) and the allocator's unusable share near the limit; one of this very model
    and variant also gives the workspaces: its measured fixed cost less the count's.
    """
    if est.device_type != "cuda":
        return terms
    profiles = gpu_profiles(results)
    profiles.sort(key=lambda d: d.get("policy") != est.policy)  # stable: newest of the policy first
    if not profiles:
        return terms
    profile = profiles[0]
    model = profile["memory_model"]
    gpu = (profile.get("fingerprint") or {}).get("gpu_name") or "a GPU"
    where = f"measured by autotune run on {gpu} (profile {profile.get('run_id', '?')})"
    out = replace(terms, terms=list(terms.terms), notes=list(terms.notes), calibrated_from=where)
    overhead = int(model.get("device_overhead_bytes") or 0)
    if overhead > 0:
        out.terms = [
            replace(t, bytes=overhead, source=f"memory outside the allocator after warm-up, {where}")
            if t.name == "cuda_context"
            else t
            for t in out.terms
        ]
    budget = float(model.get("budget_bytes") or 0)
    if budget > 0:
        out.fragmentation_share = max(0.0, float(model.get("near_limit_unusable_bytes", 0.0)) / budget)
        out.notes = [f"allocator_fragmentation: {out.fragmentation_share:.1%} of the budget, {where}"]
    if same_conditions(profile, est, spec):
        counted = est.fixed_bytes * (1 + out.fragmentation_share)
        others = sum(t.bytes for t in out.terms if t.inside_allocator and not t.name.endswith("workspace"))
        measured = max(0, int(float(model["fixed_bytes"]) - counted - others))
        out.terms = [t for t in out.terms if not t.name.endswith("workspace")]
        out.terms.append(
            Term("workspaces", measured, True, f"cuBLAS and cuDNN: fixed cost less the count, {where}")
        )
    return out
