"""An input-bound run is diagnosed with measured remedies: denser keyframes and smaller images are
decoded (and the smaller images trained) for real, on small synthetic variants of the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.machine.devices import probe_environment
from autotune.run.config import RunConfig, Variant
from autotune.run.context import open_run
from autotune.run.pipeline import progress_for
from autotune.run.prober import Prober
from autotune.run.stages.input_bound import diagnose_input
from autotune.run.stages.variant import VariantOutcome
from autotune.tuning.batch import BatchDecision
from autotune.tuning.feed_model import FeedModel
from autotune.tuning.search import SearchOutcome
from autotune.tuning.study import StudyOutcome, TrialRecord
from autotune.tuning.throughput import ThroughputPoint
from probes.protocol import ProbeResult
from tests.cli import SMALL_ACT

pytestmark = pytest.mark.slow


def test_an_input_bound_run_measures_what_would_help(tmp_path: Path) -> None:
    cfg = RunConfig(
        policy="act", device="cpu", precision="fp32", image_size=(64, 96), cameras=2,
        results=tmp_path / "results", policy_overrides=SMALL_ACT, trials=1, memory_limit_bytes=1024**3,
    )  # fmt: skip
    with open_run(cfg, probe_environment()) as ctx:
        check_remedies(ctx, cfg)


def check_remedies(ctx, cfg: RunConfig) -> None:
    prober = Prober(ctx, progress_for(ctx))
    variant = Variant("fp32", True)
    batch = 8
    decision = BatchDecision(batch_size=batch, headroom_batch=batch)
    decision.curve = [ThroughputPoint(batch, 20.0, 0.4, 400 * 1024**2, "soak")]
    winner = VariantOutcome(variant, SearchOutcome(batch, True, False, 1024**3), decision)
    # A study whose best setting still waited on data 60% of each step.
    waited = ProbeResult(status="ok", batch_size=batch, data_s=0.6, updt_s=0.4, samples_per_s=8.0)
    study = StudyOutcome(best=TrialRecord(0, 1, 2, waited), trials=[])
    feed = FeedModel(batch, decode_s_per_sample=0.15, updt_s=0.4, cores=2)

    bound = diagnose_input(ctx, prober, winner, study, feed)

    assert bound is not None
    assert bound.data_fraction == 0.6
    measured = {r.what: r for r in bound.remedies if r.measured}
    dense = next(r for w, r in measured.items() if w.startswith("a keyframe every frame"))
    small = next(r for w, r in measured.items() if w.startswith("cameras at 32x48 instead of 64x96"))
    assert "ms" in dense.detail and dense.samples_per_s > 0
    # The smaller images were trained for real: a step was measured at the same batch.
    assert small.updt_s is not None and small.updt_s > 0
    assert small.samples_per_s is not None and small.samples_per_s > 0
    assert any(r.what.startswith("more cores") for r in bound.remedies)  # 0.15 s x 8 / 0.4 s = 3 > 2 cores
    assert any("1 camera(s) instead of 2" in r.what for r in bound.remedies)
    written = sorted(p.name for p in (cfg.results / "datasets").iterdir())
    assert any("gop1" in name for name in written) and any("32x48" in name for name in written)
    # Probes outside the run's conditions are neither counted nor written as batch probes.
    assert prober.count == 0
    assert not (cfg.results / "batch_probes.csv").exists()
