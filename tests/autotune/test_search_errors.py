"""Probe errors the child can only name and the search decides: a library status that next to the
limit means out of memory counts as one there and stops the run well below it; a kernel's size
limit at a big batch bounds the search like --max-batch, in a note and in the profile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from autotune.errors import ProbeError
from autotune.trainer.decoder import Decoder
from autotune.tuning.memory_fit import MemoryFit
from autotune.tuning.search import DEFAULT_MAX_BATCH, find_max_batch
from probes.protocol import AMBIGUOUS_OOM, KERNEL_LIMIT, ProbeResult
from tests.fakes import FakeProbe, GiB, MiB, linear, quadratic, stepped

CUDNN_NOT_SUPPORTED = "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."
INVALID_CONFIGURATION = "AcceleratorError: CUDA error: invalid configuration argument"

CURVES = {
    "linear": linear(1.3 * GiB, 41 * MiB),
    "allocator_steps_20mib": stepped(2.1 * GiB, 11.7 * MiB, 20 * MiB),
    "convex": quadratic(500 * MiB, 9 * MiB, 0.002 * MiB),
    "tiny_per_sample": linear(3 * GiB, 0.9 * MiB),
}


@dataclass
class NamingProbe(FakeProbe):
    """A fake child whose library words only name some outcomes: out of memory above the budget is
    answered by ``ambiguous(size)`` as an ambiguous error, and sizes from ``limit`` on hit a
    kernel's limit, whatever their memory."""

    ambiguous: Callable[[int], bool] = lambda size: False
    limit: int | None = None
    errors: list[int] = field(default_factory=list)

    def __call__(self, batch_size: int) -> ProbeResult:
        if self.limit is not None and batch_size >= self.limit:
            self.calls.append(batch_size)
            return ProbeResult("error", batch_size, message=INVALID_CONFIGURATION, error_kind=KERNEL_LIMIT)
        result = super().__call__(batch_size)
        if result.status == "oom" and self.ambiguous(batch_size):
            return ProbeResult("error", batch_size, message=CUDNN_NOT_SUPPORTED, error_kind=AMBIGUOUS_OOM)
        return result


# Curves and budgets with a certified maximum between 1 and DEFAULT_MAX_BATCH (17 to 6729).
CASES = [
    (c, b)
    for c in sorted(CURVES)
    for b in (2 * GiB, 7.5 * GiB, 24 * GiB, 79 * GiB)
    if 0 < FakeProbe(CURVES[c], b).true_max(DEFAULT_MAX_BATCH + 1) <= DEFAULT_MAX_BATCH
]


@pytest.mark.parametrize(("curve_name", "budget"), CASES)
def test_an_ambiguous_out_of_memory_next_to_the_limit_counts_as_out_of_memory(
    curve_name: str, budget: int
) -> None:
    # Every size past the limit answers cuDNN's NOT_SUPPORTED rather than a typed out of memory.
    probe = NamingProbe(CURVES[curve_name], budget, ambiguous=lambda size: True)
    truth = probe.true_max()
    outcome = find_max_batch(probe, budget)
    assert (outcome.max_batch, outcome.certified) == (truth, True)
    assert any(
        f"batch {truth + 1}: {CUDNN_NOT_SUPPORTED}, counted as out of memory" in n for n in outcome.notes
    )


def test_an_ambiguous_out_of_memory_well_below_the_predicted_maximum_stops_the_run() -> None:
    curve = linear(1 * GiB, 10 * MiB)  # blind search: 1, 4, 64, then most of the way to 307
    probe = NamingProbe(curve, 4 * GiB)

    def faulty(size: int) -> ProbeResult:
        if size == 64:  # a fifth of the predicted maximum: a fault, not memory
            return ProbeResult("error", size, message=CUDNN_NOT_SUPPORTED, error_kind=AMBIGUOUS_OOM)
        return probe(size)

    with pytest.raises(ProbeError) as raised:
        find_max_batch(faulty, 4 * GiB)
    text = str(raised.value)
    assert CUDNN_NOT_SUPPORTED in text  # the child's own words
    assert "well below the predicted maximum 307" in text and "not out of memory" in text


def test_an_ambiguous_out_of_memory_with_nothing_known_yet_stops_the_run() -> None:
    def faulty(size: int) -> ProbeResult:
        return ProbeResult("error", size, message=CUDNN_NOT_SUPPORTED, error_kind=AMBIGUOUS_OOM)

    with pytest.raises(ProbeError, match="CUDNN_STATUS_NOT_SUPPORTED.*not out of memory"):
        find_max_batch(faulty, 4 * GiB)


