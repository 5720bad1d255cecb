"""The budget a variant is tuned against is the allocator cap its probes report: the headroom, the
soak's headroom line and the memory model count against it, the tuner says so when it is not the
budget asked for, and a card-size prediction takes the CUDA context off once."""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace

import pytest

from autotune.run.config import Variant
from autotune.run.stages.variant import tune_variant
from autotune.trainer.versions import NEWEST_RELEASE, Trainer
from autotune.tuning.batch import decide_batch, headroom_batch
from autotune.tuning.memory_model import fit_model, predict
from autotune.tuning.search import find_max_batch
from probes.protocol import ProbeResult
from tests.fakes import FakeProbe, GiB, MiB, linear


class CappedProbe(FakeProbe):
    """A probe child that really had ``budget_bytes`` (its cap) and ``overhead_bytes`` outside."""

    def __init__(self, curve, cap_bytes: int, overhead_bytes: int = 0, bound: str = "limit") -> None:
        super().__init__(curve, cap_bytes)
        self.overhead_bytes = overhead_bytes
        self.bound = bound  # which set the cap: the limit (as a card of it) or the device's free memory

    def __call__(self, batch_size: int, phase: str = "search") -> ProbeResult:
        result = super().__call__(batch_size)
        result.memory_cap_bytes = self.budget_bytes
        result.device_overhead_bytes = self.overhead_bytes
        result.memory_cap_bound = self.bound
        return result


CURVE = linear(3 * GiB, 150 * MiB)


def test_the_search_budget_is_the_smallest_cap_the_probes_report() -> None:
    probe = CappedProbe(CURVE, cap_bytes=40 * GiB)  # a 40 GiB MIG slice; 80 GiB asked
    search = find_max_batch(probe, 80 * GiB)
    assert search.budget_bytes == 40 * GiB
    assert search.certified and search.max_batch == probe.true_max()


def test_a_probe_that_reports_no_cap_leaves_the_budget_as_asked() -> None:
    probe = FakeProbe(CURVE, 20 * GiB)
    assert find_max_batch(probe, 20 * GiB).budget_bytes == 20 * GiB


def test_the_headroom_and_the_soak_line_count_against_the_cap() -> None:
    probe = CappedProbe(CURVE, cap_bytes=40 * GiB)
    search = find_max_batch(probe, 80 * GiB)
    ceiling = headroom_batch(search, 0.10)
    assert CURVE(ceiling) <= 0.9 * 40 * GiB < CURVE(ceiling + 1)
    decision = decide_batch(search, probe, headroom=0.10, throughput_points=2)
    assert CURVE(decision.batch_size) <= 0.9 * 40 * GiB


def test_a_card_size_prediction_takes_the_cuda_context_off_once() -> None:
    card, context = 24 * GiB, 1536 * MiB
    # Asked: the card's free memory before the child; the child's cap: that less its context.
    probe = CappedProbe(CURVE, cap_bytes=card - context, overhead_bytes=context)
    search = find_max_batch(probe, card)
    model = fit_model(search, context)
    assert model is not None
    assert predict(model, card, 0.10, card=True).max_batch == search.max_batch
    assert model.budget_bytes == card - context
    assert predict(model, card - context, 0.10, card=False).max_batch == search.max_batch


class FakeProber:
    """What tune_variant needs of a Prober: batch probes and a progress display."""

    def __init__(self, probe: CappedProbe) -> None:
        self.probe = probe
        self.progress = SimpleNamespace(
            stage=lambda *args, **kwargs: contextlib.nullcontext(), search_done=lambda batch: None, done=[]
        )

    def batch(self, variant: Variant, batch_size: int, phase: str = "search") -> ProbeResult:
        return self.probe(batch_size, phase)


def context(asked: int, *, asked_by_user: bool) -> SimpleNamespace:
    cfg = SimpleNamespace(
        max_batch=8192,
        headroom=0.10,
        target_batch=None,
        memory_limit_bytes=asked if asked_by_user else None,
        effective_throughput_points=lambda: 2,
        effective_soak_steps=lambda: 5,
        trainer=Trainer(NEWEST_RELEASE, "assumed"),
    )
    return SimpleNamespace(cfg=cfg, memory_limit=asked)


def test_tune_variant_warns_when_the_cap_is_less_than_the_limit_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Another process holds 40 GiB of the 80 GiB card: the device, not the limit, set the cap.
    probe = CappedProbe(CURVE, cap_bytes=40 * GiB - 1028 * MiB, overhead_bytes=900 * MiB, bound="device")
    with caplog.at_level(logging.INFO, logger="autotune"):
        outcome = tune_variant(
            context(80 * GiB, asked_by_user=True), FakeProber(probe), Variant("bf16", True)
        )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("--memory-limit 80.00 GiB" in m and "allocator cap was 39.00 GiB" in m for m in warned), warned
    probe = CappedProbe(CURVE, cap_bytes=40 * GiB, bound="device")  # the rest as before
    outcome = tune_variant(context(80 * GiB, asked_by_user=True), FakeProber(probe), Variant("bf16", True))
    assert outcome.search.budget_bytes == 40 * GiB
    assert outcome.model is not None and outcome.model.budget_bytes == 40 * GiB
    assert outcome.decision is not None and CURVE(outcome.decision.batch_size) <= 0.9 * 40 * GiB


def test_tune_variant_says_a_limit_is_a_card_less_what_runs_outside_the_allocator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # --memory-limit 24GiB behaves like a 24 GiB card: the context and libraries come off it. That
    # is expected, not a warning (it was one, every run, before).
    probe = CappedProbe(CURVE, cap_bytes=24 * GiB - 1028 * MiB, overhead_bytes=900 * MiB, bound="limit")
    with caplog.at_level(logging.INFO, logger="autotune"):
        tune_variant(context(24 * GiB, asked_by_user=True), FakeProber(probe), Variant("bf16", True))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    said = [r.getMessage() for r in caplog.records if "allocator cap 23.00 GiB" in r.getMessage()]
    assert said and "--memory-limit 24.00 GiB less 900.00 MiB" in said[0] and "card of 24.00 GiB" in said[0]


def test_tune_variant_says_what_the_default_budget_leaves_outside_the_allocator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = CappedProbe(CURVE, cap_bytes=78 * GiB, overhead_bytes=2 * GiB)
    with caplog.at_level(logging.INFO, logger="autotune"):
        tune_variant(context(80 * GiB, asked_by_user=False), FakeProber(probe), Variant("bf16", True))
    said = [r for r in caplog.records if "allocator cap 78.00 GiB" in r.getMessage()]
    assert said and said[0].levelno == logging.INFO
    assert "outside the allocator" in said[0].getMessage()
