"""``autotune rl ... --measure`` for real on the CPU: small networks, small budgets, real probe
children (a minute or two on a 2-core machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.outputs.results import FILES
from tests.cli import autotune

pytestmark = pytest.mark.slow

pd = pytest.importorskip("pandas")


def test_ppo_measure_certifies_a_valid_minibatch(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = autotune(
        *("rl", "ppo", "--num-envs", "64", "--horizon", "64", "--mini-epochs", "2", "--measure"),
        *("--obs-dim", "32", "--act-dim", "4", "--hidden", "512,512", "--device", "cpu"),
        *("--memory-limit", "48MiB", "--results", str(results), "--json"),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    m = data["measured"]
    batch = data["batch_size"]
    assert batch == 4096 and data["minibatch_size"] == 1024  # the hand rule, beside the measurement
    # Certified: the largest size that fits did, and the next one did not; the whole batch does not.
    assert m["certified"] and not m["whole_batch_fits"]
    assert m["max_fitting_minibatch"] < batch
    assert batch % m["max_minibatch_size"] == 0 and m["max_minibatch_size"] <= m["max_fitting_minibatch"]
    # The recommendation divides the batch, keeps the headroom, and a whole update at it trained.
    chosen = m["minibatch_size"]
    assert batch % chosen == 0 and chosen in data["valid_minibatch_sizes"]
    assert chosen <= m["headroom_minibatch_size"] <= m["max_minibatch_size"]
    assert (
        data["recommended_minibatch_size"] == chosen and data["rl_games_config"]["minibatch_size"] == chosen
    )
    assert f"agent.params.config.minibatch_size={chosen}" in data["isaaclab_overrides"]
    soak = [s for s in m["soaks"] if not s["lowered"]][-1]
    assert soak["batch_size"] == chosen and soak["status"] == "ok"

    rows = pd.read_csv(results / "rl_probes.csv")
    assert list(rows.columns) == FILES["rl_probes.csv"]
    assert len(rows) == m["probes"] and set(rows.algo) == {"ppo"} and set(rows.batch_size) == {batch}
    at_max = rows[(rows.phase == "search") & (rows.minibatch_size == m["max_fitting_minibatch"])]
    # Only sizes rl_games accepts are searched: the certificate is the next valid size.
    assert set(rows[rows.phase == "search"].valid) == {True}
    assert m["next_valid_minibatch"] == 2 * m["max_fitting_minibatch"]  # 4096's divisors: powers of 2
    above = rows[(rows.phase == "search") & (rows.minibatch_size == m["next_valid_minibatch"])]
    assert set(at_max.status) == {"ok"} and set(above.status) == {"oom"}
    assert (rows[rows.status == "ok"].peak_reserved_bytes <= 48 * 1024**2).all()
    assert set(rows[rows.phase == "soak"].valid) == {True}

    profile = json.loads((results / "profiles" / "rl-ppo.json").read_text())
    assert profile["kind"] == "rl-ppo" and profile["measured"]["minibatch_size"] == chosen
    assert profile["fingerprint"]["device"] == "cpu"


def test_rrd_measure_finds_the_largest_batch_sizes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = autotune(
        *("rl", "rrd", "--batch-size", "32", "--rrd-batch-size", "64", "--rrd-sample-size", "16"),
        *("--train-batches", "8", "--obs-shape", "24x24x3", "--act-dim", "4", "--measure"),
        *("--hidden", "64,64", "--reward-hidden", "64", "--device", "cpu", "--max-batch", "64"),
        *("--memory-limit", "64MiB", "--results", str(results), "--json"),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    m = data["measured"]
    assert data["subsequences_per_batch"] == 4
    assert m["max_batch_size"] >= 32 and m["max_rrd_batch_size"] >= 64
    assert m["max_rrd_batch_size"] % 16 == 0 and m["headroom_rrd_batch_size"] % 16 == 0
    assert m["headroom_batch_size"] <= m["max_batch_size"]
    rows = pd.read_csv(results / "rl_probes.csv")
    assert len(rows) == m["probes"] and set(rows.algo) == {"rrd"}
    assert set(rows.searched) == {"batch_size", "rrd_batch_size"}
    assert (rows.rrd_batch_size % 16 == 0).all()
    assert json.loads((results / "profiles" / "rl-rrd.json").read_text())["kind"] == "rl-rrd"