def test_an_ambiguous_out_of_memory_next_to_a_size_that_ran_out_counts_as_one() -> None:
    # The estimate said 2000 (it ran out of memory, typed), the next step down answers ambiguously:
    # next to a size that ran out of memory, it is out of memory too.
    curve = linear(1 * GiB, 10 * MiB)
    probe = NamingProbe(curve, 4 * GiB, ambiguous=lambda size: size < 2000)
    estimate = MemoryFit(fixed_bytes=4 * GiB - 2000 * 10 * MiB, per_sample_bytes=10 * MiB, points=2)
    outcome = find_max_batch(probe, 4 * GiB, estimate=estimate)
    assert probe.calls[:2] == [2000, 1900]
    assert outcome.max_batch == probe.true_max() and outcome.certified
    assert any(
        "batch 1900" in n and "next to batch 2000, which ran out of memory" in n for n in outcome.notes
    )


def test_a_kernels_limit_bounds_the_search_like_max_batch_and_says_so() -> None:
    probe = NamingProbe(linear(1 * GiB, 1 * MiB), 79 * GiB, limit=1500)  # memory would fit 79,000
    outcome = find_max_batch(probe, 79 * GiB)
    assert outcome.max_batch == 1499
    assert outcome.limit_batch_size == 1500 and outcome.limit_reason == INVALID_CONFIGURATION
    assert not outcome.certified and not outcome.capped
    assert outcome.evidence == "bounded by a kernel's limit at batch 1500"
    assert len(outcome.notes) == 1
    assert "batch 1500 is past a kernel's limit" in outcome.notes[0]
    assert "1499 is the largest that fitted below it" in outcome.notes[0]
    assert outcome.result_at(1499).fits


def test_out_of_memory_below_a_kernels_limit_still_certifies_the_maximum() -> None:
    probe = NamingProbe(linear(1 * GiB, 10 * MiB), 4 * GiB, limit=1500)
    outcome = find_max_batch(probe, 4 * GiB, start=2000)  # past the limit first
    assert outcome.max_batch == probe.true_max() == 307
    assert outcome.certified and outcome.evidence == "certified"
    assert outcome.limit_batch_size == 2000
    assert "certified below it by running out of memory" in outcome.notes[0]


def test_the_profile_records_the_kernels_limit_and_its_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from autotune.run.config import Variant
    from autotune.run.stages import assemble as A
    from autotune.run.stages.variant import VariantOutcome
    from autotune.trainer.versions import NEWEST_RELEASE, Trainer
    from autotune.tuning.batch import decide_batch

    probe = NamingProbe(linear(1 * GiB, 1 * MiB), 79 * GiB, limit=1500)
    search = find_max_batch(probe, 79 * GiB)
    decision = decide_batch(search, lambda size, phase: probe(size), headroom=0.1, soak=False)
    winner = VariantOutcome(Variant("bf16", True), search, decision)
    trial = SimpleNamespace(
        num_workers=2, prefetch_factor=2, setting=(2, 2), is_lerobot_default=False, resumed=False,
        result=ProbeResult("ok", decision.batch_size, data_s=0.01, updt_s=0.1, samples_per_s=100.0),
    )  # fmt: skip
    workers = SimpleNamespace(
        best=trial,
        lerobot_default=None,
        trials=[trial],
        storage="",
        study_name="s",
        repeats=[],
        decision=None,
        decoder_decision=None,
        video_backend="",
    )
    cfg = SimpleNamespace(
        policy="act", max_batch=DEFAULT_MAX_BATCH, headroom=0.1, learned_headroom=0.0, gpus=1, device="cuda:0", results=tmp_path,
        trainer=Trainer(NEWEST_RELEASE, "assumed"),
    )  # fmt: skip
    ctx = SimpleNamespace(
        cfg=cfg, run_id="r1", fingerprint=SimpleNamespace(to_dict=dict), conditions={}, policy_args=[],
        backend="rebuilt", data=SimpleNamespace(kind="user", repo_id="me/data", root=tmp_path, version="v3.0"),
        decoder=Decoder("torchcodec", "torchcodec"),
    )  # fmt: skip
    profile = A.assemble(ctx, winner, [winner], workers, None, None)
    assert profile.search["limit_batch_size"] == 1500
    assert profile.search["limit_reason"] == INVALID_CONFIGURATION
    assert any("batch 1500 is past a kernel's limit" in n for n in profile.notes)
    assert not any("--max-batch" in n for n in profile.notes)


def test_a_maximum_bounded_by_a_kernel_tells_the_memory_model_nothing_of_the_memory_left() -> None:
    from autotune.tuning.memory_model import fit_model

    # Certified by memory, the budget left at the maximum is what the allocator could not use; at a
    # kernel's limit it is simply memory nobody asked for (78 GiB here), not fragmentation, and later
    # estimates would take it for fragmentation (estimate_terms.calibrate).
    probe = NamingProbe(linear(1 * GiB, 1 * MiB), 79 * GiB, limit=1500)
    model = fit_model(find_max_batch(probe, 79 * GiB))
    assert model is not None and model.near_limit_unusable_bytes == 0
    certified = fit_model(find_max_batch(FakeProbe(linear(1 * GiB, 7 * MiB), 4 * GiB), 4 * GiB))
    assert certified is not None and 0 < certified.near_limit_unusable_bytes < 10 * MiB
