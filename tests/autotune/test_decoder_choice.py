"""The video decoder tuned with the workers (autotune.tuning.decoder_choice): pure logic, fake trials."""

from __future__ import annotations

import math
import random

from autotune.tuning.decoder_choice import challenge_decoder, worth_challenging
from autotune.tuning.study import TrialRecord
from probes.protocol import ProbeResult
from tests.autotune.test_noise import study, trial_result


class Decoders:
    """Trials at one setting: ``truth`` per decoder, times a seeded noise."""

    def __init__(self, truth: dict[str, float], spread: float = 0.01, seed: int = 0):
        self.truth, self.spread, self.rng = truth, spread, random.Random(seed)
        self.calls: list[tuple[int, int | None, str]] = []

    def __call__(self, workers: int, prefetch: int | None, backend: str) -> ProbeResult:
        self.calls.append((workers, prefetch, backend))
        return trial_result(self.truth[backend] * math.exp(self.rng.gauss(0, self.spread)))


def test_only_a_decoder_that_read_a_sample_faster_is_challenged() -> None:
    assert worth_challenging("torchcodec", "pyav", {"torchcodec": 0.012, "pyav": 0.009})
    assert not worth_challenging("torchcodec", "pyav", {"torchcodec": 0.004, "pyav": 0.009})
    assert not worth_challenging("torchcodec", "pyav", {"torchcodec": 0.004})  # pyav not measured
    assert not worth_challenging("pyav", None, {"pyav": 0.004, "torchcodec": 0.001})


def test_a_decoder_faster_beyond_the_noise_is_chosen_at_the_recommended_setting() -> None:
    outcome = study({(2, 2): 2.0, (4, 4): 1.6})
    outcome.best = outcome.trials[0]
    trials = Decoders({"torchcodec": 2.0, "pyav": 2.6})
    seen: list[TrialRecord] = []
    challenge_decoder(outcome, "torchcodec", "pyav", trials, on_trial=seen.append)
    assert outcome.video_backend == "pyav" and outcome.decoder_decision.verdict == "faster"
    assert {c[:2] for c in trials.calls} == {(2, 2)}  # the recommended setting only
    # One trial nominates it; then paired runs, interleaved (challenger, default, ...).
    assert [c[2] for c in trials.calls] == ["pyav", "pyav", "torchcodec", "pyav", "torchcodec"]
    assert outcome.best.video_backend == "pyav" and outcome.best.setting == (2, 2)
    assert [t.video_backend for t in seen] == [c[2] for c in trials.calls]


def test_a_decoder_within_the_noise_leaves_the_trainers_own() -> None:
    outcome = study({(2, 2): 2.0, (4, 4): 1.6})
    outcome.best = outcome.trials[0]
    challenge_decoder(outcome, "torchcodec", "pyav", Decoders({"torchcodec": 2.0, "pyav": 2.02}))
    assert outcome.video_backend == "torchcodec"
    assert outcome.decoder_decision.chosen == "torchcodec"
    assert outcome.best.setting == (2, 2) and outcome.best.video_backend in ("", "torchcodec")


def test_a_slower_decoder_costs_one_trial_and_changes_nothing() -> None:
    outcome = study({(2, 2): 2.0, (4, 4): 1.6})
    outcome.best = best = outcome.trials[0]
    trials = Decoders({"torchcodec": 2.0, "pyav": 1.5})
    challenge_decoder(outcome, "torchcodec", "pyav", trials)
    assert len(trials.calls) == 1 and outcome.video_backend == "torchcodec" and outcome.best is best
