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
