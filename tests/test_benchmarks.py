"""The search-strategies benchmark's fake-curve part: runs in-process, writes the documented CSV."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_strategies.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("search_strategies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fake_benchmark_writes_every_column_and_autotune_is_exact_with_half_the_probes(tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "results.csv"
    assert bench.main(["--skip-real", "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == bench.COLUMNS
    scenarios = {r["scenario"] for r in rows}
    assert len(scenarios) == len(bench.CURVES) * len(bench.FAKE_BUDGETS)
    assert len(rows) == len(scenarios) * len(bench.STRATEGIES)
    ours = {r["scenario"]: r for r in rows if r["strategy"] == "autotune"}
    theirs = {r["scenario"]: r for r in rows if r["strategy"] == bench.LIGHTNING}
    for scenario, row in ours.items():
        assert row["exact"] == "True", row
        assert 2 * int(row["probes"]) <= int(theirs[scenario]["probes"]), (row, theirs[scenario])
    printed = capsys.readouterr().out
    assert printed.count(" s simulated") == len(rows)
    assert f"summary: autotune exact in {len(scenarios)}/{len(scenarios)} scenarios" in printed


REPLAY = Path(__file__).resolve().parents[1] / "benchmarks" / "search_replay.py"


def test_replay_of_the_measured_curves_is_exact_at_every_budget(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("search_replay", REPLAY)
    replay = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = replay
    spec.loader.exec_module(replay)
    out = tmp_path / "replay.csv"
    seeds = 3  # of the benchmark's 8 noisy replays per budget and level: the same checks, in less time
    assert replay.main(["--out", str(out), "--seeds", str(seeds)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == replay.COLUMNS
    assert {r["policy"] for r in rows} == {"act", "smolvla"}
    levels = len(replay.NOISE_FACTORS) + len(replay.NOISE_BUDGET_SHARES)
    per_policy = replay.BUDGETS_PER_CURVE * (1 + seeds * levels)
    assert len(rows) == 2 * per_policy
    clean = [r for r in rows if float(r["noise_mib"]) == 0 and float(r["noise_budget_share"]) == 0]
    assert len(clean) == 2 * replay.BUDGETS_PER_CURVE
    assert all(r["autotune_exact"] == "True" and r["lightning_exact"] == "True" for r in clean)
    noise = replay.read_noise(replay.NOISE_CSV)
    for policy in ("act", "smolvla"):
        # At most half the probes in all, without noise and with the noise measured on CPU.
        measured = round(noise[policy] / replay.MiB, 3)
        for level in (0.0, measured):
            these = [
                r
                for r in rows
                if r["policy"] == policy
                and float(r["noise_mib"]) == level
                and float(r["noise_budget_share"]) == 0
            ]
            assert len(these) == replay.BUDGETS_PER_CURVE * (1 if level == 0 else seeds)
            ours = sum(int(r["autotune_probes"]) for r in these)
            theirs = sum(int(r["lightning_probes"]) for r in these)
            assert 2 * ours <= theirs, (policy, level, ours, theirs)
            # With noise a curve can cross the budget twice; the search still certifies a crossing
            # next to the first nearly always.
            exact = sum(r["autotune_exact"] == "True" for r in these)
            assert exact >= 0.97 * len(these), (policy, level, exact, len(these))
        # Peaks repeated up to 2% of the budget apart (a loaded CPU): the search autotune run does,
        # started from the estimate, still needs at most half of Lightning's probes in all, and
        # certifies a maximum in every budget.
        for share in replay.NOISE_BUDGET_SHARES:
            these = [r for r in rows if r["policy"] == policy and float(r["noise_budget_share"]) == share]
            assert len(these) == replay.BUDGETS_PER_CURVE * seeds
            ours = sum(int(r["estimate_probes"]) for r in these)
            theirs = sum(int(r["lightning_probes"]) for r in these)
            assert all(int(r["estimate_probes"]) > 0 for r in these)
            assert 2 * ours <= theirs, (policy, share, ours, theirs)
    printed = capsys.readouterr().out
    assert printed.count("autotune exact in 120/120") == 2
