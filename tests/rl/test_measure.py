"""The measurement's decisions, against fake probes with a known memory line (no children)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.outputs.results import FILES
from autotune.rl import measure
from autotune.rl.measure import Budget, measure_ppo, measure_rrd
from autotune.rl.ppo import PpoBatch
from autotune.rl.records import Recorder, run_key
from autotune.rl.rrd import RrdBatch
from autotune.rl.spec import NetSpec
from probes.protocol import ProbeRequest, ProbeResult
from probes.rl.spec import RlSpec

MiB = 1024**2
NET = NetSpec(obs_shape=(12,), act_dim=3, hidden=(64, 64))


class FakeProbe:
    """Peak memory = fixed + per_sample x size (RRD: per transition and per subsequence timestep)."""

    def __init__(self, fixed: float, per: float, faster_below: int | None = None) -> None:
        self.fixed, self.per, self.faster_below = fixed, per, faster_below
        self.requests: list[ProbeRequest] = []

    def __call__(self, request: ProbeRequest, timeout_s: float) -> ProbeResult:
        self.requests.append(request)
        spec = RlSpec.from_request(request)  # the probe child's reading of the request
        if spec.algo == "ppo":
            samples = request.batch_size
        else:
            batch, subsequences = spec.rrd_sizes(request.batch_size)
            samples = batch + subsequences * spec.rrd_sample_size
        peak = int(self.fixed + self.per * samples)
        fits = peak <= request.memory_limit_bytes
        speed = 1000.0 + samples + (5000.0 if self.faster_below and samples <= self.faster_below else 0.0)
        return ProbeResult(
            status="ok" if fits else "oom",
            batch_size=request.batch_size,
            peak_reserved_bytes=peak,
            peak_allocated_bytes=peak,
            step_time_s=samples / speed,
            samples_per_s=speed,
            steps=3,
            memory_cap_bytes=request.memory_limit_bytes,
            message="" if fits else "measured peak passed the budget",
        )


def budget(limit: int) -> Budget:
    return Budget(device="cpu", precision="fp32", memory_limit_bytes=limit, headroom=0.1, probe_timeout_s=60)


def recorder(tmp_path: Path, algo: str, limit: int) -> Recorder:
    return Recorder(tmp_path / "results", algo, run_key("cpu", "", "fp32", NET, limit))


def rows(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "results" / "rl_probes.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FILES["rl_probes.csv"]
        return list(reader)


def test_ppo_answers_only_valid_minibatches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProbe(fixed=10 * MiB, per=0.2 * MiB)  # minibatch 50 fits 20 MiB, 51 does not
    monkeypatch.setattr(measure, "run_probe", fake)
    ppo = PpoBatch(num_envs=6, horizon_length=16, mini_epochs=4)  # batch 96
    m = measure_ppo(ppo, NET, budget(20 * MiB), recorder(tmp_path, "ppo", 20 * MiB))
    # Only the divisors of 96 are searched (1 2 3 4 6 8 12 16 24 32 48 96), by bisection: 48 fits
    # and 96, the next valid size, does not.
    searched = [r.batch_size for r in fake.requests if r.rl and not r.rl["full_update"]][
        : len(m.search.probes)
    ]
    assert all(96 % size == 0 for size in searched) and len(searched) <= 4
    assert m.search.max_batch == 48 and m.search.certified
    assert m.max_valid_minibatch == 48  # the largest divisor of 96 that fits
    assert m.headroom_valid_minibatch == 32  # 18 MiB line: 40 fits it, the largest divisor below is 32
    assert m.minibatch_size == 32 and 96 % m.minibatch_size == 0  # the largest is fastest here
    soaks = [r for r in fake.requests if r.rl and r.rl["full_update"]]
    assert [r.batch_size for r in soaks] == [32]  # a whole update at the answer
    written = rows(tmp_path)
    assert len(written) == m.probes == len(fake.requests)
    assert {r["valid"] for r in written} == {"True"}
    assert all(r["batch_size"] == "96" and r["algo"] == "ppo" and r["policy"] == "rl-ppo" for r in written)


def test_ppo_prefers_a_faster_smaller_valid_minibatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(measure, "run_probe", FakeProbe(fixed=10 * MiB, per=0.2 * MiB, faster_below=24))
    ppo = PpoBatch(num_envs=6, horizon_length=16)
    m = measure_ppo(ppo, NET, budget(20 * MiB), recorder(tmp_path, "ppo", 20 * MiB))
    assert m.minibatch_size == 24 and 96 % 24 == 0


def test_ppo_whole_batch_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "run_probe", FakeProbe(fixed=1 * MiB, per=0.001 * MiB))
    m = measure_ppo(PpoBatch(4, 16), NET, budget(64 * MiB), recorder(tmp_path, "ppo", 64 * MiB))
    assert m.search.capped and m.max_valid_minibatch == 64 and m.minibatch_size == 64


def test_ppo_when_not_even_one_fits_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "run_probe", FakeProbe(fixed=30 * MiB, per=1 * MiB))
    with pytest.raises(UserError, match="even minibatch 1 does not fit"):
        measure_ppo(PpoBatch(4, 16), NET, budget(20 * MiB), recorder(tmp_path, "ppo", 20 * MiB))


def test_rrd_finds_both_largest_batch_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "run_probe", FakeProbe(fixed=10 * MiB, per=0.01 * MiB))
    rrd = RrdBatch(batch_size=100, rrd_batch_size=64, rrd_sample_size=32, train_batches=8, obs_shape=(12,))
    m = measure_rrd(rrd, NET, budget(20 * MiB), recorder(tmp_path, "rrd", 20 * MiB), max_batch=8192)
    # 10 MiB + 0.01 MiB x (B + 64) <= 20 MiB: B <= 936; with B = 100: k x 32 <= 900, k <= 28.
    assert m.batch_search.max_batch == 936 and m.batch_search.certified
    assert m.subsequence_search.max_batch == 28 and m.subsequence_search.certified
    assert m.headroom_batch_size == 736 and m.headroom_subsequences == 21  # under the 18 MiB line
    written = rows(tmp_path)
    assert {r["searched"] for r in written} == {"batch_size", "rrd_batch_size"}
    assert all(int(r["rrd_batch_size"]) % 32 == 0 for r in written)


def test_a_request_reads_back_in_the_child() -> None:
    from autotune.rl.spec import PpoProbe, RrdProbe

    for rl in (PpoProbe(NET, 96, 4).to_dict(), RrdProbe(NET, 32, 16, 2, vary="subsequences").to_dict()):
        request = ProbeRequest.from_json(ProbeRequest(kind=rl["algo"], batch_size=3, rl=rl).to_json())
        spec = RlSpec.from_request(request)
        assert spec.algo == rl["algo"] and spec.obs_shape == (12,) and spec.hidden == (64, 64)
    assert RlSpec.from_request(request).rrd_sizes(3) == (32, 3)
