"""Counting the live tensor bytes of the real training step on the meta device."""

from __future__ import annotations

import gc

import pytest
import torch

from autotune.run.probe_client import run_probe
from probes.catalogue import cut_down
from probes.estimate import BLOCK_BYTES, LiveBytes, rounded, run_estimate_probe, segment_waste
from probes.protocol import ModelSpec, ProbeRequest

MiB = 1024**2
CUT_ACT = cut_down("act", "quick")
CUT_SMOLVLA = cut_down("smolvla", "tiny")


def test_storages_are_counted_in_allocator_blocks_until_they_die() -> None:
    counter = LiveBytes()
    with counter:
        a = torch.empty(1000, device="meta")  # 4000 bytes -> 4096
        view = a[10:20].t() if a.dim() == 2 else a[10:20]
        assert counter.live_bytes == rounded(4000) == 8 * BLOCK_BYTES
        b = a * 2
        assert counter.live_bytes == 2 * 4096
        del a  # the view keeps the storage alive
        gc.collect()
        assert counter.live_bytes == 2 * 4096
        del view, b
        gc.collect()
    assert counter.live_bytes == 0 and counter.peak_bytes == 2 * 4096
    assert rounded(0) == 0 and rounded(1) == BLOCK_BYTES


def test_tensors_made_aside_are_counted_only_once_adopted() -> None:
    counter = LiveBytes()
    with counter:
        with counter.aside():  # the loader's batch: host memory for a CUDA estimate
            batch = torch.empty(1000, device="meta")
        assert counter.live_bytes == 0
        assert counter.adopt([batch, "a task string"]) == 4096  # a CPU estimate counts it
        del batch
        gc.collect()
    assert counter.live_bytes == 0


def test_large_blocks_are_rounded_into_two_mib_segments() -> None:
    assert segment_waste(9 * MiB) == 0
    assert segment_waste(11 * MiB) == 1 * MiB
    assert segment_waste(12 * MiB) == 0


def request(policy: str, overrides: dict, device: str, precision: str, gc_on: bool = True) -> ProbeRequest:
    spec = ModelSpec(policy, 2, (64, 96), 6, 6, gradient_checkpointing=gc_on, overrides=dict(overrides))
    return ProbeRequest(
        kind="estimate", model=spec, device=device, precision=precision, estimate_batch_sizes=[4, 8, 16, 32]
    )


def test_the_step_is_counted_with_its_optimizer_state_and_grows_linearly() -> None:
    out = run_estimate_probe(request("act", CUT_ACT, "cpu", "fp32"))
    est = out["estimate"]
    (b1, p1), (b2, p2), (b3, p3) = est["points"][-3:]
    assert p1 < p2 < p3
    # Exactly linear where activations dominate (allocator rounding aside).
    assert (p3 - p2) / (b3 - b2) == pytest.approx((p2 - p1) / (b2 - b1), rel=0.01)
    # AdamW's two moments per trainable weight, in fp32 (the real step allocated them).
    assert est["optimizer_state_bytes"] == pytest.approx(2 * 4 * out["trainable_params"], rel=0.01)
    assert est["weights_bytes"] >= 4 * out["total_params"]


def test_checkpointing_costs_less_per_sample_and_autocasts_copies_are_counted() -> None:
    def per_sample(**kwargs: object) -> float:
        (b1, p1), (b2, p2) = run_estimate_probe(request("act", CUT_ACT, **kwargs))["estimate"]["points"][-2:]  # type: ignore[arg-type]
        return (p2 - p1) / (b2 - b1)

    stored = per_sample(device="cuda", precision="fp32", gc_on=False)
    assert per_sample(device="cuda", precision="fp32", gc_on=True) < stored
    # Under autocast a frozen batch norm's fp32 output is saved beside the bf16 copy the next
    # convolution casts it to: for the ResNet this costs more than fp32, as on a real GPU.
    assert per_sample(device="cuda", precision="bf16", gc_on=False) > stored


def test_smolvla_is_counted_too() -> None:
    out = run_estimate_probe(request("smolvla", CUT_SMOLVLA, "cuda", "bf16"))
    points = out["estimate"]["points"]
    assert points[-1][1] > points[0][1] > 0
    assert out["estimate"]["casts"] > 0  # autocast's rules were applied


@pytest.mark.slow
def test_an_estimate_runs_in_a_probe_child() -> None:
    result = run_probe(request("act", CUT_ACT, "cuda:0", "bf16"), timeout_s=300)
    assert result.status == "ok", result.message
    assert result.estimate is not None and len(result.estimate["points"]) == 4
    assert result.estimate["target"] == "cuda"
